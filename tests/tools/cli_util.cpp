#include "tests/tools/cli_util.h"

#include <zip.h>

#include <cmath>
#include <random>
#include <sstream>
#include <stdexcept>

#include "tools/cli.h"

namespace bien::testing {

CliResult RunBien(std::vector<std::string> args) {
  std::vector<const char*> argv{"bien"};
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out, err;
  CliResult r;
  r.code = cli::Run(static_cast<int>(argv.size()), argv.data(), out, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

Surface SmallSurface(int width, int height, unsigned seed) {
  Surface s;
  s.width = width;
  s.height = height;
  s.dx_m = s.dy_m = 6.25e-6;
  s.z.resize(static_cast<size_t>(width) * height);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1e-7f, 1e-7f);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const bool corner = (x < 4 && y < 4) || (x >= width - 4 && y >= height - 4);
      s.At(x, y) =
          corner ? NAN : static_cast<float>(1e-6 * std::sin(0.3 * x) * std::cos(0.2 * y)) + u(rng);
    }
  }
  s.provenance.creator = "cli test";
  return s;
}

std::map<std::string, std::string> ReadZip(const std::filesystem::path& path) {
  int error = 0;
  zip_t* za = zip_open(path.c_str(), ZIP_RDONLY, &error);
  if (!za) throw std::runtime_error("cannot open zip " + path.string());
  std::map<std::string, std::string> entries;
  const zip_int64_t n = zip_get_num_entries(za, 0);
  for (zip_int64_t i = 0; i < n; ++i) {
    zip_stat_t st;
    zip_stat_index(za, i, 0, &st);
    std::string data(st.size, '\0');
    zip_file_t* f = zip_fopen_index(za, i, 0);
    if (st.size) zip_fread(f, data.data(), st.size);
    zip_fclose(f);
    entries[st.name] = std::move(data);
  }
  zip_close(za);
  return entries;
}

void WriteZip(const std::filesystem::path& path,
              const std::map<std::string, std::string>& entries) {
  std::filesystem::remove(path);
  int error = 0;
  zip_t* za = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &error);
  if (!za) throw std::runtime_error("cannot create zip " + path.string());
  for (const auto& [name, data] : entries) {
    if (!name.empty() && name.back() == '/') {
      zip_dir_add(za, name.c_str(), ZIP_FL_ENC_UTF_8);
      continue;
    }
    zip_source_t* src = zip_source_buffer(za, data.data(), data.size(), 0);
    zip_file_add(za, name.c_str(), src, ZIP_FL_OVERWRITE | ZIP_FL_ENC_UTF_8);
  }
  if (zip_close(za) != 0) throw std::runtime_error("cannot write zip " + path.string());
}

StoreCounts CountsOf(const std::filesystem::path& node) { return Store::Open(node)->Counts(); }

}  // namespace bien::testing
