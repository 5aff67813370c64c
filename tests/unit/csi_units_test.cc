// The CSI sidecar's pure parts, without a device or a driver: the device path template, the
// node ledger (files, encoding, atomic replace, corruption), the stage/publish decisions for
// every probe state against every ledger state, and the format gate's argument reading,
// judgement and search for the real tool.

#include <dirent.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <vector>

#include "csi-sidecar/decision.h"
#include "csi-sidecar/device_template.h"
#include "csi-sidecar/digest.h"
#include "csi-sidecar/format_gate.h"
#include "csi-sidecar/ledger.h"
#include "csi-sidecar/probe.h"
#include "tests/support/process.h"

namespace stateguard::csi {
namespace {

using stateguard::testing::makeTempDir;
using stateguard::testing::removeTree;
using stateguard::testing::writeText;
using ::testing::HasSubstr;
using ::testing::Not;

// ---------------------------------------------------------------------------------------------
// DeviceTemplate

DeviceTemplate mustParse(const std::string& text, std::vector<std::string> roots = {"/dev"}) {
  auto t = DeviceTemplate::parse(text, std::move(roots));
  EXPECT_TRUE(t.ok()) << text << ": " << (t.ok() ? "" : t.error());
  if (!t.ok()) return DeviceTemplate::parse("/dev/unused").value();
  return t.value();
}

std::string parseError(const std::string& text, std::vector<std::string> roots = {"/dev"}) {
  auto t = DeviceTemplate::parse(text, std::move(roots));
  EXPECT_FALSE(t.ok()) << text << " parsed";
  return t.ok() ? std::string() : t.error();
}

DeviceInputs volume(std::string id) {
  DeviceInputs in;
  in.volumeId = std::move(id);
  return in;
}

DeviceInputs publish(std::string key, std::string value) {
  DeviceInputs in;
  in.volumeId = "vol-1";
  in.publishContext[std::move(key)] = std::move(value);
  return in;
}

std::string resolveError(const DeviceTemplate& t, const DeviceInputs& in) {
  auto r = t.resolve(in);
  EXPECT_FALSE(r.ok()) << t.text() << " resolved to "
                       << (r.ok() && r.value() ? *r.value() : std::string("nullopt"));
  return r.ok() ? std::string() : r.error();
}

TEST(DeviceTemplate, LonghornVolumeId) {
  DeviceTemplate t = mustParse("/dev/longhorn/{volume_id}");
  auto r = t.resolve(volume("pvc-5e2f0b1c"));
  ASSERT_TRUE(r.ok()) << r.error();
  ASSERT_TRUE(r.value().has_value());
  EXPECT_EQ(*r.value(), "/dev/longhorn/pvc-5e2f0b1c");
  EXPECT_EQ(t.text(), "/dev/longhorn/{volume_id}");
  EXPECT_EQ(t.roots(), std::vector<std::string>{"/dev"});
}

TEST(DeviceTemplate, VolumeIdWithDotsInsideAComponentIsFine) {
  auto r = mustParse("/dev/longhorn/{volume_id}").resolve(volume("a..b.c"));
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r.value(), std::optional<std::string>("/dev/longhorn/a..b.c"));
}

TEST(DeviceTemplate, EbsPublishContextDevicePathMayBeAWholePath) {
  DeviceTemplate t = mustParse("{publish_context.devicePath}");
  auto r = t.resolve(publish("devicePath", "/dev/xvdba"));
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r.value(), std::optional<std::string>("/dev/xvdba"));
}

TEST(DeviceTemplate, VolumeContextKey) {
  DeviceTemplate t = mustParse("/dev/disk/by-id/{volume_context.serial}-{volume_id}");
  DeviceInputs in = volume("v7");
  in.volumeContext["serial"] = "nvme-Amazon_EBS_vol0abc";
  in.publishContext["serial"] = "wrong-map";
  auto r = t.resolve(in);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r.value(), std::optional<std::string>("/dev/disk/by-id/nvme-Amazon_EBS_vol0abc-v7"));
}

TEST(DeviceTemplate, MissingOrEmptyKeyIsNulloptNotAnError) {
  DeviceTemplate pub = mustParse("{publish_context.devicePath}");
  auto missing = pub.resolve(publish("otherKey", "/dev/xvdba"));
  ASSERT_TRUE(missing.ok()) << missing.error();
  EXPECT_FALSE(missing.value().has_value());

  auto empty = pub.resolve(publish("devicePath", ""));
  ASSERT_TRUE(empty.ok()) << empty.error();
  EXPECT_FALSE(empty.value().has_value());

  // The key is looked up in the named map only.
  DeviceTemplate ctx = mustParse("/dev/{volume_context.devicePath}");
  auto other = ctx.resolve(publish("devicePath", "xvdba"));
  ASSERT_TRUE(other.ok()) << other.error();
  EXPECT_FALSE(other.value().has_value());
}

TEST(DeviceTemplate, EmptyVolumeIdIsAnError) {
  EXPECT_THAT(resolveError(mustParse("/dev/longhorn/{volume_id}"), volume("")),
              HasSubstr("empty volume id"));
}

TEST(DeviceTemplate, ParseErrorsNameTheProblem) {
  EXPECT_THAT(parseError(""), HasSubstr("empty"));
  EXPECT_THAT(parseError("/dev/{volume}"), HasSubstr("unknown placeholder {volume}"));
  EXPECT_THAT(parseError("/dev/{}"), HasSubstr("unknown placeholder {}"));
  EXPECT_THAT(parseError("/dev/{publish_context.}"),
              HasSubstr("unknown placeholder {publish_context.}"));
  EXPECT_THAT(parseError("/dev/{volume_context.}"),
              HasSubstr("unknown placeholder {volume_context.}"));
  EXPECT_THAT(parseError("/dev/{VOLUME_ID}"), HasSubstr("unknown placeholder"));
  EXPECT_THAT(parseError("/dev/longhorn/{volume_id"), HasSubstr("never closed"));
  EXPECT_THAT(parseError("/dev/longhorn/volume_id}"), HasSubstr("'}' without '{'"));
  EXPECT_THAT(parseError("/dev/}{volume_id}"), HasSubstr("'}' without '{'"));
  EXPECT_THAT(parseError("dev/longhorn/{volume_id}"), HasSubstr("absolute path"));
  EXPECT_THAT(parseError("longhorn-{volume_id}"), HasSubstr("absolute path"));
  // Every error names the flag and the template.
  EXPECT_THAT(parseError("/dev/{volume}"), HasSubstr("--device-path-template \"/dev/{volume}\""));
}

TEST(DeviceTemplate, RootsMustBeCleanAbsolutePaths) {
  EXPECT_THAT(parseError("/dev/{volume_id}", {"dev"}), HasSubstr("--device-root \"dev\""));
  EXPECT_THAT(parseError("/dev/{volume_id}", {"/dev/"}), HasSubstr("--device-root \"/dev/\""));
  EXPECT_THAT(parseError("/dev/{volume_id}", {"/dev", "/srv/../etc"}),
              HasSubstr("--device-root \"/srv/../etc\""));
  // No roots means the default.
  EXPECT_EQ(mustParse("/dev/{volume_id}", {}).roots(), std::vector<std::string>{"/dev"});
}

TEST(DeviceTemplate, VolumeIdThatWouldEscapeIsAnError) {
  DeviceTemplate t = mustParse("/dev/longhorn/{volume_id}");
  EXPECT_THAT(resolveError(t, volume("a/b")), HasSubstr("contains '/'"));
  EXPECT_THAT(resolveError(t, volume("../../etc/shadow")), HasSubstr("'..'"));
  EXPECT_THAT(resolveError(t, volume("..")), HasSubstr("'..'"));
  EXPECT_THAT(resolveError(t, volume(".")), HasSubstr("'.'"));
  EXPECT_THAT(resolveError(t, volume(std::string("vol\0x", 5))), HasSubstr("control character"));
  EXPECT_THAT(resolveError(t, volume("vol\nx")), HasSubstr("control character"));
  EXPECT_THAT(resolveError(t, volume("vol\x7fx")), HasSubstr("control character"));
  // The error names what carried the bad value.
  EXPECT_THAT(resolveError(t, volume("a/b")), HasSubstr("volume id"));
}

TEST(DeviceTemplate, ContextValueAfterTheStartMayNotContainASlash) {
  DeviceTemplate t = mustParse("/dev/disk/by-id/{publish_context.serial}");
  EXPECT_THAT(resolveError(t, publish("serial", "../../../etc/shadow")),
              HasSubstr("publish_context.serial"));
  EXPECT_THAT(resolveError(t, publish("serial", "x/y")), HasSubstr("contains '/'"));
}

TEST(DeviceTemplate, ResolvedPathOutsideTheRootsIsAnErrorNamingTheRoots) {
  DeviceTemplate t = mustParse("{publish_context.devicePath}");
  std::string err = resolveError(t, publish("devicePath", "/etc/shadow"));
  EXPECT_THAT(err, HasSubstr("/etc/shadow"));
  EXPECT_THAT(err, HasSubstr("outside the device roots (/dev)"));

  // A component-wise check: /devil is not under /dev.
  EXPECT_THAT(resolveError(t, publish("devicePath", "/devil/sda")),
              HasSubstr("outside the device roots"));

  // ".." never reaches the root check.
  EXPECT_THAT(resolveError(t, publish("devicePath", "/dev/../etc")), HasSubstr("'..'"));
  EXPECT_THAT(resolveError(t, publish("devicePath", "/dev/..")), HasSubstr("'..'"));

  // Not clean: relative, doubled or trailing slash, "." component.
  EXPECT_THAT(resolveError(t, publish("devicePath", "xvdba")), HasSubstr("clean absolute path"));
  EXPECT_THAT(resolveError(t, publish("devicePath", "//dev/xvdba")),
              HasSubstr("clean absolute path"));
  EXPECT_THAT(resolveError(t, publish("devicePath", "/dev/xvdba/")),
              HasSubstr("clean absolute path"));
  EXPECT_THAT(resolveError(t, publish("devicePath", "/dev/./xvdba")),
              HasSubstr("clean absolute path"));

  // A literal template outside the roots fails at resolve time too.
  EXPECT_THAT(resolveError(mustParse("/tmp/{volume_id}"), volume("v1")),
              HasSubstr("outside the device roots (/dev)"));
}

TEST(DeviceTemplate, CustomDeviceRoots) {
  DeviceTemplate t = mustParse("{publish_context.devicePath}", {"/srv/devices", "/dev/mapper"});
  auto inside = t.resolve(publish("devicePath", "/srv/devices/vol-1"));
  ASSERT_TRUE(inside.ok()) << inside.error();
  EXPECT_EQ(inside.value(), std::optional<std::string>("/srv/devices/vol-1"));
  auto mapper = t.resolve(publish("devicePath", "/dev/mapper/crypt-1"));
  ASSERT_TRUE(mapper.ok()) << mapper.error();

  std::string err = resolveError(t, publish("devicePath", "/dev/xvdba"));
  EXPECT_THAT(err, HasSubstr("outside the device roots (/srv/devices, /dev/mapper)"));
  EXPECT_THAT(resolveError(t, publish("devicePath", "/srv/devicesX/vol-1")),
              HasSubstr("outside the device roots"));
}

TEST(DeviceTemplate, IsUnderIsComponentWise) {
  EXPECT_TRUE(isUnder("/dev", "/dev"));
  EXPECT_TRUE(isUnder("/dev/sda", "/dev"));
  EXPECT_TRUE(isUnder("/dev/disk/by-id/x", "/dev"));
  EXPECT_FALSE(isUnder("/devil", "/dev"));
  EXPECT_FALSE(isUnder("/devil/sda", "/dev"));
  EXPECT_FALSE(isUnder("/de", "/dev"));
  EXPECT_FALSE(isUnder("/etc/shadow", "/dev"));
  EXPECT_TRUE(isUnder("/anything", "/"));
  EXPECT_TRUE(isUnder("/dev/longhorn/v", "/dev/longhorn"));
  EXPECT_FALSE(isUnder("/dev/longhornX/v", "/dev/longhorn"));
}

TEST(DeviceTemplate, IsCleanAbsolutePath) {
  EXPECT_TRUE(isCleanAbsolutePath("/"));
  EXPECT_TRUE(isCleanAbsolutePath("/dev/sda"));
  EXPECT_TRUE(isCleanAbsolutePath("/dev/a..b"));
  EXPECT_FALSE(isCleanAbsolutePath(""));
  EXPECT_FALSE(isCleanAbsolutePath("dev/sda"));
  EXPECT_FALSE(isCleanAbsolutePath("/dev//sda"));
  EXPECT_FALSE(isCleanAbsolutePath("/dev/sda/"));
  EXPECT_FALSE(isCleanAbsolutePath("/dev/./sda"));
  EXPECT_FALSE(isCleanAbsolutePath("/dev/../etc"));
  EXPECT_FALSE(isCleanAbsolutePath("/.."));
  EXPECT_FALSE(isCleanAbsolutePath(std::string("/dev/s\0a", 8)));
}

// ---------------------------------------------------------------------------------------------
// Ledger

FsIdentity identity(std::string type, std::string uuid,
                    std::string firstSeen = "2026-01-01T00:00:00Z", std::string node = "node-a",
                    uint64_t size = 10737418240ULL) {
  FsIdentity id;
  id.type = std::move(type);
  id.uuid = std::move(uuid);
  id.sizeBytes = size;
  id.firstSeen = std::move(firstSeen);
  id.node = std::move(node);
  return id;
}

LedgerEntry entryFor(std::string volumeId, std::string device = "") {
  LedgerEntry e;
  e.volumeId = std::move(volumeId);
  e.pvName = "pvc-1";
  e.driver = "driver.longhorn.io";
  e.device = std::move(device);
  e.updated = "2026-01-02T00:00:00Z";
  return e;
}

Quarantine quarantine() {
  Quarantine q;
  q.since = "2026-01-03T04:05:06Z";
  q.node = "node-b";
  q.reason = "the device held another filesystem after NodeStageVolume";
  q.expected = identity("ext4", "1b2c3d4e-0000-4000-8000-000000000001");
  q.seen =
      identity("ext4", "9f8e7d6c-0000-4000-8000-000000000002", "2026-01-03T04:05:06Z", "node-b");
  return q;
}

std::vector<std::string> dirNames(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* de = ::readdir(d)) {
    std::string name = de->d_name;
    if (name != "." && name != "..") out.push_back(name);
  }
  ::closedir(d);
  return out;
}

class LedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = makeTempDir("sg-ledger");
    dir_ = tmp_ + "/ledger";
  }
  void TearDown() override { removeTree(tmp_); }

  void store(const Ledger& ledger, const LedgerEntry& e) {
    Status s = ledger.store(e);
    ASSERT_TRUE(s.ok()) << s.error();
  }

  std::string tmp_;
  std::string dir_;
};

TEST_F(LedgerTest, StoreLoadRoundTripKeepsEveryField) {
  Ledger ledger(dir_);
  LedgerEntry e = entryFor("vol-1", "/dev/longhorn/vol-1");
  e.identities = {identity("ext4", "1b2c"), identity("xfs", "", "2026-01-05T00:00:00Z", "node-c")};
  e.quarantine = quarantine();
  store(ledger, e);

  // store() creates the directory, private to root.
  struct stat st {};
  ASSERT_EQ(::stat(dir_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  auto loaded = ledger.load("vol-1");
  ASSERT_TRUE(loaded.ok()) << loaded.error();
  ASSERT_TRUE(loaded.value().has_value());
  EXPECT_EQ(toJson(*loaded.value()), toJson(e));
  EXPECT_EQ(loaded.value()->identities.size(), 2u);
  ASSERT_TRUE(loaded.value()->quarantine.has_value());
  EXPECT_EQ(loaded.value()->quarantine->seen.uuid, "9f8e7d6c-0000-4000-8000-000000000002");
  EXPECT_EQ(loaded.value()->current()->type, "xfs");

  // Storing again replaces the entry.
  e.quarantine.reset();
  e.identities.pop_back();
  store(ledger, e);
  auto again = ledger.load("vol-1");
  ASSERT_TRUE(again.ok()) << again.error();
  EXPECT_EQ(toJson(*again.value()), toJson(e));
}

TEST_F(LedgerTest, LoadOfAnUnknownVolumeIsNullopt) {
  Ledger ledger(dir_);
  auto none = ledger.load("never-seen");  // the directory does not even exist
  ASSERT_TRUE(none.ok()) << none.error();
  EXPECT_FALSE(none.value().has_value());
  ASSERT_TRUE(ledger.ensureDir().ok());
  none = ledger.load("never-seen");
  ASSERT_TRUE(none.ok()) << none.error();
  EXPECT_FALSE(none.value().has_value());
}

TEST_F(LedgerTest, EnsureDirRefusesAFile) {
  writeText(dir_, "not a directory");
  Status s = Ledger(dir_).ensureDir();
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("not a directory"));
}

TEST(LedgerFileName, EncodesEveryByteOutsideTheSafeSet) {
  EXPECT_EQ(Ledger::fileNameFor("pvc-1_a.B"), "vol-pvc-1_a.B.json");
  EXPECT_EQ(Ledger::fileNameFor("projects/p/zones/z/disks/d"),
            "vol-projects%2Fp%2Fzones%2Fz%2Fdisks%2Fd.json");
  EXPECT_EQ(Ledger::fileNameFor("a b%"), "vol-a%20b%25.json");
  EXPECT_EQ(Ledger::fileNameFor(".."), "vol-...json");
  EXPECT_EQ(Ledger::fileNameFor(std::string("a\0\xff", 3)), "vol-a%00%FF.json");
  // Ids that differ only by their encoding get different files.
  EXPECT_NE(Ledger::fileNameFor("a/b"), Ledger::fileNameFor("a%2Fb"));
  EXPECT_NE(Ledger::fileNameFor("a b"), Ledger::fileNameFor("a%20b"));
  // No file name has a slash in it.
  EXPECT_EQ(Ledger::fileNameFor("../../etc/passwd").find('/'), std::string::npos);
}

TEST(Digest, Sha256KnownAnswersAndShortenedIds) {
  EXPECT_EQ(sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // 56 bytes: the padding needs a second block.
  EXPECT_EQ(sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_EQ(shortenId("pvc-1"), "pvc-1");
  std::string longId(5 << 20, 'x');
  std::string s = shortenId(longId);
  EXPECT_LT(s.size(), 200u);
  EXPECT_THAT(s, HasSubstr("(5242880 bytes, sha256 " + sha256Hex(longId).substr(0, 16) + ")"));
  // Never cut inside a UTF-8 character.
  std::string utf8 = "a";
  for (int i = 0; i < 100; ++i) utf8 += "\xc3\xa9";
  EXPECT_THAT(shortenId(utf8), HasSubstr("\xc3\xa9... (201 bytes"));
}

TEST(LedgerFileName, AnyIdFitsAFileName) {
  for (size_t n : {150, 157, 200, 255, 300, 1000, 100000}) {
    std::string id(n, 'a');
    std::string name = Ledger::fileNameFor(id);
    EXPECT_LE(name.size(), 200u) << n;
    EXPECT_EQ(name.rfind("vol-", 0), 0u);
    // Ids differing only in their last byte get different names.
    std::string other = id;
    other.back() = 'b';
    EXPECT_NE(Ledger::fileNameFor(other), name) << n;
  }
  // Escapes are never cut in half before the digest.
  std::string slashes(300, '/');
  EXPECT_THAT(Ledger::fileNameFor(slashes),
              ::testing::MatchesRegex("vol-(%2F)+~[0-9a-f]{64}\\.json"));
}

TEST_F(LedgerTest, LongIdsRoundTripAndOldLongNamesAreStillRead) {
  Ledger ledger(dir_);
  for (size_t n : {300, 4096, 1 << 20}) {
    std::string id = "projects/p/" + std::string(n, 'd');
    store(ledger, entryFor(id));
    auto loaded = ledger.load(id);
    ASSERT_TRUE(loaded.ok()) << n << ": " << loaded.error().substr(0, 300);
    ASSERT_TRUE(loaded.value().has_value()) << n;
    EXPECT_EQ(loaded.value()->volumeId, id);
  }
  // A 200-byte id: earlier releases wrote it under its escaped name (under 255 bytes).
  const std::string id(200, 'k');
  const std::string legacy = Ledger::legacyFileNameFor(id);
  ASSERT_NE(legacy, Ledger::fileNameFor(id));
  writeText(dir_ + "/" + legacy, toJson(entryFor(id)).dump());
  auto old = ledger.load(id);
  ASSERT_TRUE(old.ok()) << old.error();
  ASSERT_TRUE(old.value().has_value()) << "an entry under the old name was not read";
  EXPECT_EQ(old.value()->volumeId, id);
  auto listed = ledger.list();
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed.value().size(), 4u);
  // Storing moves it to the new name; removing removes both.
  store(ledger, *old.value());
  EXPECT_NE(::access((dir_ + "/" + legacy).c_str(), F_OK), 0);
  EXPECT_EQ(::access((dir_ + "/" + Ledger::fileNameFor(id)).c_str(), F_OK), 0);
  writeText(dir_ + "/" + legacy, toJson(entryFor(id)).dump());
  auto removed = ledger.remove(id);
  ASSERT_TRUE(removed.ok() && removed.value());
  EXPECT_NE(::access((dir_ + "/" + legacy).c_str(), F_OK), 0);
  auto gone = ledger.load(id);
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone.value().has_value());
}

TEST_F(LedgerTest, OddIdsRoundTripWithoutCollisions) {
  Ledger ledger(dir_);
  const std::vector<std::string> ids = {
      "projects/p/zones/z/disks/d", "a b%", "a/b", "a%2Fb", "a%252Fb", "..", "."};
  for (const std::string& id : ids) store(ledger, entryFor(id));
  EXPECT_EQ(dirNames(dir_).size(), ids.size());
  for (const std::string& id : ids) {
    auto loaded = ledger.load(id);
    ASSERT_TRUE(loaded.ok()) << id << ": " << loaded.error();
    ASSERT_TRUE(loaded.value().has_value()) << id;
    EXPECT_EQ(loaded.value()->volumeId, id);
  }
  // The files stay inside the ledger directory.
  for (const std::string& name : dirNames(dir_)) EXPECT_EQ(name.rfind("vol-", 0), 0u) << name;
  EXPECT_EQ(dirNames(tmp_), std::vector<std::string>{"ledger"});
}

TEST_F(LedgerTest, StoreLeavesNoTemporaryFile) {
  Ledger ledger(dir_);
  for (int i = 0; i < 3; ++i) store(ledger, entryFor("vol-" + std::to_string(i)));
  store(ledger, entryFor("vol-0"));
  for (const std::string& name : dirNames(dir_)) {
    EXPECT_EQ(name.find(".tmp"), std::string::npos) << name;
  }
  EXPECT_EQ(dirNames(dir_).size(), 3u);
}

TEST_F(LedgerTest, GarbageTemporaryFileFromACrashDoesNotBreakLoadOrList) {
  Ledger ledger(dir_);
  store(ledger, entryFor("vol-1"));
  // What a crash between write and rename leaves behind: half an entry.
  writeText(dir_ + "/" + Ledger::fileNameFor("vol-1") + ".tmp.99999", "{\"volumeId\": \"vol-");
  writeText(dir_ + "/" + Ledger::fileNameFor("vol-2") + ".tmp.12345", "\x01\x02garbage");

  auto loaded = ledger.load("vol-1");
  ASSERT_TRUE(loaded.ok()) << loaded.error();
  ASSERT_TRUE(loaded.value().has_value());
  EXPECT_EQ(loaded.value()->volumeId, "vol-1");
  auto none = ledger.load("vol-2");
  ASSERT_TRUE(none.ok()) << none.error();
  EXPECT_FALSE(none.value().has_value());

  auto all = ledger.list();
  ASSERT_TRUE(all.ok()) << all.error();
  ASSERT_EQ(all.value().size(), 1u);
  EXPECT_EQ(all.value()[0].volumeId, "vol-1");

  // A stale temporary file of this very pid (a crashed process whose pid was reused) does not
  // stop a store, and temporary names never start with "vol-": list() skips them.
  const std::string stale = dir_ + "/.tmp-" + std::to_string(::getpid()) + "-0.json";
  writeText(stale, "garbage from a crash");
  store(ledger, entryFor("vol-1", "/dev/sdz"));
  auto listed = ledger.list();
  ASSERT_TRUE(listed.ok()) << listed.error();
  EXPECT_EQ(listed.value().size(), 1u);
  auto after = ledger.load("vol-1");
  ASSERT_TRUE(after.ok()) << after.error();
  EXPECT_EQ(after.value()->device, "/dev/sdz");
}

TEST_F(LedgerTest, CorruptFileIsAnErrorThatNamesTheFile) {
  Ledger ledger(dir_);
  ASSERT_TRUE(ledger.ensureDir().ok());
  const std::string path = dir_ + "/" + Ledger::fileNameFor("vol-1");
  for (const std::string& text :
       {std::string("{\"volumeId\": \"vol-1\", "), std::string(""), std::string("\x00\x00\x00", 3),
        std::string("[1, 2]"), std::string("\"vol-1\""), std::string("{}"),
        std::string("{\"volumeId\": \"vol-1\", \"identities\": {}}"),
        std::string("{\"volumeId\": \"vol-1\", \"identities\": [{}]}"),
        std::string("{\"volumeId\": \"vol-1\", \"identities\": "
                    "[{\"type\": \"ext4\", \"sizeBytes\": -1}]}"),
        std::string("{\"volumeId\": \"vol-1\", \"quarantine\": 3}")}) {
    writeText(path, text);
    auto loaded = ledger.load("vol-1");
    ASSERT_FALSE(loaded.ok()) << "corrupt file read as "
                              << (loaded.value() ? "an entry" : "no entry") << ": " << text;
    EXPECT_THAT(loaded.error(), HasSubstr(path)) << text;
  }
  writeText(path, "{not json");
  EXPECT_THAT(ledger.load("vol-1").error(), HasSubstr("not valid JSON"));
}

TEST_F(LedgerTest, FileOfAnotherVolumeIsAnError) {
  Ledger ledger(dir_);
  ASSERT_TRUE(ledger.ensureDir().ok());
  LedgerEntry other = entryFor("vol-2");
  writeText(dir_ + "/" + Ledger::fileNameFor("vol-1"), toJson(other).dump());
  auto loaded = ledger.load("vol-1");
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.error(), HasSubstr("belongs to volume vol-2"));
  EXPECT_THAT(loaded.error(), HasSubstr(Ledger::fileNameFor("vol-1")));
}

TEST_F(LedgerTest, ListIsSortedAndFailsOnACorruptFile) {
  Ledger ledger(dir_);
  auto empty = ledger.list();  // no directory yet
  ASSERT_TRUE(empty.ok()) << empty.error();
  EXPECT_TRUE(empty.value().empty());

  for (const char* id : {"vol-c", "vol-a", "vol-b"}) store(ledger, entryFor(id));
  writeText(dir_ + "/notes.txt", "not an entry");  // other files are not entries
  auto all = ledger.list();
  ASSERT_TRUE(all.ok()) << all.error();
  ASSERT_EQ(all.value().size(), 3u);
  EXPECT_EQ(all.value()[0].volumeId, "vol-a");
  EXPECT_EQ(all.value()[1].volumeId, "vol-b");
  EXPECT_EQ(all.value()[2].volumeId, "vol-c");

  const std::string bad = dir_ + "/" + Ledger::fileNameFor("vol-bad");
  writeText(bad, "{");
  auto broken = ledger.list();
  ASSERT_FALSE(broken.ok());
  EXPECT_THAT(broken.error(), HasSubstr(bad));
}

TEST_F(LedgerTest, FindByDeviceMatchesPathOrTheSameFileThroughALink) {
  Ledger ledger(dir_);
  const std::string devDir = tmp_ + "/dev";
  ASSERT_EQ(::mkdir(devDir.c_str(), 0755), 0);
  const std::string disk = devDir + "/disk1";
  const std::string otherDisk = devDir + "/disk2";
  writeText(disk, "");
  writeText(otherDisk, "");
  const std::string link = devDir + "/by-id-disk1";
  ASSERT_EQ(::symlink("disk1", link.c_str()), 0);

  store(ledger, entryFor("by-path", disk));
  store(ledger, entryFor("by-link", link));
  store(ledger, entryFor("other", otherDisk));
  store(ledger, entryFor("no-device", ""));
  store(ledger, entryFor("missing", "/dev/stateguard-test-missing-device"));

  auto ids = [&](const std::string& device) {
    std::vector<std::string> out;
    auto found = ledger.findByDevice(device);
    EXPECT_TRUE(found.ok()) << (found.ok() ? "" : found.error());
    if (found.ok()) {
      for (const LedgerEntry& e : found.value()) out.push_back(e.volumeId);
    }
    return out;
  };
  EXPECT_EQ(ids(disk), (std::vector<std::string>{"by-link", "by-path"}));
  EXPECT_EQ(ids(link), (std::vector<std::string>{"by-link", "by-path"}));
  EXPECT_EQ(ids(devDir + "/../dev/disk1"), (std::vector<std::string>{"by-link", "by-path"}));
  EXPECT_EQ(ids(otherDisk), std::vector<std::string>{"other"});
  // A device that does not exist (yet) matches by path.
  EXPECT_EQ(ids("/dev/stateguard-test-missing-device"), std::vector<std::string>{"missing"});
  // Entries without a device never match, not even an empty path.
  EXPECT_TRUE(ids("").empty());
  EXPECT_TRUE(ids(devDir + "/disk3").empty());

  writeText(dir_ + "/" + Ledger::fileNameFor("corrupt"), "]");
  EXPECT_FALSE(ledger.findByDevice(disk).ok());
}

TEST_F(LedgerTest, Remove) {
  Ledger ledger(dir_);
  store(ledger, entryFor("vol-1"));
  store(ledger, entryFor("vol-2"));
  auto removed = ledger.remove("vol-1");
  ASSERT_TRUE(removed.ok()) << removed.error();
  EXPECT_TRUE(removed.value());
  auto again = ledger.remove("vol-1");
  ASSERT_TRUE(again.ok()) << again.error();
  EXPECT_FALSE(again.value());
  auto loaded = ledger.load("vol-1");
  ASSERT_TRUE(loaded.ok()) << loaded.error();
  EXPECT_FALSE(loaded.value().has_value());
  EXPECT_TRUE(ledger.load("vol-2").value().has_value());
}

TEST(LedgerEntry, RecordDoesNotDuplicateTheCurrentIdentity) {
  LedgerEntry e = entryFor("vol-1");
  EXPECT_EQ(e.current(), nullptr);
  EXPECT_TRUE(e.record(identity("ext4", "u1")));
  // Same type and UUID (grown, seen later elsewhere): the same filesystem.
  EXPECT_FALSE(e.record(identity("ext4", "u1", "2026-02-01T00:00:00Z", "node-z", 1ULL << 40)));
  ASSERT_EQ(e.identities.size(), 1u);
  EXPECT_EQ(e.current()->node, "node-a");
  EXPECT_TRUE(e.record(identity("ext4", "u2")));
  EXPECT_TRUE(e.record(identity("xfs", "u2")));  // same UUID, another type
  ASSERT_EQ(e.identities.size(), 3u);
  EXPECT_EQ(e.current()->type, "xfs");
}

TEST(LedgerEntry, MergeUnionsIdentitiesInFirstSeenOrder) {
  LedgerEntry a = entryFor("vol-1");
  a.pvName = "";
  a.device = "/dev/sda";
  a.identities = {identity("ext4", "u1", "2026-01-01T00:00:00Z"),
                  identity("ext4", "u3", "2026-03-01T00:00:00Z")};
  LedgerEntry b = entryFor("vol-1");
  b.pvName = "pvc-9";
  b.device = "/dev/sdb";
  b.updated = "2026-04-01T00:00:00Z";
  b.identities = {identity("ext4", "u2", "2026-02-01T00:00:00Z"),
                  identity("ext4", "u1", "2026-01-01T00:00:00Z", "node-b")};

  LedgerEntry m = mergeEntries(a, b);
  ASSERT_EQ(m.identities.size(), 3u);
  EXPECT_EQ(m.identities[0].uuid, "u1");
  EXPECT_EQ(m.identities[0].node, "node-a");  // a's copy of u1 is kept
  EXPECT_EQ(m.identities[1].uuid, "u2");
  EXPECT_EQ(m.identities[2].uuid, "u3");
  EXPECT_EQ(m.current()->uuid, "u3");
  EXPECT_EQ(m.pvName, "pvc-9");
  EXPECT_EQ(m.device, "/dev/sda");
  EXPECT_EQ(m.updated, "2026-04-01T00:00:00Z");
  EXPECT_FALSE(m.quarantine.has_value());

  // The order of the arguments does not change the history.
  LedgerEntry n = mergeEntries(b, a);
  ASSERT_EQ(n.identities.size(), 3u);
  EXPECT_EQ(n.identities[0].uuid, "u1");
  EXPECT_EQ(n.identities[2].uuid, "u3");
}

TEST(LedgerEntry, MergeKeepsAQuarantineFromEitherSide) {
  LedgerEntry plain = entryFor("vol-1");
  plain.identities = {identity("ext4", "u1")};
  LedgerEntry held = entryFor("vol-1");
  held.quarantine = quarantine();

  LedgerEntry left = mergeEntries(held, plain);
  ASSERT_TRUE(left.quarantine.has_value());
  EXPECT_EQ(left.quarantine->since, "2026-01-03T04:05:06Z");
  LedgerEntry right = mergeEntries(plain, held);
  ASSERT_TRUE(right.quarantine.has_value());
  EXPECT_EQ(right.quarantine->node, "node-b");
  EXPECT_FALSE(mergeEntries(plain, plain).quarantine.has_value());
}

TEST(LedgerEntry, FromJsonNamesTheSource) {
  auto bad = ledgerEntryFromJson(nlohmann::json::array(), "annotation of PersistentVolume pv-1");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error(), HasSubstr("annotation of PersistentVolume pv-1"));
  auto noId = ledgerEntryFromJson(nlohmann::json::object(), "x");
  ASSERT_FALSE(noId.ok());
  EXPECT_THAT(noId.error(), HasSubstr("without volumeId"));
  auto badIdentity = ledgerEntryFromJson(
      nlohmann::json::parse(
          R"({"volumeId": "v", "identities": [{"type": "ext4"}, {"uuid": "u"}]})"),
      "x");
  ASSERT_FALSE(badIdentity.ok());
  EXPECT_THAT(badIdentity.error(), HasSubstr("identities[1]"));
  auto nullQuarantine =
      ledgerEntryFromJson(nlohmann::json{{"volumeId", "v"}, {"quarantine", nullptr}}, "x");
  ASSERT_TRUE(nullQuarantine.ok()) << nullQuarantine.error();
  EXPECT_FALSE(nullQuarantine->quarantine.has_value());
}

// ---------------------------------------------------------------------------------------------
// Decisions

constexpr char kHeldUuid[] = "1b2c3d4e-aaaa-4bbb-8ccc-000000000001";
constexpr char kOtherUuid[] = "5e6f7a8b-dddd-4eee-8fff-000000000002";

VolumeRef ref(std::string method = "NodeStageVolume") {
  return VolumeRef{std::move(method), "vol-1", "pvc-1", "node-a", "/dev/longhorn/vol-1"};
}

ProbeResult probeOf(ProbeState state) {
  ProbeResult p;
  p.state = state;
  p.path = "/dev/longhorn/vol-1";
  p.sizeBytes = 10737418240ULL;
  switch (state) {
    case ProbeState::kFilesystem:
      p.type = "ext4";
      p.usage = "filesystem";
      p.uuid = kHeldUuid;
      break;
    case ProbeState::kBlank:
      p.sampledRegions = 64;
      break;
    case ProbeState::kDataEvidence:
      p.evidence.push_back(Evidence{"ext-backup-superblock", 134217728, "ext4", kHeldUuid,
                                    "ext4 backup superblock of group 1"});
      break;
    case ProbeState::kUnknown:
      p.error = "open /dev/longhorn/vol-1: No such device or address";
      break;
  }
  return p;
}

enum class LedgerKind { kNone, kEmptyEntry, kIdentity, kQuarantined };

std::optional<LedgerEntry> ledgerOf(LedgerKind kind) {
  if (kind == LedgerKind::kNone) return std::nullopt;
  LedgerEntry e = entryFor("vol-1", "/dev/longhorn/vol-1");
  if (kind != LedgerKind::kEmptyEntry) {
    e.identities.push_back(identity("ext4", kHeldUuid, "2026-01-01T00:00:00Z", "node-first"));
  }
  if (kind == LedgerKind::kQuarantined) e.quarantine = quarantine();
  return e;
}

struct StageCase {
  std::string name;
  std::optional<ProbeState> state;  ///< nullopt: no device resolved
  bool ambivalent;
  LedgerKind ledger;
  bool allow;
  std::string reason;
  std::vector<std::string> inMessage;
};

std::vector<StageCase> stageCases() {
  using S = ProbeState;
  using L = LedgerKind;
  const std::string dev = "/dev/longhorn/vol-1";
  const std::string clear = "clear-quarantine --volume vol-1";
  std::vector<StageCase> cases = {
      {"NoDeviceNoLedger", std::nullopt, false, L::kNone, true, "no-device", {}},
      {"NoDeviceHeld", std::nullopt, false, L::kIdentity, true, "no-device", {}},
      {"SignatureNoLedger", S::kFilesystem, false, L::kNone, true, "signature-found", {"ext4"}},
      {"SignatureHeld", S::kFilesystem, false, L::kIdentity, true, "signature-found", {}},
      {"SignatureEmptyEntry", S::kFilesystem, false, L::kEmptyEntry, true, "signature-found", {}},
      {"UnknownNoLedger",
       S::kUnknown,
       false,
       L::kNone,
       false,
       "device-unknown",
       {dev, "No such device or address", "never treated as blank"}},
      {"UnknownHeld",
       S::kUnknown,
       false,
       L::kIdentity,
       false,
       "device-unknown",
       {"No such device or address", kHeldUuid, "node-first"}},
      {"AmbivalentNoLedger",
       S::kUnknown,
       true,
       L::kNone,
       false,
       "ambivalent",
       {"conflicting signatures", "wipefs --no-act " + dev}},
      {"AmbivalentHeld", S::kUnknown, true, L::kIdentity, false, "ambivalent", {kHeldUuid}},
      {"DataNoLedger",
       S::kDataEvidence,
       false,
       L::kNone,
       false,
       "data-evidence",
       {"ext4 backup superblock of group 1", dev}},
      {"DataHeld",
       S::kDataEvidence,
       false,
       L::kIdentity,
       false,
       "data-evidence",
       {"ext4 backup superblock of group 1", "node-first"}},
      {"DataEmptyEntry",
       S::kDataEvidence,
       false,
       L::kEmptyEntry,
       false,
       "data-evidence",
       {"ext4 backup superblock of group 1"}},
      {"BlankNoLedger", S::kBlank, false, L::kNone, true, "blank-first-format", {}},
      {"BlankEmptyEntry", S::kBlank, false, L::kEmptyEntry, true, "blank-first-format", {}},
      {"BlankHeld",
       S::kBlank,
       false,
       L::kIdentity,
       false,
       "ledger-held-filesystem",
       {kHeldUuid, "node-first", "reads as blank", "forget --volume vol-1", dev}},
  };
  // A quarantined volume is refused whatever the device shows.
  const std::vector<std::pair<std::string, std::optional<S>>> states = {
      {"NoDevice", std::nullopt},
      {"Signature", S::kFilesystem},
      {"Blank", S::kBlank},
      {"Data", S::kDataEvidence},
      {"Unknown", S::kUnknown}};
  for (const auto& [name, state] : states) {
    cases.push_back({name + "Quarantined",
                     state,
                     false,
                     L::kQuarantined,
                     false,
                     "quarantined",
                     {clear, "2026-01-03T04:05:06Z", "9f8e7d6c"}});
  }
  return cases;
}

class BeforeStage : public ::testing::TestWithParam<StageCase> {};

TEST_P(BeforeStage, Decides) {
  const StageCase& c = GetParam();
  std::optional<ProbeResult> probe;
  if (c.state) {
    probe = probeOf(*c.state);
    probe->ambivalent = c.ambivalent;
  }
  VolumeRef r = ref();
  if (!probe) r.device = "";
  Decision d = decideBeforeStage(r, probe, ledgerOf(c.ledger));
  EXPECT_EQ(d.allow, c.allow) << d.message;
  EXPECT_EQ(d.reason, c.reason) << d.message;
  for (const std::string& s : c.inMessage) EXPECT_THAT(d.message, HasSubstr(s));
  if (!d.allow) {
    EXPECT_EQ(d.grpcCode, 9);
    EXPECT_THAT(d.message, HasSubstr("stateguard refused NodeStageVolume of PersistentVolume "
                                     "pvc-1 (volume vol-1) on node node-a"));
  }
}

INSTANTIATE_TEST_SUITE_P(EveryProbeStateAndLedger, BeforeStage, ::testing::ValuesIn(stageCases()),
                         [](const ::testing::TestParamInfo<StageCase>& param) {
                           return param.param.name;
                         });

TEST(Decision, DataEvidenceListsThreeFindingsAndCountsTheRest) {
  ProbeResult p = probeOf(ProbeState::kDataEvidence);
  for (int i = 2; i <= 5; ++i) {
    p.evidence.push_back(Evidence{"ext-backup-superblock", 0, "ext4", "",
                                  "ext4 backup superblock of group " + std::to_string(i)});
  }
  Decision d = decideBeforeStage(ref(), p, std::nullopt);
  EXPECT_FALSE(d.allow);
  EXPECT_THAT(d.message, HasSubstr("ext4 backup superblock of group 2, at byte 0; ext4 backup "
                                   "superblock of group 3, at byte 0 and 2 more"));
  EXPECT_THAT(d.message, Not(HasSubstr("group 4")));
}

TEST(Decision, VolumeWithoutPvNameIsDescribedByItsId) {
  VolumeRef r = ref();
  r.pvName = "";
  EXPECT_EQ(describeVolume(r), "volume vol-1");
  EXPECT_EQ(describeVolume(ref()), "PersistentVolume pvc-1 (volume vol-1)");
  Decision d = decideBeforeStage(r, probeOf(ProbeState::kUnknown), std::nullopt);
  EXPECT_THAT(d.message, HasSubstr("NodeStageVolume of volume vol-1 on node node-a"));
}

TEST(Decision, BeforePublishRefusesOnlyAQuarantinedVolume) {
  for (LedgerKind k : {LedgerKind::kNone, LedgerKind::kEmptyEntry, LedgerKind::kIdentity}) {
    Decision d = decideBeforePublish(ref("NodePublishVolume"), ledgerOf(k));
    EXPECT_TRUE(d.allow) << d.message;
  }
  Decision q = decideBeforePublish(ref("NodePublishVolume"), ledgerOf(LedgerKind::kQuarantined));
  EXPECT_FALSE(q.allow);
  EXPECT_EQ(q.reason, "quarantined");
  EXPECT_EQ(q.grpcCode, 9);
  EXPECT_THAT(q.message, HasSubstr("refused NodePublishVolume"));
  EXPECT_THAT(q.message, HasSubstr("the device held another filesystem after NodeStageVolume"));
  EXPECT_THAT(q.message, HasSubstr("1b2c3d4e"));  // expected identity
  EXPECT_THAT(q.message, HasSubstr("9f8e7d6c"));  // seen identity
  EXPECT_THAT(q.message, HasSubstr("clear-quarantine --volume vol-1"));
}

TEST(Decision, AfterStageRecordsTheFirstIdentity) {
  ProbeResult after = probeOf(ProbeState::kFilesystem);
  for (LedgerKind k : {LedgerKind::kNone, LedgerKind::kEmptyEntry}) {
    PostStage p = decideAfterStage(ref(), after, ledgerOf(k), "2026-05-01T00:00:00Z");
    EXPECT_EQ(p.action, PostStage::kRecord) << p.message;
    EXPECT_EQ(p.seen.type, "ext4");
    EXPECT_EQ(p.seen.uuid, kHeldUuid);
    EXPECT_EQ(p.seen.sizeBytes, 10737418240ULL);
    EXPECT_EQ(p.seen.firstSeen, "2026-05-01T00:00:00Z");
    EXPECT_EQ(p.seen.node, "node-a");
  }
}

TEST(Decision, AfterStageSameIdentityRecords) {
  ProbeResult after = probeOf(ProbeState::kFilesystem);
  after.sizeBytes *= 2;  // an expansion keeps the identity
  PostStage p =
      decideAfterStage(ref(), after, ledgerOf(LedgerKind::kIdentity), "2026-05-01T00:00:00Z");
  EXPECT_EQ(p.action, PostStage::kRecord) << p.message;
  EXPECT_EQ(p.seen.uuid, kHeldUuid);
}

TEST(Decision, AfterStageAnotherFilesystemQuarantines) {
  ProbeResult after = probeOf(ProbeState::kFilesystem);
  after.uuid = kOtherUuid;
  PostStage p =
      decideAfterStage(ref(), after, ledgerOf(LedgerKind::kIdentity), "2026-05-01T00:00:00Z");
  ASSERT_EQ(p.action, PostStage::kQuarantine);
  EXPECT_EQ(p.seen.uuid, kOtherUuid);
  EXPECT_THAT(p.message, HasSubstr(kOtherUuid));
  EXPECT_THAT(p.message, HasSubstr(kHeldUuid));
  EXPECT_THAT(p.message, HasSubstr("PersistentVolume pvc-1 (volume vol-1) on node node-a"));
  EXPECT_THAT(p.message, HasSubstr("clear-quarantine --volume vol-1"));

  // Same UUID, another type: also another filesystem.
  ProbeResult xfs = probeOf(ProbeState::kFilesystem);
  xfs.type = "xfs";
  EXPECT_EQ(
      decideAfterStage(ref(), xfs, ledgerOf(LedgerKind::kIdentity), "2026-05-01T00:00:00Z").action,
      PostStage::kQuarantine);
}

TEST(Decision, FirstStageComparesWithWhatTheDeviceHeldJustBefore) {
  const std::string now = "2026-05-01T00:00:00Z";
  const ProbeResult before = probeOf(ProbeState::kFilesystem);  // ext4 kHeldUuid
  // Another type after the driver's call: formatted (longhorn#14042: xfs over ext4).
  ProbeResult xfs = probeOf(ProbeState::kFilesystem);
  xfs.type = "xfs";
  xfs.uuid = kOtherUuid;
  for (LedgerKind k : {LedgerKind::kNone, LedgerKind::kEmptyEntry}) {
    PostStage p = decideAfterStage(ref(), xfs, ledgerOf(k), now, &before);
    ASSERT_EQ(p.action, PostStage::kQuarantine) << p.message;
    EXPECT_EQ(p.was.type, "ext4");
    EXPECT_EQ(p.was.uuid, kHeldUuid);
    EXPECT_EQ(p.seen.type, "xfs");
    EXPECT_THAT(p.message, HasSubstr("just before the call it held ext4 filesystem UUID " +
                                     std::string(kHeldUuid)));
    EXPECT_THAT(p.message, HasSubstr("clear-quarantine --volume vol-1"));
  }
  // The same type with a new UUID: a clone's regenerated UUID, or a format; noted, recorded.
  ProbeResult renamed = probeOf(ProbeState::kFilesystem);
  renamed.uuid = kOtherUuid;
  PostStage n = decideAfterStage(ref(), renamed, std::nullopt, now, &before);
  EXPECT_EQ(n.action, PostStage::kRecord);
  EXPECT_EQ(n.seen.uuid, kOtherUuid);
  EXPECT_THAT(n.note, HasSubstr("UUID changed from " + std::string(kHeldUuid) + " to " +
                                std::string(kOtherUuid)));
  EXPECT_THAT(n.note, HasSubstr("stateguard-format-gate"));
  // Unchanged, or blank before (a first format): recorded without a note.
  for (ProbeState s : {ProbeState::kFilesystem, ProbeState::kBlank, ProbeState::kUnknown}) {
    const ProbeResult b = probeOf(s);
    PostStage p = decideAfterStage(ref(), probeOf(ProbeState::kFilesystem), std::nullopt, now, &b);
    EXPECT_EQ(p.action, PostStage::kRecord) << toString(s);
    EXPECT_TRUE(p.note.empty()) << p.note;
  }
  // With history, the ledger decides, not the probe before the call.
  EXPECT_EQ(decideAfterStage(ref(), probeOf(ProbeState::kFilesystem),
                             ledgerOf(LedgerKind::kIdentity), now, &xfs)
                .action,
            PostStage::kRecord);
}

TEST(Decision, AfterStageWithoutAFilesystemSkips) {
  for (ProbeState s : {ProbeState::kBlank, ProbeState::kDataEvidence, ProbeState::kUnknown}) {
    for (LedgerKind k : {LedgerKind::kNone, LedgerKind::kIdentity}) {
      PostStage p = decideAfterStage(ref(), probeOf(s), ledgerOf(k), "2026-05-01T00:00:00Z");
      EXPECT_EQ(p.action, PostStage::kSkip) << toString(s);
      EXPECT_THAT(p.message, HasSubstr("nothing recorded"));
      EXPECT_TRUE(p.seen.type.empty());
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Format gate: which devices a command formats

std::vector<std::string> devices(const std::string& tool, const std::vector<std::string>& args) {
  auto r = targetDevices(tool, args);
  EXPECT_TRUE(r.ok()) << tool << ": " << (r.ok() ? "" : r.error());
  return r.ok() ? r.value() : std::vector<std::string>{"<error>"};
}

std::string devicesError(const std::string& tool, const std::vector<std::string>& args) {
  auto r = targetDevices(tool, args);
  EXPECT_FALSE(r.ok()) << tool << " read devices from a command it should not read";
  return r.ok() ? std::string() : r.error();
}

using Devs = std::vector<std::string>;

TEST(TargetDevices, Mke2fs) {
  for (const char* tool : {"mkfs.ext4", "mkfs.ext3", "mkfs.ext2"}) {
    // What mount-utils runs.
    EXPECT_EQ(devices(tool, {"-F", "-m0", "/dev/x"}), Devs{"/dev/x"}) << tool;
    EXPECT_EQ(devices(tool, {"-b", "4096", "-L", "lbl", "/dev/x", "1000"}), Devs{"/dev/x"});
    EXPECT_EQ(devices(tool, {"-Fq", "-E", "lazy_itable_init=1", "/dev/x"}), Devs{"/dev/x"});
    EXPECT_EQ(devices(tool, {"-Fqb4096", "/dev/x"}), Devs{"/dev/x"});
    EXPECT_EQ(devices(tool, {"--", "/dev/x"}), Devs{"/dev/x"});
    EXPECT_EQ(devices(tool, {"/dev/x", "-F", "-m", "0"}), Devs{"/dev/x"});  // getopt permutes
    EXPECT_EQ(devices(tool, {"-V"}), Devs{});
    EXPECT_EQ(devices(tool, {}), Devs{});
  }
}

TEST(TargetDevices, MkfsXfs) {
  EXPECT_EQ(devices("mkfs.xfs", {"-f", "/dev/x"}), Devs{"/dev/x"});
  EXPECT_EQ(devices("mkfs.xfs", {"-f", "-L", "name", "-d", "agcount=4", "/dev/x"}), Devs{"/dev/x"});
  EXPECT_EQ(devices("mkfs.xfs", {"-V"}), Devs{});
}

TEST(TargetDevices, MkfsBtrfsFormatsEveryOperand) {
  EXPECT_EQ(devices("mkfs.btrfs", {"/dev/a", "/dev/b"}), (Devs{"/dev/a", "/dev/b"}));
  EXPECT_EQ(devices("mkfs.btrfs", {"--label", "x", "-f", "/dev/a", "/dev/b"}),
            (Devs{"/dev/a", "/dev/b"}));
  EXPECT_EQ(devices("mkfs.btrfs", {"--label=x", "/dev/a"}), Devs{"/dev/a"});
  EXPECT_EQ(devices("mkfs.btrfs", {"-L", "x", "-d", "raid1", "-m", "raid1", "/dev/a", "/dev/b"}),
            (Devs{"/dev/a", "/dev/b"}));
}

TEST(TargetDevices, CryptsetupLuksFormat) {
  EXPECT_EQ(devices("cryptsetup", {"luksFormat", "--type", "luks2", "-d", "/dev/stdin", "/dev/x"}),
            Devs{"/dev/x"});
  // -q is --batch-mode: it takes no value (every CSI driver that encrypts passes it).
  EXPECT_EQ(devices("cryptsetup", {"-q", "luksFormat", "/dev/x", "keyfile"}), Devs{"/dev/x"});
  EXPECT_EQ(devices("cryptsetup", {"-q", "luksFormat", "--type=luks2", "/dev/x", "-"}),
            Devs{"/dev/x"});
  EXPECT_EQ(devices("cryptsetup", {"-v", "--batch-mode", "luksFormat", "/dev/x"}), Devs{"/dev/x"});
  EXPECT_EQ(devices("cryptsetup", {"open", "/dev/x", "name"}), Devs{});
  EXPECT_EQ(devices("cryptsetup", {"status", "name"}), Devs{});
  EXPECT_THAT(devicesError("cryptsetup", {"luksFormat"}), HasSubstr("no device"));
  EXPECT_THAT(devicesError("cryptsetup", {"-q", "luksFormat"}), HasSubstr("no device"));
  // An option whose value the gate's list does not know must not hide luksFormat.
  EXPECT_EQ(devices("cryptsetup", {"--progress-frequency", "5", "luksFormat", "/dev/x"}),
            Devs{"/dev/x"});
}

TEST(TargetDevices, XfsConfigFileOptionTakesAValue) {
  EXPECT_EQ(devices("mkfs.xfs", {"-c", "options=x", "/dev/x"}), Devs{"/dev/x"});
}

TEST(TargetDevices, OptionMissingItsValueIsAnError) {
  EXPECT_THAT(devicesError("mkfs.ext4", {"/dev/x", "-L"}), HasSubstr("option -L needs a value"));
  EXPECT_THAT(devicesError("mkfs.xfs", {"/dev/x", "-d"}), HasSubstr("needs a value"));
  EXPECT_THAT(devicesError("mkfs.btrfs", {"/dev/x", "--label"}),
              HasSubstr("option --label needs a value"));
  EXPECT_THAT(devicesError("cryptsetup", {"luksFormat", "/dev/x", "--type"}),
              HasSubstr("needs a value"));
}

// ---------------------------------------------------------------------------------------------
// Format gate: the judgement of one device

Result<std::vector<LedgerEntry>> entries(std::vector<LedgerEntry> list) { return list; }

TEST(JudgeFormat, BlankWithoutHistoryIsAllowed) {
  GateVerdict v = judgeFormat("mkfs.ext4", "/dev/x", probeOf(ProbeState::kBlank), entries({}));
  EXPECT_TRUE(v.allow) << v.message;
  EXPECT_EQ(v.reason, "blank-never-formatted");
  // An entry that never held a filesystem is no history either.
  GateVerdict e = judgeFormat("mkfs.ext4", "/dev/x", probeOf(ProbeState::kBlank),
                              entries({*ledgerOf(LedgerKind::kEmptyEntry)}));
  EXPECT_TRUE(e.allow) << e.message;
}

TEST(JudgeFormat, BlankDeviceTheLedgerSaysHeldAFilesystemIsRefused) {
  GateVerdict v = judgeFormat("mkfs.ext4", "/dev/x", probeOf(ProbeState::kBlank),
                              entries({*ledgerOf(LedgerKind::kIdentity)}));
  EXPECT_FALSE(v.allow);
  EXPECT_EQ(v.reason, "ledger-held");
  EXPECT_THAT(v.message, HasSubstr("refused `mkfs.ext4` on /dev/x"));
  EXPECT_THAT(v.message, HasSubstr("volume vol-1"));
  EXPECT_THAT(v.message, HasSubstr(kHeldUuid));
  EXPECT_THAT(v.message, HasSubstr("forget --volume vol-1"));
}

TEST(JudgeFormat, QuarantinedVolumeIsRefused) {
  for (ProbeState s : {ProbeState::kBlank, ProbeState::kFilesystem}) {
    GateVerdict v = judgeFormat("mkfs.xfs", "/dev/x", probeOf(s),
                                entries({*ledgerOf(LedgerKind::kQuarantined)}));
    EXPECT_FALSE(v.allow);
    EXPECT_EQ(v.reason, "quarantined");
    EXPECT_THAT(v.message, HasSubstr("volume vol-1 is quarantined"));
  }
}

TEST(JudgeFormat, AnythingButBlankIsRefused) {
  GateVerdict fs =
      judgeFormat("mkfs.ext4", "/dev/x", probeOf(ProbeState::kFilesystem), entries({}));
  EXPECT_FALSE(fs.allow);
  EXPECT_EQ(fs.reason, "not-blank");
  EXPECT_THAT(fs.message, HasSubstr(kHeldUuid));

  GateVerdict data =
      judgeFormat("mkfs.ext4", "/dev/x", probeOf(ProbeState::kDataEvidence), entries({}));
  EXPECT_FALSE(data.allow);
  EXPECT_EQ(data.reason, "data-evidence");
  EXPECT_THAT(data.message, HasSubstr("ext4 backup superblock of group 1"));

  GateVerdict unknown =
      judgeFormat("cryptsetup", "/dev/x", probeOf(ProbeState::kUnknown), entries({}));
  EXPECT_FALSE(unknown.allow);
  EXPECT_EQ(unknown.reason, "device-unknown");
  EXPECT_THAT(unknown.message, HasSubstr("No such device or address"));

  ProbeResult amb = probeOf(ProbeState::kUnknown);
  amb.ambivalent = true;
  GateVerdict ambivalent = judgeFormat("mkfs.ext4", "/dev/x", amb, entries({}));
  EXPECT_FALSE(ambivalent.allow);
  EXPECT_EQ(ambivalent.reason, "ambivalent");
}

TEST(JudgeFormat, UnreadableLedgerIsRefused) {
  Result<std::vector<LedgerEntry>> broken =
      makeError("ledger file /var/lib/stateguard/ledger/vol-1.json is not valid JSON");
  GateVerdict v = judgeFormat("mkfs.ext4", "/dev/x", probeOf(ProbeState::kBlank), broken);
  EXPECT_FALSE(v.allow);
  EXPECT_EQ(v.reason, "ledger-unreadable");
  EXPECT_THAT(v.message, HasSubstr("vol-1.json is not valid JSON"));
}

// ---------------------------------------------------------------------------------------------
// Format gate: finding the real tool behind the gate on PATH

class FindRealTool : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = makeTempDir("sg-gate-path");
    gateDir_ = tmp_ + "/gate";
    realDir_ = tmp_ + "/real";
    ASSERT_EQ(::mkdir(gateDir_.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(realDir_.c_str(), 0755), 0);
    // The gate under a name that does not say "stateguard-format-gate": only its real path
    // tells it apart.
    gate_ = gateDir_ + "/gate-binary";
    executable(gate_, "#!/bin/sh\nexit 99\n");
    for (const std::string& tool : gatedTools()) {
      ASSERT_EQ(::symlink("gate-binary", (gateDir_ + "/" + tool).c_str()), 0);
    }
    executable(realDir_ + "/mkfs.ext4", "#!/bin/sh\nexit 0\n");
  }
  void TearDown() override { removeTree(tmp_); }

  static void executable(const std::string& path, const std::string& text) {
    writeText(path, text);
    ASSERT_EQ(::chmod(path.c_str(), 0755), 0) << path;
  }

  std::string tmp_, gateDir_, realDir_, gate_;
};

TEST_F(FindRealTool, SkipsTheGateAndFindsTheRealTool) {
  EXPECT_EQ(findRealTool("mkfs.ext4", gateDir_ + ":" + realDir_, gate_), realDir_ + "/mkfs.ext4");
  // The gate started through its link resolves to itself too.
  EXPECT_EQ(findRealTool("mkfs.ext4", gateDir_ + ":" + realDir_, gateDir_ + "/mkfs.ext4"),
            realDir_ + "/mkfs.ext4");
  EXPECT_EQ(findRealTool("mkfs.ext4", "::" + gateDir_ + "::" + realDir_ + ":", gate_),
            realDir_ + "/mkfs.ext4");
}

TEST_F(FindRealTool, OnlyTheGateMeansNone) {
  EXPECT_EQ(findRealTool("mkfs.ext4", gateDir_, gate_), "");
  EXPECT_EQ(findRealTool("mkfs.xfs", gateDir_ + ":" + realDir_, gate_), "");
  EXPECT_EQ(findRealTool("mkfs.ext4", "", gate_), "");
}

TEST_F(FindRealTool, SkipsNonExecutablesAndOtherCopiesOfTheGate) {
  const std::string plainDir = tmp_ + "/plain";
  ASSERT_EQ(::mkdir(plainDir.c_str(), 0755), 0);
  writeText(plainDir + "/mkfs.ext4", "not executable");
  ASSERT_EQ(::chmod((plainDir + "/mkfs.ext4").c_str(), 0644), 0);

  // Another installation of the gate (a second copy, its own file) is skipped by name.
  const std::string copyDir = tmp_ + "/copy";
  ASSERT_EQ(::mkdir(copyDir.c_str(), 0755), 0);
  executable(copyDir + "/stateguard-format-gate", "#!/bin/sh\nexit 98\n");
  ASSERT_EQ(::symlink("stateguard-format-gate", (copyDir + "/mkfs.ext4").c_str()), 0);

  EXPECT_EQ(
      findRealTool("mkfs.ext4", plainDir + ":" + copyDir + ":" + gateDir_ + ":" + realDir_, gate_),
      realDir_ + "/mkfs.ext4");
  EXPECT_EQ(findRealTool("mkfs.ext4", plainDir + ":" + copyDir + ":" + gateDir_, gate_), "");
}

TEST_F(FindRealTool, RealToolReachedThroughALinkIsFound) {
  const std::string linkDir = tmp_ + "/sbin";
  ASSERT_EQ(::mkdir(linkDir.c_str(), 0755), 0);
  ASSERT_EQ(::symlink((realDir_ + "/mkfs.ext4").c_str(), (linkDir + "/mkfs.ext4").c_str()), 0);
  EXPECT_EQ(findRealTool("mkfs.ext4", gateDir_ + ":" + linkDir, gate_), linkDir + "/mkfs.ext4");
}

}  // namespace
}  // namespace stateguard::csi
