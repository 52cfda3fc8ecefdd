// A node's CURVE key pair: its identity in the federation. Kept in the node
// folder as keys/node.pub (public, Z85 text) and keys/node.key (secret, Z85
// text, mode 0600: readable by the owner only).
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace bien::exchange {

struct KeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters
};

// A fresh pair (zmq_curve_keypair). Throws bien::Error when this libzmq has
// no CURVE.
KeyPair GenerateKeyPair();

// The node's pair; nullopt when it has none yet. Throws bien::Error for a
// damaged key file, or a secret key file others may read (naming the file and
// the chmod that fixes it).
std::optional<KeyPair> LoadKeyPair(const std::filesystem::path& node_dir);

// The node's pair, created (files written 0600 / 0644, keys/ 0700) when it
// has none. *created tells which happened.
KeyPair LoadOrCreateKeyPair(const std::filesystem::path& node_dir, bool* created);

// The public key derived from a secret one (zmq_curve_public); for checks.
std::string PublicKeyOf(const std::string& secret_key);

}  // namespace bien::exchange
