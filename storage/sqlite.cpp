#include "storage/sqlite.h"

#include <sqlite3.h>

#include <limits>

#include "core/error.h"

namespace bien::sql {

namespace {
// SQLite binds a NULL pointer as SQL NULL; an empty text or blob must still
// be passed a valid pointer to be stored as '' or X''.
constexpr char kEmpty[1] = {0};
}  // namespace

Db::Db(const std::filesystem::path& path, int flags) : path_(path) {
  const int rc = sqlite3_open_v2(path.c_str(), &db_, flags | SQLITE_OPEN_EXRESCODE, nullptr);
  if (rc != SQLITE_OK) {
    const std::string message = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw Error(path_.string() + ": cannot open the database: " + message);
  }
}

Db::~Db() {
  // Statements are owned by their Stmt objects, which must be gone by now;
  // close_v2 defers the close if one is not.
  sqlite3_close_v2(db_);
}

void Db::Fail(const std::string& what) const {
  throw Error(path_.string() + ": " + what + ": " + sqlite3_errmsg(db_));
}

void Db::Exec(const std::string& sql) {
  char* message = nullptr;
  const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message);
  if (rc != SQLITE_OK) {
    const std::string text = message ? message : sqlite3_errstr(rc);
    sqlite3_free(message);
    const std::string first_line = sql.substr(0, sql.find('\n'));
    throw Error(path_.string() + ": " + first_line + ": " + text);
  }
}

std::string Db::QueryText(const std::string& sql) {
  Stmt stmt(*this, sql);
  if (!stmt.Step()) throw Error(path_.string() + ": " + sql + ": returned no row");
  return stmt.OptText(0).value_or("");
}

int64_t Db::QueryInt(const std::string& sql) {
  Stmt stmt(*this, sql);
  if (!stmt.Step()) throw Error(path_.string() + ": " + sql + ": returned no row");
  return stmt.Int(0);
}

std::string Db::LastError() const { return sqlite3_errmsg(db_); }

int64_t Db::LastInsertRowId() const { return sqlite3_last_insert_rowid(db_); }

int Db::Changes() const { return sqlite3_changes(db_); }

Stmt::Stmt(Db& db, std::string_view sql) : db_(db), sql_(sql) {
  const char* tail = nullptr;
  if (sql.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    throw Error(db_.path().string() + ": statement too long");
  }
  const int rc = sqlite3_prepare_v3(db_.handle(), sql.data(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &stmt_, &tail);
  if (rc != SQLITE_OK) db_.Fail("cannot prepare '" + sql_ + "'");
  if (stmt_ == nullptr) throw Error(db_.path().string() + ": empty statement '" + sql_ + "'");
  if (tail != nullptr && *tail != '\0') {
    sqlite3_finalize(stmt_);
    stmt_ = nullptr;
    throw Error(db_.path().string() + ": more than one statement in '" + sql_ + "'");
  }
}

Stmt::~Stmt() { sqlite3_finalize(stmt_); }

void Stmt::CheckBind(int rc, int index) {
  if (rc != SQLITE_OK) {
    db_.Fail("cannot bind parameter " + std::to_string(index) + " of '" + sql_ + "'");
  }
}

Stmt& Stmt::Bind(int index, int64_t value) {
  CheckBind(sqlite3_bind_int64(stmt_, index, value), index);
  return *this;
}

Stmt& Stmt::Bind(int index, double value) {
  CheckBind(sqlite3_bind_double(stmt_, index, value), index);
  return *this;
}

Stmt& Stmt::Bind(int index, std::string_view text) {
  const char* data = text.data() ? text.data() : kEmpty;
  CheckBind(sqlite3_bind_text64(stmt_, index, data, text.size(), SQLITE_TRANSIENT, SQLITE_UTF8),
            index);
  return *this;
}

Stmt& Stmt::Bind(int index, std::span<const std::byte> blob) {
  const void* data = blob.data() ? static_cast<const void*>(blob.data()) : kEmpty;
  CheckBind(sqlite3_bind_blob64(stmt_, index, data, blob.size(), SQLITE_TRANSIENT), index);
  return *this;
}

Stmt& Stmt::Bind(int index, std::nullptr_t) {
  CheckBind(sqlite3_bind_null(stmt_, index), index);
  return *this;
}

bool Stmt::Step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  // The constraint or I/O message first; the statement, shortened, for context.
  std::string shown = sql_.substr(0, 40);
  if (shown.size() < sql_.size()) shown += "...";
  throw Error(db_.path().string() + ": " + sqlite3_errmsg(db_.handle()) + " (in " + shown + ")");
}

void Stmt::Run() {
  if (Step()) throw Error(db_.path().string() + ": '" + sql_ + "' unexpectedly returned a row");
}

void Stmt::Reset() noexcept {
  // The return value repeats the last step's error, already reported.
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

bool Stmt::IsNull(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

void Stmt::NullColumn(int column) const {
  const char* name = sqlite3_column_name(stmt_, column);
  throw Error(db_.path().string() + ": column '" + (name ? name : std::to_string(column)) +
              "' of '" + sql_ + "' is NULL where a value is required");
}

int64_t Stmt::Int(int column) const {
  if (IsNull(column)) NullColumn(column);
  return sqlite3_column_int64(stmt_, column);
}

double Stmt::Double(int column) const {
  if (IsNull(column)) NullColumn(column);
  return sqlite3_column_double(stmt_, column);
}

std::string Stmt::Text(int column) const {
  if (IsNull(column)) NullColumn(column);
  const auto* text = sqlite3_column_text(stmt_, column);
  if (text == nullptr) db_.Fail("cannot read column " + std::to_string(column));
  const int size = sqlite3_column_bytes(stmt_, column);
  return std::string(reinterpret_cast<const char*>(text), static_cast<size_t>(size));
}

std::vector<std::byte> Stmt::Blob(int column) const {
  if (IsNull(column)) NullColumn(column);
  const void* data = sqlite3_column_blob(stmt_, column);
  const int size = sqlite3_column_bytes(stmt_, column);
  if (size == 0) return {};
  if (data == nullptr) db_.Fail("cannot read column " + std::to_string(column));
  const auto* bytes = static_cast<const std::byte*>(data);
  return std::vector<std::byte>(bytes, bytes + size);
}

std::optional<int64_t> Stmt::OptInt(int column) const {
  if (IsNull(column)) return std::nullopt;
  return Int(column);
}

std::optional<double> Stmt::OptDouble(int column) const {
  if (IsNull(column)) return std::nullopt;
  return Double(column);
}

std::optional<std::string> Stmt::OptText(int column) const {
  if (IsNull(column)) return std::nullopt;
  return Text(column);
}

std::optional<std::vector<std::byte>> Stmt::OptBlob(int column) const {
  if (IsNull(column)) return std::nullopt;
  return Blob(column);
}

Transaction::Transaction(Db& db, Mode mode) : db_(db) {
  db_.Exec(mode == Mode::kImmediate ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED");
}

Transaction::~Transaction() {
  if (!done_) {
    // Nothing to report from a destructor: a failed rollback leaves SQLite to
    // roll back the journal when the connection closes or is next used.
    sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
  }
}

void Transaction::Commit() {
  db_.Exec("COMMIT");
  done_ = true;
}

}  // namespace bien::sql
