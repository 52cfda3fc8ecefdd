// What storage/exchange_store.cpp shares with storage/store.cpp. Private to
// storage/ (never included by a public header).
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "core/ids.h"
#include "storage/sqlite.h"
#include "storage/store.h"

namespace bien::internal {

// A connection to a node's bien.db, after Store::Open has checked the folder
// and migrated the schema: the same settings as the store's own connection.
std::unique_ptr<sql::Db> OpenNodeDatabase(const std::filesystem::path& dir);

// Appends one row to the hash-chained audit log; the caller holds a write
// transaction on `db`.
void AppendAuditRow(sql::Db& db, const std::string& actor, const std::string& action,
                    const std::string& subject, std::optional<ExhibitId> exhibit,
                    const std::optional<std::string>& sha256, const std::string& details);

// The columns AlertFromRow reads, in its order ("SELECT ... FROM alerts ";
// append the WHERE clause).
inline const std::string kAlertColumns =
    "SELECT id, hit_id, created_at, origin, summary, payload, delivered_at, acknowledged_at,"
    " acknowledged_by, peer_name FROM alerts ";
// The alert of the current row of a statement that selects kAlertColumns.
AlertRecord AlertFromRow(sql::Stmt& row);

}  // namespace bien::internal
