#include "imaging/x3p.h"

#include <fcntl.h>
#include <unistd.h>
#include <zip.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <optional>
#include <pugixml.hpp>
#include <sstream>
#include <string_view>
#include <system_error>
#include <vector>

#include "core/error.h"
#include "core/hash.h"
#include "core/time.h"

namespace bien {

namespace {

constexpr const char* kNamespace = "http://www.opengps.eu/2008/ISO5436_2";
constexpr const char* kSchemaLocation =
    "http://www.opengps.eu/2008/ISO5436_2 http://www.opengps.eu/2008/ISO5436_2/ISO5436_2.xsd";
constexpr uint64_t kMaxXmlBytes = 16u << 20;    // main.xml is a few kB in practice
constexpr uint64_t kMaxMaskBytes = 512u << 20;  // an RGB PNG of the surface
constexpr uint64_t kMaxHexBytes = 4096;         // md5checksum.hex: one line

// ---------------------------------------------------------------- text helpers

std::string_view Trim(std::string_view s) {
  const char* ws = " \t\r\n\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view LocalName(const char* name) {
  std::string_view sv(name);
  const size_t colon = sv.rfind(':');
  return colon == std::string_view::npos ? sv : sv.substr(colon + 1);
}

pugi::xml_node Child(pugi::xml_node parent, std::string_view name) {
  if (!parent) return {};
  for (pugi::xml_node c : parent.children()) {
    if (c.type() == pugi::node_element && LocalName(c.name()) == name) return c;
  }
  return {};
}

std::string Text(pugi::xml_node node) { return std::string(Trim(node.child_value())); }

std::optional<double> ParseDouble(std::string_view text) {
  text = Trim(text);
  if (text.empty()) return std::nullopt;
  std::string s(text);
  if (s.front() == '+') s.erase(0, 1);
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<int64_t> ParseInt(std::string_view text) {
  text = Trim(text);
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  if (text.empty()) return std::nullopt;
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

std::optional<uint32_t> ParseColour(std::string_view text) {
  text = Trim(text);
  if (text.size() != 7 || text[0] != '#') return std::nullopt;
  uint32_t v = 0;
  auto [end, ec] = std::from_chars(text.data() + 1, text.data() + 7, v, 16);
  if (ec != std::errc() || end != text.data() + 7) return std::nullopt;
  return v;
}

std::string ColourText(uint32_t rgb) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%06x", rgb & 0xffffffu);
  return buf;
}

std::string ShortestDouble(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  BIEN_CHECK(ec == std::errc());
  return std::string(buf, end);
}

bool IsNotAvailable(std::string_view s) {
  const std::string l = Lower(s);
  return l.empty() || l == "not available" || l == "n/a" || l == "na";
}

// ---------------------------------------------------------------- zip reading

class ZipReader {
 public:
  ZipReader(std::span<const std::byte> bytes, const std::string& source) : source_(source) {
    zip_error_t error;
    zip_error_init(&error);
    zip_source_t* src = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
    if (src == nullptr) {
      std::string msg = zip_error_strerror(&error);
      zip_error_fini(&error);
      throw Error(source_ + ": cannot open the archive (" + msg + ")");
    }
    archive_ = zip_open_from_source(src, ZIP_RDONLY, &error);
    if (archive_ == nullptr) {
      std::string msg = zip_error_strerror(&error);
      zip_error_fini(&error);
      zip_source_free(src);
      throw Error(source_ + ": not an X3P file (not a zip archive: " + msg + ")");
    }
    zip_error_fini(&error);
    const zip_int64_t n = zip_get_num_entries(archive_, 0);
    for (zip_int64_t i = 0; i < n; ++i) {
      const char* name = zip_get_name(archive_, static_cast<zip_uint64_t>(i), 0);
      names_.emplace_back(name ? name : "");
    }
  }
  ~ZipReader() {
    if (archive_ != nullptr) zip_discard(archive_);
  }
  ZipReader(const ZipReader&) = delete;
  ZipReader& operator=(const ZipReader&) = delete;

  const std::vector<std::string>& names() const { return names_; }

  // Exact name first, then a unique case-insensitive match.
  std::optional<size_t> Find(const std::string& name) const {
    for (size_t i = 0; i < names_.size(); ++i) {
      if (names_[i] == name) return i;
    }
    std::optional<size_t> found;
    const std::string lower = Lower(name);
    for (size_t i = 0; i < names_.size(); ++i) {
      if (Lower(names_[i]) == lower) {
        if (found) return std::nullopt;
        found = i;
      }
    }
    return found;
  }

  uint64_t Size(size_t index) const {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(archive_, index, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) {
      throw Error(source_ + ": corrupt archive (cannot read the size of " + names_[index] + ")");
    }
    return st.size;
  }

  // Reads an entry whose uncompressed size the caller has already accepted.
  std::vector<std::byte> Read(size_t index, uint64_t size) const {
    zip_file_t* file = zip_fopen_index(archive_, index, 0);
    if (file == nullptr) {
      throw Error(source_ + ": corrupt archive (cannot open " + names_[index] + ": " +
                  zip_strerror(archive_) + ")");
    }
    std::vector<std::byte> out(size);
    uint64_t done = 0;
    while (done < size) {
      const zip_int64_t got = zip_fread(file, out.data() + done, size - done);
      if (got < 0) {
        std::string msg = zip_error_strerror(zip_file_get_error(file));
        zip_fclose(file);
        throw Error(source_ + ": corrupt archive (cannot read " + names_[index] + ": " + msg + ")");
      }
      if (got == 0) break;
      done += static_cast<uint64_t>(got);
    }
    zip_fclose(file);
    if (done != size) {
      throw Error(source_ + ": corrupt archive (" + names_[index] + " is truncated: " +
                  std::to_string(done) + " of " + std::to_string(size) + " bytes)");
    }
    return out;
  }

  std::vector<std::byte> ReadLimited(size_t index, uint64_t limit) const {
    const uint64_t size = Size(index);
    if (size > limit) {
      throw Error(source_ + ": " + names_[index] + " is implausibly large (" +
                  std::to_string(size) + " bytes)");
    }
    return Read(index, size);
  }

 private:
  std::string source_;
  zip_t* archive_ = nullptr;
  std::vector<std::string> names_;
};

// The folder holding main.xml ("" for the root): the root, or exactly one
// first-level sub-folder (macOS resource forks under __MACOSX/ are ignored).
std::string FindMainXmlDir(const ZipReader& zip, const std::string& source) {
  std::vector<std::string> dirs;
  for (const std::string& name : zip.names()) {
    if (name == "main.xml") return "";
    if (name.starts_with("__MACOSX/")) continue;
    const size_t slash = name.find('/');
    if (slash != std::string::npos && name.substr(slash + 1) == "main.xml") {
      dirs.push_back(name.substr(0, slash));
    }
  }
  if (dirs.empty()) throw Error(source + ": not an X3P file (no main.xml in the archive)");
  if (dirs.size() > 1) {
    throw Error(source + ": ambiguous X3P archive (main.xml in several folders: " + dirs[0] +
                "/, " + dirs[1] + "/)");
  }
  return dirs[0];
}

std::string JoinPath(const std::string& dir, std::string_view link) {
  std::string l(Trim(link));
  std::replace(l.begin(), l.end(), '\\', '/');
  while (l.starts_with("./")) l.erase(0, 2);
  while (l.starts_with("/")) l.erase(0, 1);
  return dir.empty() ? l : dir + "/" + l;
}

// ---------------------------------------------------------------- decoding

int TypeSize(char type) {
  switch (type) {
    case 'D':
      return 8;
    case 'F':
      return 4;
    case 'I':
      return 2;
    case 'L':
      return 4;
    default:
      return 0;
  }
}

template <typename T>
T LoadLittle(const std::byte* p) {
  using U = std::conditional_t<sizeof(T) == 8, uint64_t,
                               std::conditional_t<sizeof(T) == 4, uint32_t, uint16_t>>;
  U u = 0;
  for (size_t i = 0; i < sizeof(T); ++i) {
    u = static_cast<U>(u | (static_cast<U>(std::to_integer<uint8_t>(p[i])) << (8 * i)));
  }
  return std::bit_cast<T>(u);
}

void Decode(std::span<const std::byte> data, char type, double increment, double offset,
            std::vector<float>& z) {
  const size_t n = z.size();
  switch (type) {
    case 'D':
      for (size_t i = 0; i < n; ++i) z[i] = static_cast<float>(LoadLittle<double>(&data[i * 8]));
      break;
    case 'F':
      for (size_t i = 0; i < n; ++i) z[i] = LoadLittle<float>(&data[i * 4]);
      break;
    case 'I':
      for (size_t i = 0; i < n; ++i) {
        z[i] = static_cast<float>(offset + increment * LoadLittle<int16_t>(&data[i * 2]));
      }
      break;
    case 'L':
      for (size_t i = 0; i < n; ++i) {
        z[i] = static_cast<float>(offset + increment * LoadLittle<int32_t>(&data[i * 4]));
      }
      break;
    default:
      BIEN_CHECK(false);
  }
  // Infinities (or float64 values beyond float32) are not measurements.
  for (float& v : z) {
    if (std::isinf(v)) v = std::numeric_limits<float>::quiet_NaN();
  }
}

struct Axis {
  char type = 0;
  double increment = 0;
};

Axis ReadLateralAxis(pugi::xml_node axes, const char* name, const std::string& source) {
  pugi::xml_node ax = Child(axes, name);
  const std::string lower = Lower(name).substr(1);  // "x" / "y"
  if (!ax) throw Error(source + ": main.xml lacks Record1/Axes/" + name);
  const std::string axis_type = Text(Child(ax, "AxisType"));
  if (axis_type == "A") {
    throw Error(source + ": irregular (absolute) " + lower + " axis not supported (" + name +
                " AxisType A); only a regular grid (AxisType I) can be read");
  }
  if (axis_type != "I") {
    throw Error(source + ": " + lower + " axis type '" + axis_type +
                "' not supported (expected I, incremental)");
  }
  const std::string inc_text = Text(Child(ax, "Increment"));
  const std::optional<double> inc = ParseDouble(inc_text);
  if (!inc) {
    throw Error(source + ": " + name + " increment '" + inc_text + "' is not a number");
  }
  if (!std::isfinite(*inc) || *inc <= 0) {
    throw Error(source + ": " + name + " increment " + inc_text + " must be positive and finite");
  }
  return Axis{'I', *inc};
}

Provenance ReadProvenance(pugi::xml_node record2) {
  Provenance p;
  if (!record2) return p;
  p.date = Text(Child(record2, "Date"));
  p.creator = Text(Child(record2, "Creator"));
  p.comment = Text(Child(record2, "Comment"));
  pugi::xml_node inst = Child(record2, "Instrument");
  for (const char* field : {"Manufacturer", "Model", "Serial", "Version"}) {
    const std::string v = Text(Child(inst, field));
    if (IsNotAvailable(v)) continue;
    if (!p.instrument.empty()) p.instrument += " / ";
    p.instrument += v;
  }
  return p;
}

void ReadMask(const ZipReader& zip, const std::string& dir, pugi::xml_node mask_node,
              Surface& surface) {
  const std::optional<size_t> index = zip.Find(JoinPath(dir, "bindata/mask.png"));
  if (!index) return;  // a Mask element without a raster: nothing to read
  std::vector<std::byte> png = zip.ReadLimited(*index, kMaxMaskBytes);
  cv::Mat image;
  try {
    image =
        cv::imdecode(cv::Mat(1, static_cast<int>(png.size()), CV_8U, png.data()), cv::IMREAD_COLOR);
  } catch (const cv::Exception&) {
    image.release();
  }
  if (image.empty()) {
    surface.warnings.push_back("bindata/mask.png cannot be decoded; mask ignored");
    return;
  }
  if (image.cols != surface.width || image.rows != surface.height) {
    surface.warnings.push_back("bindata/mask.png is " + std::to_string(image.cols) + " x " +
                               std::to_string(image.rows) + " but the surface is " +
                               std::to_string(surface.width) + " x " +
                               std::to_string(surface.height) + "; mask ignored");
    return;
  }
  SurfaceMask mask;
  mask.width = image.cols;
  mask.height = image.rows;
  mask.rgb.resize(static_cast<size_t>(mask.width) * mask.height);
  for (int y = 0; y < image.rows; ++y) {
    const cv::Vec3b* row = image.ptr<cv::Vec3b>(y);
    for (int x = 0; x < image.cols; ++x) {
      const cv::Vec3b& bgr = row[x];
      mask.rgb[static_cast<size_t>(y) * mask.width + x] =
          (static_cast<uint32_t>(bgr[2]) << 16) | (static_cast<uint32_t>(bgr[1]) << 8) | bgr[0];
    }
  }
  if (pugi::xml_node bg = Child(mask_node, "Background")) {
    if (auto c = ParseColour(Text(bg))) {
      mask.background = *c;
    } else {
      surface.warnings.push_back("mask background colour '" + Text(bg) +
                                 "' is not #rrggbb; default used");
    }
  }
  for (pugi::xml_node a : Child(mask_node, "Annotations").children()) {
    if (a.type() != pugi::node_element || LocalName(a.name()) != "Annotation") continue;
    const std::string colour = a.attribute("color").value();
    if (auto c = ParseColour(colour)) {
      mask.annotations.emplace_back(*c, Text(a));
    } else {
      surface.warnings.push_back("mask annotation '" + Text(a) + "' has an invalid colour '" +
                                 colour + "'; skipped");
    }
  }
  surface.mask = std::move(mask);
}

void CheckRecord4(const ZipReader& zip, const std::string& dir, pugi::xml_node root,
                  std::span<const std::byte> main_xml, Surface& surface) {
  std::string file = Text(Child(Child(root, "Record4"), "ChecksumFile"));
  const bool named = !file.empty();
  if (!named) file = "md5checksum.hex";
  const std::optional<size_t> index = zip.Find(JoinPath(dir, file));
  if (!index) {
    if (named) surface.warnings.push_back(file + " named in Record4 is missing from the archive");
    return;
  }
  std::vector<std::byte> bytes = zip.ReadLimited(*index, kMaxHexBytes);
  std::string text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  std::string stated = Lower(Trim(text).substr(0, 32));
  const std::string actual = Md5Hex(main_xml);
  if (stated != actual) {
    surface.warnings.push_back("main.xml checksum does not match " + file + " (file says " +
                               (stated.empty() ? std::string("nothing") : stated) +
                               ", main.xml has " + actual + "); the checksum file is stale");
  }
}

// ---------------------------------------------------------------- writing helpers

void AddText(pugi::xml_node parent, const char* name, const std::string& text) {
  parent.append_child(name).text().set(text.c_str());
}

std::vector<std::string> SplitInstrument(const std::string& instrument) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t sep = instrument.find(" / ", start);
    if (sep == std::string::npos) {
      parts.push_back(instrument.substr(start));
      break;
    }
    parts.push_back(instrument.substr(start, sep - start));
    start = sep + 3;
  }
  // Manufacturer / Model / Serial / Version: anything beyond goes into Version.
  while (parts.size() > 4) {
    parts[parts.size() - 2] += " / " + parts.back();
    parts.pop_back();
  }
  parts.resize(4);
  return parts;
}

std::string NowIso() {
  std::string now = UtcNowIso8601();  // 2026-11-23T10:15:30.123Z
  const size_t dot = now.find('.');
  if (dot != std::string::npos) now = now.substr(0, dot) + "Z";
  return now;
}

std::atomic<uint64_t> g_tmp_counter{0};

[[noreturn]] void WriteFailed(const std::string& target, const std::string& why) {
  throw Error(target + ": cannot write X3P (" + why + ")");
}

}  // namespace

double MetresPer(LengthUnit unit) {
  switch (unit) {
    case LengthUnit::kAuto:
    case LengthUnit::kMetre:
      return 1.0;
    case LengthUnit::kMillimetre:
      return 1e-3;
    case LengthUnit::kMicrometre:
      return 1e-6;
  }
  throw Error("unknown length unit");
}

LengthUnit ParseLengthUnit(const std::string& text) {
  if (text == "auto") return LengthUnit::kAuto;
  if (text == "m") return LengthUnit::kMetre;
  if (text == "mm") return LengthUnit::kMillimetre;
  if (text == "um" || text == "\u00b5m" || text == "\u03bcm") return LengthUnit::kMicrometre;
  throw Error("unknown length unit '" + text + "' (expected auto, m, mm or um)");
}

const char* ToString(LengthUnit unit) {
  switch (unit) {
    case LengthUnit::kAuto:
      return "auto";
    case LengthUnit::kMetre:
      return "m";
    case LengthUnit::kMillimetre:
      return "mm";
    case LengthUnit::kMicrometre:
      return "um";
  }
  return "?";
}

void X3pReadOptions::Check() const {
  if (max_points <= 0) throw Error("X3P read options: max_points must be positive");
  switch (xy_unit) {
    case LengthUnit::kAuto:
    case LengthUnit::kMetre:
    case LengthUnit::kMillimetre:
    case LengthUnit::kMicrometre:
      break;
    default:
      throw Error("X3P read options: unknown lateral unit");
  }
  switch (z_unit) {
    case LengthUnit::kMetre:
    case LengthUnit::kMillimetre:
    case LengthUnit::kMicrometre:
      break;
    case LengthUnit::kAuto:
      throw Error("X3P read options: the height unit cannot be guessed; state m, mm or um");
    default:
      throw Error("X3P read options: unknown height unit");
  }
}

Surface ReadX3pFromMemory(std::span<const std::byte> bytes, const std::string& source,
                          const X3pReadOptions& options) {
  options.Check();
  if (bytes.empty()) throw Error(source + ": empty file");
  ZipReader zip(bytes, source);
  const std::string dir = FindMainXmlDir(zip, source);
  const std::string main_name = JoinPath(dir, "main.xml");
  const std::vector<std::byte> main_xml = zip.ReadLimited(*zip.Find(main_name), kMaxXmlBytes);

  pugi::xml_document doc;
  const pugi::xml_parse_result parsed =
      doc.load_buffer(main_xml.data(), main_xml.size(), pugi::parse_default, pugi::encoding_auto);
  if (!parsed) {
    throw Error(source + ": main.xml is not valid XML (" + parsed.description() + " at byte " +
                std::to_string(parsed.offset) + ")");
  }
  pugi::xml_node root = doc.document_element();
  const std::string_view root_name = LocalName(root.name());
  if (root_name != "ISO5436_2" && root_name != "ISO5436") {
    throw Error(source + ": main.xml root element is <" + std::string(root.name()) +
                ">, expected ISO5436_2");
  }

  // Record1: feature type and axes.
  pugi::xml_node record1 = Child(root, "Record1");
  if (!record1) throw Error(source + ": main.xml lacks Record1");
  const std::string feature = Text(Child(record1, "FeatureType"));
  if (feature != "SUR") {
    throw Error(source + ": feature type '" + feature +
                "' not supported (only SUR, an areal surface)");
  }
  pugi::xml_node axes = Child(record1, "Axes");
  if (!axes) throw Error(source + ": main.xml lacks Record1/Axes");
  const Axis cx = ReadLateralAxis(axes, "CX", source);
  const Axis cy = ReadLateralAxis(axes, "CY", source);
  pugi::xml_node cz = Child(axes, "CZ");
  if (!cz) throw Error(source + ": main.xml lacks Record1/Axes/CZ");
  const std::string type_text = Text(Child(cz, "DataType"));
  if (type_text.size() != 1 || TypeSize(type_text[0]) == 0) {
    throw Error(source + ": z data type '" + type_text + "' not supported (expected D, F, I or L)");
  }
  const char type = type_text[0];
  double z_increment = 1;
  double z_offset = 0;
  if (const std::string t = Text(Child(cz, "Increment")); !t.empty()) {
    const auto v = ParseDouble(t);
    if (!v || !std::isfinite(*v) || *v == 0) {
      throw Error(source + ": CZ increment '" + t + "' is not a usable number");
    }
    z_increment = *v;
  }
  if (const std::string t = Text(Child(cz, "Offset")); !t.empty()) {
    const auto v = ParseDouble(t);
    if (!v || !std::isfinite(*v)) {
      throw Error(source + ": CZ offset '" + t + "' is not a number");
    }
    z_offset = *v;
  }

  // Record3: grid and data links.
  pugi::xml_node record3 = Child(root, "Record3");
  if (!record3) throw Error(source + ": main.xml lacks Record3");
  pugi::xml_node matrix = Child(record3, "MatrixDimension");
  if (!matrix) {
    if (Child(record3, "ListDimension")) {
      throw Error(source +
                  ": list (point-cloud) data (ListDimension) not supported; only "
                  "MatrixDimension grids");
    }
    throw Error(source + ": main.xml lacks Record3/MatrixDimension");
  }
  auto size_of = [&](const char* name) {
    const std::string t = Text(Child(matrix, name));
    const auto v = ParseInt(t);
    if (!v) throw Error(source + ": " + name + " '" + t + "' is not an integer");
    return *v;
  };
  const int64_t size_x = size_of("SizeX");
  const int64_t size_y = size_of("SizeY");
  const int64_t size_z = Child(matrix, "SizeZ") ? size_of("SizeZ") : 1;
  if (size_x <= 0 || size_y <= 0) {
    throw Error(source + ": grid " + std::to_string(size_x) + " x " + std::to_string(size_y) +
                " is empty or negative");
  }
  if (size_z != 1) {
    throw Error(source + ": SizeZ " + std::to_string(size_z) +
                " not supported (only one layer, SizeZ 1)");
  }
  if (size_x > std::numeric_limits<int>::max() || size_y > std::numeric_limits<int>::max() ||
      size_x > options.max_points / size_y) {
    throw Error(source + ": grid " + std::to_string(size_x) + " x " + std::to_string(size_y) +
                " exceeds the limit of " + std::to_string(options.max_points) + " points");
  }
  const int64_t n = size_x * size_y;

  pugi::xml_node link = Child(record3, "DataLink");
  const std::string point_link = Text(Child(link, "PointDataLink"));
  if (point_link.empty()) throw Error(source + ": main.xml lacks Record3/DataLink/PointDataLink");
  const std::string data_name = JoinPath(dir, point_link);
  const std::optional<size_t> data_index = zip.Find(data_name);
  if (!data_index) {
    throw Error(source + ": point data " + point_link +
                " named in main.xml is missing from the archive");
  }
  const uint64_t expected = static_cast<uint64_t>(n) * TypeSize(type);
  const uint64_t actual_size = zip.Size(*data_index);
  if (actual_size != expected) {
    throw Error(source + ": " + point_link + " holds " + std::to_string(actual_size) +
                " bytes, main.xml declares " + std::to_string(size_x) + " x " +
                std::to_string(size_y) + " " + type + " = " + std::to_string(expected) + " bytes");
  }
  const std::vector<std::byte> data = zip.Read(*data_index, expected);
  if (const std::string md5 = Lower(Text(Child(link, "MD5ChecksumPointData"))); !md5.empty()) {
    const std::string actual_md5 = Md5Hex(data);
    if (md5 != actual_md5) {
      throw Error(source + ": point data MD5 checksum mismatch (main.xml says " + md5 + ", " +
                  point_link + " has " + actual_md5 + "): the file is corrupt or was altered");
    }
  }

  Surface surface;
  surface.width = static_cast<int>(size_x);
  surface.height = static_cast<int>(size_y);
  surface.values = SurfaceValues::kHeight;
  // CZ increment and offset scale integer codes only: float data already holds
  // heights (x3ptools does the same; csafe-logo.x3p has D data ~5e-7 with a CZ
  // increment of 1e-6, which applied again would give 1e-13 m heights).
  surface.z.resize(static_cast<size_t>(n));
  Decode(data, type, z_increment, z_offset, surface.z);

  if (const std::string valid_link = Text(Child(link, "ValidPointsLink")); !valid_link.empty()) {
    const std::optional<size_t> vi = zip.Find(JoinPath(dir, valid_link));
    if (!vi) {
      throw Error(source + ": valid-points data " + valid_link +
                  " named in main.xml is missing from the archive");
    }
    const uint64_t bits_bytes = (static_cast<uint64_t>(n) + 7) / 8;
    const uint64_t vsize = zip.Size(*vi);
    if (vsize < bits_bytes || vsize > bits_bytes + 64) {
      throw Error(source + ": " + valid_link + " holds " + std::to_string(vsize) +
                  " bytes, the grid needs " + std::to_string(bits_bytes) + " bytes of bits");
    }
    const std::vector<std::byte> bits = zip.Read(*vi, vsize);
    for (size_t i = 0; i < static_cast<size_t>(n); ++i) {
      const uint8_t byte = std::to_integer<uint8_t>(bits[i / 8]);
      if (((byte >> (i % 8)) & 1u) == 0) surface.z[i] = std::numeric_limits<float>::quiet_NaN();
    }
  }

  // Lateral spacing in metres.
  double scale = MetresPer(options.xy_unit);
  if (options.xy_unit == LengthUnit::kAuto && (cx.increment >= 1e-3 || cy.increment >= 1e-3)) {
    scale = 1e-6;
  }
  surface.dx_m = cx.increment * scale;
  surface.dy_m = cy.increment * scale;
  if (options.z_unit != LengthUnit::kMetre) {
    const auto z_scale = static_cast<float>(MetresPer(options.z_unit));
    for (float& v : surface.z) v *= z_scale;
  }

  surface.provenance = ReadProvenance(Child(root, "Record2"));
  if (options.read_mask) {
    if (pugi::xml_node mask = Child(record3, "Mask")) ReadMask(zip, dir, mask, surface);
  }
  CheckRecord4(zip, dir, root, main_xml, surface);
  return surface;
}

Surface ReadX3p(const std::filesystem::path& path, const X3pReadOptions& options) {
  options.Check();
  const std::string source = path.string();
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    throw Error(source + ": cannot open (no such file)");
  }
  if (!std::filesystem::is_regular_file(status)) throw Error(source + ": not a regular file");
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) throw Error(source + ": cannot read its size (" + ec.message() + ")");
  // The compressed archive is never much larger than the raw float64 grid.
  const uintmax_t limit = static_cast<uintmax_t>(options.max_points) * 8 + (256u << 20);
  if (size > limit) {
    throw Error(source + ": file of " + std::to_string(size) + " bytes exceeds the limit of " +
                std::to_string(options.max_points) + " points");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(source + ": cannot open (" + std::strerror(errno) + ")");
  std::vector<std::byte> bytes(static_cast<size_t>(size));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  if (in.gcount() != static_cast<std::streamsize>(size)) {
    throw Error(source + ": cannot read the file (" + std::strerror(errno) + ")");
  }
  return ReadX3pFromMemory(bytes, source, options);
}

void WriteX3p(const Surface& surface, const std::filesystem::path& path,
              const X3pWriteOptions& options) {
  const std::string target = path.string();
  auto fail = [&](const std::string& why) { WriteFailed(target, why); };
  if (surface.width <= 0 || surface.height <= 0 ||
      surface.z.size() != static_cast<size_t>(surface.width) * surface.height) {
    fail("the surface has no consistent grid");
  }
  if (!(std::isfinite(surface.dx_m) && surface.dx_m > 0 && std::isfinite(surface.dy_m) &&
        surface.dy_m > 0)) {
    fail("the lateral spacing must be positive and finite");
  }
  if (surface.mask &&
      (surface.mask->width != surface.width || surface.mask->height != surface.height ||
       surface.mask->rgb.size() != surface.z.size())) {
    fail("the mask does not match the surface grid");
  }

  // bindata/data.bin: float32 little-endian, x fastest.
  std::vector<std::byte> data(surface.z.size() * 4);
  for (size_t i = 0; i < surface.z.size(); ++i) {
    const uint32_t u = std::bit_cast<uint32_t>(surface.z[i]);
    for (int b = 0; b < 4; ++b) data[i * 4 + b] = static_cast<std::byte>((u >> (8 * b)) & 0xffu);
  }
  const std::string data_md5 = Md5Hex(data);

  std::vector<uchar> mask_png;
  if (surface.mask) {
    cv::Mat image(surface.height, surface.width, CV_8UC3);
    for (int y = 0; y < surface.height; ++y) {
      cv::Vec3b* row = image.ptr<cv::Vec3b>(y);
      for (int x = 0; x < surface.width; ++x) {
        const uint32_t c = surface.mask->rgb[static_cast<size_t>(y) * surface.width + x];
        row[x] = cv::Vec3b(static_cast<uchar>(c & 0xff), static_cast<uchar>((c >> 8) & 0xff),
                           static_cast<uchar>((c >> 16) & 0xff));
      }
    }
    if (!cv::imencode(".png", image, mask_png)) fail("cannot encode the mask as PNG");
  }

  // main.xml
  const Provenance& prov = surface.provenance;
  pugi::xml_document doc;
  pugi::xml_node decl = doc.append_child(pugi::node_declaration);
  decl.append_attribute("version") = "1.0";
  decl.append_attribute("encoding") = "UTF-8";
  pugi::xml_node root = doc.append_child("p:ISO5436_2");
  root.append_attribute("xmlns:p") = kNamespace;
  root.append_attribute("xmlns:xsi") = "http://www.w3.org/2001/XMLSchema-instance";
  root.append_attribute("xsi:schemaLocation") = kSchemaLocation;

  pugi::xml_node record1 = root.append_child("Record1");
  AddText(record1, "Revision", "ISO5436 - 2000");
  AddText(record1, "FeatureType", "SUR");
  pugi::xml_node axes = record1.append_child("Axes");
  auto add_axis = [&](const char* name, const char* axis_type, const char* data_type,
                      double increment) {
    pugi::xml_node ax = axes.append_child(name);
    AddText(ax, "AxisType", axis_type);
    AddText(ax, "DataType", data_type);
    AddText(ax, "Increment", ShortestDouble(increment));
    AddText(ax, "Offset", "0");
  };
  add_axis("CX", "I", "D", surface.dx_m);
  add_axis("CY", "I", "D", surface.dy_m);
  add_axis("CZ", "A", "F", 1.0);

  pugi::xml_node record2 = root.append_child("Record2");
  const std::string date = prov.date.empty() ? NowIso() : prov.date;
  AddText(record2, "Date", date);
  if (!prov.creator.empty()) AddText(record2, "Creator", prov.creator);
  pugi::xml_node inst = record2.append_child("Instrument");
  const std::vector<std::string> parts =
      SplitInstrument(prov.instrument.empty() ? std::string("bien") : prov.instrument);
  AddText(inst, "Manufacturer", parts[0]);
  AddText(inst, "Model", parts[1]);
  AddText(inst, "Serial", parts[2]);
  AddText(inst, "Version", parts[3]);
  AddText(record2, "CalibrationDate", date);
  pugi::xml_node probing = record2.append_child("ProbingSystem");
  AddText(probing, "Type", prov.instrument.empty() ? "Software" : "NonContacting");
  AddText(probing, "Identification", "not available");
  const std::string comment = prov.comment.empty() ? options.default_comment : prov.comment;
  if (!comment.empty()) AddText(record2, "Comment", comment);

  pugi::xml_node record3 = root.append_child("Record3");
  pugi::xml_node matrix = record3.append_child("MatrixDimension");
  AddText(matrix, "SizeX", std::to_string(surface.width));
  AddText(matrix, "SizeY", std::to_string(surface.height));
  AddText(matrix, "SizeZ", "1");
  pugi::xml_node link = record3.append_child("DataLink");
  AddText(link, "PointDataLink", "bindata/data.bin");
  AddText(link, "MD5ChecksumPointData", data_md5);
  if (surface.mask) {
    pugi::xml_node mask = record3.append_child("Mask");
    AddText(mask, "Background", ColourText(surface.mask->background));
    pugi::xml_node annotations = mask.append_child("Annotations");
    for (const auto& [colour, label] : surface.mask->annotations) {
      pugi::xml_node a = annotations.append_child("Annotation");
      a.append_attribute("color") = ColourText(colour).c_str();
      a.text().set(label.c_str());
    }
  }
  pugi::xml_node record4 = root.append_child("Record4");
  AddText(record4, "ChecksumFile", "md5checksum.hex");

  std::ostringstream xml_stream;
  doc.save(xml_stream, "  ", pugi::format_default, pugi::encoding_utf8);
  const std::string main_xml = xml_stream.str();
  const std::string checksum_file = Md5Hex(std::as_bytes(std::span(main_xml))) + " *main.xml\n";

  // The archive, written beside the target and renamed into place.
  const std::filesystem::path tmp = path.string() + ".tmp-" + std::to_string(::getpid()) + "-" +
                                    std::to_string(g_tmp_counter.fetch_add(1));
  const std::string tmp_name = tmp.string();
  std::error_code ec;
  std::filesystem::remove(tmp, ec);
  int zip_err = 0;
  zip_t* archive = zip_open(tmp_name.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &zip_err);
  if (archive == nullptr) {
    zip_error_t error;
    zip_error_init_with_code(&error, zip_err);
    std::string msg = zip_error_strerror(&error);
    zip_error_fini(&error);
    fail(msg);
  }
  auto abandon = [&](const std::string& why) {
    std::string msg = why + ": " + zip_strerror(archive);
    zip_discard(archive);
    std::filesystem::remove(tmp, ec);
    fail(msg);
  };
  auto add = [&](const char* name, const void* bytes, size_t size) {
    zip_source_t* src = zip_source_buffer(archive, bytes, size, 0);
    if (src == nullptr) abandon(std::string("cannot add ") + name);
    if (zip_file_add(archive, name, src, ZIP_FL_OVERWRITE | ZIP_FL_ENC_UTF_8) < 0) {
      zip_source_free(src);
      abandon(std::string("cannot add ") + name);
    }
  };
  if (zip_dir_add(archive, "bindata", ZIP_FL_ENC_UTF_8) < 0) abandon("cannot add bindata/");
  add("main.xml", main_xml.data(), main_xml.size());
  add("md5checksum.hex", checksum_file.data(), checksum_file.size());
  add("bindata/data.bin", data.data(), data.size());
  if (surface.mask) add("bindata/mask.png", mask_png.data(), mask_png.size());
  if (zip_close(archive) != 0) abandon("cannot finish the archive");

  // Make the bytes durable before they take the final name.
  const int fd = ::open(tmp_name.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    const std::string msg = std::strerror(errno);
    if (fd >= 0) ::close(fd);
    std::filesystem::remove(tmp, ec);
    fail(msg);
  }
  ::close(fd);
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignore;
    std::filesystem::remove(tmp, ignore);
    fail(ec.message());
  }
}

}  // namespace bien
