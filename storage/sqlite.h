// Thin RAII wrappers over the SQLite C API, private to storage/ (never
// included by a public header). Every sqlite3 call is checked; a failure
// throws bien::Error naming the database file and carrying sqlite3_errmsg.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

struct sqlite3;
struct sqlite3_stmt;

namespace bien::sql {

// One connection. Not copyable; closed by the destructor.
class Db {
 public:
  // `flags` are sqlite3_open_v2 flags (SQLITE_OPEN_READWRITE, ...).
  Db(const std::filesystem::path& path, int flags);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // Runs one or more statements that return no rows of interest.
  void Exec(const std::string& sql);
  // The single value of a statement returning one row of one column (a PRAGMA).
  std::string QueryText(const std::string& sql);
  int64_t QueryInt(const std::string& sql);

  // sqlite3_errmsg of the last failed call.
  std::string LastError() const;
  int64_t LastInsertRowId() const;
  int Changes() const;

  const std::filesystem::path& path() const { return path_; }
  sqlite3* handle() const { return db_; }

  // Throws bien::Error: "<path>: <what>: <sqlite3_errmsg>".
  [[noreturn]] void Fail(const std::string& what) const;

 private:
  std::filesystem::path path_;
  sqlite3* db_ = nullptr;
};

// A prepared statement, prepared once and reused. Bind parameters are 1-based,
// columns 0-based (as in SQLite). Use a Stmt::Scope around each execution so
// the statement is reset (and its bindings cleared) however the scope ends.
class Stmt {
 public:
  Stmt(Db& db, std::string_view sql);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  // Resets the statement when it goes out of scope.
  class Scope {
   public:
    explicit Scope(Stmt& stmt) : stmt_(stmt) {}
    ~Scope() { stmt_.Reset(); }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Stmt& stmt_;
  };

  Stmt& Bind(int index, int value) { return Bind(index, static_cast<int64_t>(value)); }
  Stmt& Bind(int index, int64_t value);
  Stmt& Bind(int index, double value);
  Stmt& Bind(int index, std::string_view text);
  Stmt& Bind(int index, const std::string& text) { return Bind(index, std::string_view(text)); }
  Stmt& Bind(int index, const char* text) { return Bind(index, std::string_view(text)); }
  Stmt& Bind(int index, std::span<const std::byte> blob);
  Stmt& Bind(int index, std::nullptr_t);
  template <typename T>
  Stmt& Bind(int index, const std::optional<T>& value) {
    if (!value) return Bind(index, nullptr);
    return Bind(index, *value);
  }

  // Steps once: true when a row is available, false when done.
  bool Step();
  // Steps a statement that returns no rows.
  void Run();
  // Resets the statement and clears its bindings (never throws).
  void Reset() noexcept;

  bool IsNull(int column) const;
  // The non-optional getters throw when the column is NULL.
  int64_t Int(int column) const;
  double Double(int column) const;
  std::string Text(int column) const;
  std::vector<std::byte> Blob(int column) const;
  std::optional<int64_t> OptInt(int column) const;
  std::optional<double> OptDouble(int column) const;
  std::optional<std::string> OptText(int column) const;
  std::optional<std::vector<std::byte>> OptBlob(int column) const;

 private:
  void CheckBind(int rc, int index);
  [[noreturn]] void NullColumn(int column) const;

  Db& db_;
  std::string sql_;
  sqlite3_stmt* stmt_ = nullptr;
};

// BEGIN IMMEDIATE (or a deferred BEGIN for reads) ... Commit(); rolled back by
// the destructor unless committed.
class Transaction {
 public:
  enum class Mode { kImmediate, kDeferred };
  explicit Transaction(Db& db, Mode mode = Mode::kImmediate);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  void Commit();

 private:
  Db& db_;
  bool done_ = false;
};

}  // namespace bien::sql
