// The `bien` command end to end, in-process: node life cycle, ingest, list,
// show, export, verify, and every bad input named in the foundation issue.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "imaging/synth.h"
#include "imaging/x3p.h"
#include "tests/test_util.h"
#include "tests/tools/cli_util.h"

namespace bien::testing {
namespace {

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    node_ = (dir_ / "node").string();
    auto r = RunBien({"init", "--node", node_, "--name", "Test node", "--country", "BA"});
    ASSERT_EQ(r.code, 0) << r.err;
    good_ = dir_ / "good scan.x3p";
    WriteX3p(SmallSurface(), good_);
  }

  CliResult Ingest(const std::filesystem::path& file, const std::string& exhibit = "E1",
                   std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"ingest", "--node",         node_,       file.string(),
                                  "--case", "2026-BA-1",      "--exhibit", exhibit,
                                  "--kind", "cartridge_case", "--role",    "evidence"};
    args.insert(args.end(), extra.begin(), extra.end());
    return RunBien(args);
  }

  // A bad file must be rejected naming the file and `problem`, with a non-zero
  // exit, and leave the store as it was and verifiable.
  void ExpectRejected(const std::filesystem::path& file, const std::string& problem,
                      std::vector<std::string> extra = {}) {
    const StoreCounts before = CountsOf(node_);
    const CliResult r = Ingest(file, "E-bad", extra);
    EXPECT_NE(r.code, 0) << r.out;
    const std::string text = r.out + r.err;
    EXPECT_TRUE(Contains(text, file.filename().string())) << text;
    EXPECT_TRUE(Contains(text, problem)) << "expected '" << problem << "' in: " << text;
    const StoreCounts after = CountsOf(node_);
    EXPECT_EQ(after.scans, before.scans);
    EXPECT_EQ(after.exhibits, before.exhibits);
    EXPECT_EQ(after.cases, before.cases);
    EXPECT_EQ(after.audit, before.audit);
    const CliResult v = RunBien({"verify", "--node", node_});
    EXPECT_EQ(v.code, 0) << v.out;
  }

  // The good file with its main.xml (or data) edited.
  std::filesystem::path Mutated(const std::string& name,
                                const std::function<void(std::map<std::string, std::string>&)>& f) {
    auto entries = ReadZip(good_);
    f(entries);
    const auto path = dir_ / name;
    WriteZip(path, entries);
    return path;
  }

  static void Replace(std::string& text, const std::string& from, const std::string& to) {
    const auto at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
  }

  TempDir dir_;
  std::string node_;
  std::filesystem::path good_;
};

TEST_F(CliTest, IngestListShowExportVerify) {
  const auto second = dir_ / "second.x3p";
  WriteX3p(SmallSurface(80, 60, 7), second);
  auto r = Ingest(good_, "E1", {"--calibre", "9mm Luger", "--firing-pin", "circular"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  r = Ingest(second, "E1");
  ASSERT_EQ(r.code, 0) << r.out << r.err;

  r = RunBien({"list", "--node", node_, "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto list = nlohmann::json::parse(r.out);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["case"], "2026-BA-1");
  EXPECT_EQ(list[0]["scans"], 2);
  EXPECT_EQ(list[0]["class"]["calibre"], "9mm Luger");
  EXPECT_TRUE(list[0]["class"]["lands"].is_null());

  r = RunBien({"show", "--node", node_, "2026-BA-1/E1", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto show = nlohmann::json::parse(r.out);
  ASSERT_EQ(show["scans"].size(), 2u);
  EXPECT_EQ(show["scans"][0]["original_name"], "good scan.x3p");
  EXPECT_EQ(show["scans"][0]["width"], 64);
  EXPECT_EQ(show["scans"][0]["sha256"].get<std::string>().size(), 64u);
  EXPECT_GE(show["audit"].size(), 3u);  // exhibit created, two scans added

  r = RunBien({"show", "--node", node_, "E1"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "audit trail")) << r.out;

  const auto out = dir_ / "exported";
  r = RunBien({"export", "--node", node_, "E1", "--out", out.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(ReadBytes(out / "good scan.x3p"), ReadBytes(good_));
  EXPECT_EQ(ReadBytes(out / "second.x3p"), ReadBytes(second));
  EXPECT_TRUE(std::filesystem::exists(out / "SHA256SUMS"));
  // Exporting again would overwrite: refused.
  r = RunBien({"export", "--node", node_, "E1", "--out", out.string()});
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(Contains(r.err, "already exists")) << r.err;

  r = RunBien({"verify", "--node", node_, "--json"});
  ASSERT_EQ(r.code, 0) << r.out;
  const auto verify = nlohmann::json::parse(r.out);
  EXPECT_TRUE(verify["ok"].get<bool>());
  EXPECT_EQ(verify["objects_checked"], 2);
}

TEST_F(CliTest, SameFileTwiceIsReportedNotDuplicated) {
  ASSERT_EQ(Ingest(good_).code, 0);
  const StoreCounts before = CountsOf(node_);
  const auto r = Ingest(good_);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "duplicate")) << r.out;
  EXPECT_TRUE(Contains(r.out, "already stored")) << r.out;
  const StoreCounts after = CountsOf(node_);
  EXPECT_EQ(after.scans, before.scans);
  EXPECT_EQ(after.audit, before.audit);
}

TEST_F(CliTest, VerifyNamesATamperedOriginal) {
  ASSERT_EQ(Ingest(good_).code, 0);
  auto r = RunBien({"show", "--node", node_, "E1", "--json"});
  const std::string sha = nlohmann::json::parse(r.out)["scans"][0]["sha256"];
  const auto object = std::filesystem::path(node_) / "objects" / sha.substr(0, 2) / sha.substr(2);
  ASSERT_TRUE(std::filesystem::exists(object));
  std::filesystem::permissions(object, std::filesystem::perms::owner_write,
                               std::filesystem::perm_options::add);
  {
    std::fstream f(object, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('!');
  }
  r = RunBien({"verify", "--node", node_});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.out, "good scan.x3p")) << r.out;
}

TEST_F(CliTest, TruncatedX3p) {
  auto bytes = ReadBytes(good_);
  bytes.resize(bytes.size() / 2);
  WriteBytes(dir_ / "truncated.x3p", bytes);
  ExpectRejected(dir_ / "truncated.x3p", "zip");
}

TEST_F(CliTest, NotAZip) {
  std::ofstream(dir_ / "notes.x3p") << "this is not an X3P file at all";
  ExpectRejected(dir_ / "notes.x3p", "unrecognised file format");
}

TEST_F(CliTest, MissingMainXml) {
  const auto p = Mutated("no main.x3p", [](auto& e) { e.erase("main.xml"); });
  ExpectRejected(p, "main.xml");
}

TEST_F(CliTest, DataSizeNotMatchingGrid) {
  const auto p = Mutated("short data.x3p", [](auto& e) {
    e["bindata/data.bin"].resize(e["bindata/data.bin"].size() - 4);
  });
  ExpectRejected(p, "data.bin");
}

TEST_F(CliTest, WrongChecksum) {
  const auto p = Mutated("bad md5.x3p", [](auto& e) { e["bindata/data.bin"][10] ^= 0x5a; });
  ExpectRejected(p, "MD5");
}

TEST_F(CliTest, UnknownDataType) {
  const auto p = Mutated("type q.x3p", [](auto& e) {
    std::string& xml = e["main.xml"];
    const auto cz = xml.find("<CZ>");
    ASSERT_NE(cz, std::string::npos);
    const auto t = xml.find("<DataType>F</DataType>", cz);
    ASSERT_NE(t, std::string::npos);
    xml.replace(t, 22, "<DataType>Q</DataType>");
  });
  ExpectRejected(p, "data type");
}

TEST_F(CliTest, AbsurdDimensions) {
  const auto p = Mutated("huge.x3p", [](auto& e) {
    Replace(e["main.xml"], "<SizeX>64</SizeX>", "<SizeX>2000000000</SizeX>");
    Replace(e["main.xml"], "<SizeY>48</SizeY>", "<SizeY>2000000000</SizeY>");
  });
  ExpectRejected(p, "points");
}

TEST_F(CliTest, AllNanSurface) {
  Surface s = SmallSurface();
  std::fill(s.z.begin(), s.z.end(), NAN);
  WriteX3p(s, dir_ / "all nan.x3p");
  ExpectRejected(dir_ / "all nan.x3p", "NaN");
}

TEST_F(CliTest, HeightsInWrongUnit) {
  Surface s = SmallSurface();
  for (float& v : s.z) v *= 1e6f;  // micrometres written as if metres
  WriteX3p(s, dir_ / "micrometres.x3p");
  ExpectRejected(dir_ / "micrometres.x3p", "metres");
  for (const auto& [unit, problem] : {std::pair{"furlong", "unknown length unit 'furlong'"},
                                      std::pair{"auto", "cannot be guessed"}}) {
    const CliResult bad = Ingest(dir_ / "micrometres.x3p", "E-bad", {"--z-unit", unit});
    EXPECT_NE(bad.code, 0) << bad.err;
    EXPECT_TRUE(Contains(bad.err, problem)) << bad.err;
  }

  // Once the user states the unit, the file ingests and the scale is kept with
  // the scan, so the untouched original can be re-read the same way.
  const CliResult r = Ingest(dir_ / "micrometres.x3p", "E-um", {"--z-unit", "um", "--json"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const CliResult shown = RunBien({"show", "--node", node_, "--json", "2026-BA-1/E-um"});
  ASSERT_EQ(shown.code, 0) << shown.err;
  const auto j = nlohmann::json::parse(shown.out);
  ASSERT_EQ(j["scans"].size(), 1u);
  EXPECT_DOUBLE_EQ(j["scans"][0]["z_scale"].get<double>(), 1e-6);
  EXPECT_EQ(RunBien({"verify", "--node", node_}).code, 0);
}

TEST_F(CliTest, EmptyAndUnreadableImages) {
  std::ofstream(dir_ / "empty.png").close();
  ExpectRejected(dir_ / "empty.png", "empty", {"--pixel-size-um", "3.5"});
  std::string junk = "\x89PNG\r\n\x1a\n";
  junk += std::string(200, 'z');
  std::ofstream(dir_ / "broken.png", std::ios::binary) << junk;
  ExpectRejected(dir_ / "broken.png", "image", {"--pixel-size-um", "3.5"});
}

TEST_F(CliTest, ImageNeedsPixelSizeAndThenIngests) {
  cv::Mat img(120, 160, CV_8UC3);
  cv::randu(img, 0, 255);
  ASSERT_TRUE(cv::imwrite((dir_ / "photo 1.png").string(), img));
  ExpectRejected(dir_ / "photo 1.png", "pixel size");
  const auto r = Ingest(dir_ / "photo 1.png", "E2", {"--pixel-size-um", "3.5"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const auto show = nlohmann::json::parse(RunBien({"show", "--node", node_, "E2", "--json"}).out);
  EXPECT_EQ(show["scans"][0]["format"], "png");
  EXPECT_TRUE(show["scans"][0]["intensity"].get<bool>());
  EXPECT_DOUBLE_EQ(show["scans"][0]["dx_m"].get<double>(), 3.5e-6);
}

TEST_F(CliTest, UnknownExhibitKind) {
  const StoreCounts before = CountsOf(node_);
  const auto r = RunBien({"ingest", "--node", node_, good_.string(), "--case", "C", "--exhibit",
                          "E", "--kind", "cartridge", "--role", "evidence"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "unknown exhibit kind 'cartridge'")) << r.err;
  EXPECT_EQ(CountsOf(node_).scans, before.scans);
}

TEST_F(CliTest, NodeFolderMissingOrNotANode) {
  auto r = RunBien({"list", "--node", (dir_ / "nowhere").string()});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "nowhere")) << r.err;
  std::filesystem::create_directories(dir_ / "plain");
  std::ofstream(dir_ / "plain" / "file.txt") << "x";
  r = RunBien({"list", "--node", (dir_ / "plain").string()});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "not a bien node")) << r.err;
  r = RunBien({"init", "--node", node_});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, node_)) << r.err;
  r = RunBien({"list"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "--node")) << r.err;
}

TEST_F(CliTest, DatabaseFromNewerSchema) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((std::filesystem::path(node_) / "bien.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 999", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  const auto r = RunBien({"list", "--node", node_});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "newer")) << r.err;
  EXPECT_TRUE(Contains(r.err, "999")) << r.err;
}

TEST_F(CliTest, ManifestContinuesPastBadRowsAndGroupsExhibits) {
  SynthOptions o;
  o.firearms = 2;
  o.shots = 2;
  o.size_px = 160;
  const auto files = WriteSynthSet(dir_ / "synth", o);
  std::ofstream(dir_ / "synth" / "garbage.x3p") << "garbage";
  {
    std::ofstream m(dir_ / "synth" / "manifest.csv");
    m << "path,case,exhibit,kind,role,calibre,lands,land\n";
    m << "\"" << files[0].file_name << "\",C1,B1,bullet,evidence,9mm,6,1\n";
    m << "\"" << files[1].file_name << "\",C1,B1,bullet,evidence,9mm,6,2\n";
    m << "\"" << files[2].file_name << "\",C2,E1,cartridge_case,test_fire,,,\n";
    m << "garbage.x3p,C2,E2,cartridge_case,evidence,,,\n";
    m << "\"" << files[3].file_name << "\",C2,E3,casing,evidence,,,\n";
    m << "missing.x3p,C2,E4,cartridge_case,evidence,,,\n";
  }
  const auto r = RunBien({"ingest", "--node", node_, "--manifest",
                          (dir_ / "synth" / "manifest.csv").string(), "--json"});
  EXPECT_EQ(r.code, 3) << r.out << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ingested"], 3);
  EXPECT_EQ(j["rejected"], 3);
  EXPECT_EQ(j["items"][3]["status"], "rejected");
  EXPECT_TRUE(Contains(j["items"][3]["reason"], "garbage.x3p")) << j.dump();
  EXPECT_TRUE(Contains(j["items"][4]["reason"], "manifest.csv:6")) << j.dump();
  EXPECT_TRUE(Contains(j["items"][4]["reason"], "casing")) << j.dump();
  EXPECT_TRUE(Contains(j["items"][5]["reason"], "no such file")) << j.dump();
  const auto b1 = nlohmann::json::parse(RunBien({"show", "--node", node_, "C1/B1", "--json"}).out);
  EXPECT_EQ(b1["scans"].size(), 2u);
  EXPECT_EQ(b1["class"]["lands"], 6);
  EXPECT_EQ(b1["scans"][1]["land"], 2);
  EXPECT_EQ(RunBien({"verify", "--node", node_}).code, 0);
}

TEST_F(CliTest, FirearmReferenceThroughIngestListAndShow) {
  auto test_fire = [&](const std::filesystem::path& file, const std::string& firearm) {
    return RunBien({"ingest", "--node", node_, file.string(), "--case", "2026-BA-1", "--exhibit",
                    "T1", "--kind", "cartridge_case", "--role", "test_fire", "--firearm", firearm});
  };
  auto r = test_fire(good_, "SN-1234");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const auto other = dir_ / "other.x3p";
  WriteX3p(SmallSurface(64, 48, 3), other);
  r = Ingest(other, "E2");
  ASSERT_EQ(r.code, 0) << r.out << r.err;

  // `bien list --json`, as exhibit -> entry.
  auto listed = [&] {
    std::map<std::string, nlohmann::json> by_exhibit;
    for (const auto& e : nlohmann::json::parse(RunBien({"list", "--node", node_, "--json"}).out)) {
      by_exhibit[e["exhibit"].get<std::string>()] = e;
    }
    return by_exhibit;
  };
  auto list = listed();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list["T1"]["firearm"], "SN-1234");
  EXPECT_EQ(list["T1"]["role"], "test_fire");
  EXPECT_TRUE(list["E2"]["firearm"].is_null());
  r = RunBien({"list", "--node", node_});
  EXPECT_TRUE(Contains(r.out, "FIREARM")) << r.out;
  EXPECT_TRUE(Contains(r.out, "SN-1234")) << r.out;
  const auto show = nlohmann::json::parse(RunBien({"show", "--node", node_, "T1", "--json"}).out);
  EXPECT_EQ(show["firearm"], "SN-1234");
  EXPECT_TRUE(Contains(RunBien({"show", "--node", node_, "T1"}).out, "firearm   SN-1234"));
  EXPECT_TRUE(Contains(RunBien({"show", "--node", node_, "E2"}).out, "firearm   unknown"));

  // A different firearm for a stored exhibit is refused and changes nothing.
  const auto third = dir_ / "third.x3p";
  WriteX3p(SmallSurface(64, 48, 4), third);
  const StoreCounts before = CountsOf(node_);
  r = test_fire(third, "SN-9999");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(Contains(r.out + r.err, "firearm_ref 'SN-1234', not 'SN-9999'")) << r.out << r.err;
  EXPECT_EQ(CountsOf(node_).scans, before.scans);
  EXPECT_EQ(CountsOf(node_).audit, before.audit);
  // The same firearm again is fine; an unknown one is filled in.
  r = test_fire(third, "SN-1234");
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  const auto fourth = dir_ / "fourth.x3p";
  WriteX3p(SmallSurface(64, 48, 5), fourth);
  r = Ingest(fourth, "E2", {"--firearm", "SN-77"});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  list = listed();
  EXPECT_EQ(list["T1"]["firearm"], "SN-1234");
  EXPECT_EQ(list["E2"]["firearm"], "SN-77");
  r = Ingest(fourth, "E3", {"--firearm", ""});
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(Contains(r.err, "--firearm must not be empty")) << r.err;
  EXPECT_EQ(RunBien({"verify", "--node", node_}).code, 0);
}

TEST_F(CliTest, ManifestFirearmColumnAndRowsOfOneExhibit) {
  for (unsigned i = 0; i < 7; ++i) {
    WriteX3p(SmallSurface(64, 48, 10 + i), dir_ / ("s" + std::to_string(i) + ".x3p"));
  }
  {
    std::ofstream m(dir_ / "m.csv");
    m << "path,case,exhibit,kind,role,firearm\n";
    // M1: the firearm is given on its second row only: filled in.
    m << "s0.x3p,C,M1,cartridge_case,test_fire,\n";
    m << "s1.x3p,C,M1,cartridge_case,test_fire,SN-1\n";
    // M2: two rows disagree: the second is rejected, not silently dropped.
    m << "s2.x3p,C,M2,cartridge_case,test_fire,SN-2\n";
    m << "s3.x3p,C,M2,cartridge_case,test_fire,SN-3\n";
    // M3: a bad first row does not decide the exhibit's description.
    m << "s4.x3p,C,M3,casing,evidence,\n";
    m << "s5.x3p,C,M3,cartridge_case,test_fire,SN-4\n";
    // M4: a row of another role.
    m << "s6.x3p,C,M1,cartridge_case,evidence,SN-1\n";
  }
  const auto r =
      RunBien({"ingest", "--node", node_, "--manifest", (dir_ / "m.csv").string(), "--json"});
  EXPECT_EQ(r.code, 3) << r.out << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ingested"], 4) << j.dump(2);
  EXPECT_EQ(j["rejected"], 3) << j.dump(2);
  EXPECT_EQ(j["items"][3]["status"], "rejected");
  EXPECT_TRUE(Contains(j["items"][3]["reason"],
                       "exhibit C/M2: firearm 'SN-3' here, but 'SN-2' on an earlier row"))
      << j.dump(2);
  EXPECT_TRUE(Contains(j["items"][4]["reason"], "casing")) << j.dump(2);
  EXPECT_TRUE(Contains(j["items"][6]["reason"],
                       "exhibit C/M1: role 'evidence' here, but 'test_fire' on an earlier row"))
      << j.dump(2);
  const auto list = nlohmann::json::parse(RunBien({"list", "--node", node_, "--json"}).out);
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0]["exhibit"], "M1");
  EXPECT_EQ(list[0]["firearm"], "SN-1");
  EXPECT_EQ(list[0]["scans"], 2);
  EXPECT_EQ(list[1]["firearm"], "SN-2");
  EXPECT_EQ(list[1]["scans"], 1);
  EXPECT_EQ(list[2]["exhibit"], "M3");
  EXPECT_EQ(list[2]["role"], "test_fire");
  EXPECT_EQ(list[2]["firearm"], "SN-4");
  EXPECT_EQ(RunBien({"verify", "--node", node_}).code, 0);
}

TEST_F(CliTest, ManifestWithUnknownColumnFailsWhole) {
  std::ofstream(dir_ / "m.csv") << "path,case,exhibit,kind,role,calbre\n";
  const auto r = RunBien({"ingest", "--node", node_, "--manifest", (dir_ / "m.csv").string()});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "unknown column 'calbre'")) << r.err;
}

TEST_F(CliTest, SynthWritesReadableSetWithTruth) {
  const auto out = dir_ / "s";
  const auto r = RunBien({"synth", "--out", out.string(), "--firearms", "2", "--shots", "3",
                          "--seed", "5", "--size-px", "128"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::ifstream truth(out / "truth.csv");
  std::string line;
  int lines = 0;
  while (std::getline(truth, line)) ++lines;
  EXPECT_EQ(lines, 7);
  const Surface s = ReadX3p(out / "synth F02-3.x3p");
  EXPECT_EQ(s.width, 128);
  EXPECT_GT(s.NanShare(), 0.2);
  EXPECT_LT(s.NanShare(), 0.6);
}

TEST(CliDemo, RunsEndToEnd) {
  TempDir dir;
  const auto r = RunBien({"demo", "--single-node", "--dir", (dir / "demo").string()});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_TRUE(Contains(r.out, "ingested 6")) << r.out;
  EXPECT_TRUE(Contains(r.out, "duplicate")) << r.out;
  EXPECT_TRUE(Contains(r.out, "verified")) << r.out;
  // A second run replaces the earlier demo.
  EXPECT_EQ(RunBien({"demo", "--single-node", "--dir", (dir / "demo").string()}).code, 0);
}

TEST(CliUsage, HelpAndBadOptions) {
  auto r = RunBien({"--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_TRUE(Contains(r.out, "ingest")) << r.out;
  r = RunBien({"frobnicate"});
  EXPECT_EQ(r.code, 2);
}

}  // namespace
}  // namespace bien::testing
