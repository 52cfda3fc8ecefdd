// Writing files so that a crash or a full disk never leaves half of one.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace bien {

// How hard WriteFileAtomically works for durability.
enum class Durability {
  kSynced,  // fsync before the rename: the new content survives a power loss
  kCache,   // no fsync: for derived data that is checked when read and can be
            // made again (after a power loss the file may be old, empty or
            // torn, never a mix of two complete versions under a valid check)
};

// Writes `bytes` to a temporary file beside `path`, syncs it (unless
// kCache) and renames it into place: `path` is afterwards either as it was
// or complete. Throws bien::Error "PATH: cannot write the WHAT (reason)" and
// removes the temporary file on any failure.
void WriteFileAtomically(const std::filesystem::path& path, std::string_view bytes,
                         const std::string& what, Durability durability = Durability::kSynced);

// The whole file. Throws bien::Error "PATH: cannot open for reading" or
// "PATH: read failed".
std::vector<std::byte> ReadWholeFile(const std::filesystem::path& path);

// The whole file into `bytes`, for readers that refuse a bad file with a
// reason instead of throwing: returns "" on success, else why not ("no such
// file", "cannot open the file", "cannot read the file size (...)", "cannot
// read the file").
std::string ReadFileInto(const std::filesystem::path& path, std::string& bytes);

}  // namespace bien
