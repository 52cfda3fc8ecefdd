#include <gtest/gtest.h>

#include <cstring>

#include "core/csv.h"
#include "core/error.h"
#include "core/hash.h"
#include "tests/test_util.h"

namespace bien {
namespace {

TEST(Hash, KnownVectors) {
  EXPECT_EQ(Sha256Hex(std::string_view("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string abc = "abc";
  EXPECT_EQ(Md5Hex(std::as_bytes(std::span<const char>(abc.data(), abc.size()))),
            "900150983cd24fb0d6963f7d28e17f72");
  EXPECT_EQ(Sha256Hex(std::string_view("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Hash, IncrementalEqualsOneShotAndFile) {
  testing::TempDir dir;
  std::string text(200000, 'x');
  for (size_t i = 0; i < text.size(); ++i) text[i] = static_cast<char>('a' + i % 26);
  Digest d(DigestKind::kSha256);
  d.Update(std::string_view(text).substr(0, 12345));
  d.Update(std::string_view(text).substr(12345));
  const std::string incremental = d.HexDigest();
  EXPECT_EQ(incremental, Sha256Hex(std::string_view(text)));
  EXPECT_THROW(d.HexDigest(), Error);
  std::vector<std::byte> bytes(text.size());
  std::memcpy(bytes.data(), text.data(), text.size());
  testing::WriteBytes(dir / "f.bin", bytes);
  EXPECT_EQ(Sha256File(dir / "f.bin"), incremental);
  EXPECT_THROW(Sha256File(dir / "missing.bin"), Error);
}

TEST(Csv, QuotesCommasNewlinesAndCrlf) {
  const auto t = ParseCsv(
      "path,source\r\n\"Fadul 1-1.x3p\",s1\r\n\"a, \"\"quoted\"\" name\",\"two\nlines\"\r\n\r\n",
      "t.csv");
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.rows[0][0], "Fadul 1-1.x3p");
  EXPECT_EQ(t.rows[1][0], "a, \"quoted\" name");
  EXPECT_EQ(t.rows[1][1], "two\nlines");
  EXPECT_EQ(t.row_lines[1], 3);
  EXPECT_EQ(t.Column("source"), 1u);
  EXPECT_FALSE(t.Column("nope"));
  EXPECT_EQ(CsvEscape("plain"), "plain");
  EXPECT_EQ(CsvEscape("a,b"), "\"a,b\"");
  EXPECT_EQ(CsvEscape("say \"hi\""), "\"say \"\"hi\"\"\"");
}

TEST(Csv, ErrorsNameSourceAndLine) {
  try {
    ParseCsv("a,b\n1,2\n3\n", "m.csv");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("m.csv:3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ParseCsv("a,b\n\"1,2\n", "m.csv"), Error);
  EXPECT_THROW(ParseCsv("", "m.csv"), Error);
}

}  // namespace
}  // namespace bien
