// Helpers shared by the tests: a fresh temporary folder per test, and the
// location of the real scans (../shared/data beside the checkout).
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace bien::testing {

// Success when `text` contains `part`; the failure message shows both.
::testing::AssertionResult Contains(const std::string& text, const std::string& part);

// The message of the bien::Error `f` throws; fails the test when none is thrown.
std::string ErrorOf(const std::function<void()>& f);

// A folder unique to the running test, removed when the object goes away
// (kept when BIEN_KEEP_TEST_DIRS is set, for debugging).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// The real-data folder: $BIEN_DATA_DIR, else ../shared/data beside the source
// tree. nullopt when absent.
std::optional<std::filesystem::path> SharedDataDir();

// Skips the current test with a clear reason when the real data is absent;
// use as: auto data = BIEN_REQUIRE_SHARED_DATA();
#define BIEN_REQUIRE_SHARED_DATA()                                                    \
  ({                                                                                  \
    auto bien_data_dir_ = ::bien::testing::SharedDataDir();                           \
    if (!bien_data_dir_) {                                                            \
      GTEST_SKIP() << "real scans not found: set BIEN_DATA_DIR or place shared/data " \
                      "beside the checkout (../shared/data)";                         \
    }                                                                                 \
    *bien_data_dir_;                                                                  \
  })

std::vector<std::byte> ReadBytes(const std::filesystem::path& path);
void WriteBytes(const std::filesystem::path& path, const std::vector<std::byte>& bytes);

}  // namespace bien::testing
