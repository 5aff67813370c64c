// Reading Kubernetes documents: YAML scalars, multi-document files, Lists, errors with positions.

#include <gtest/gtest.h>
#include <sys/resource.h>

#include "core/cluster_state.h"
#include "core/json_fast.h"
#include "core/k8s.h"

namespace stateguard {
namespace {

TEST(Documents, YamlScalarsFollowKubernetes) {
  auto docs =
      parseDocuments("a: \"true\"\nb: true\nc: 10\nd: '10'\ne: 1.5\nf: ~\ng: 10Gi\n", "x.yaml");
  ASSERT_TRUE(docs.ok()) << docs.error();
  const json& d = docs->front();
  EXPECT_TRUE(d["a"].is_string());
  EXPECT_TRUE(d["b"].is_boolean());
  EXPECT_TRUE(d["c"].is_number_integer());
  EXPECT_TRUE(d["d"].is_string());
  EXPECT_TRUE(d["e"].is_number_float());
  EXPECT_TRUE(d["f"].is_null());
  EXPECT_EQ(d["g"], "10Gi");
}

TEST(Documents, AnchorsAliasesKeysAndLines) {
  std::vector<size_t> lines;
  auto docs = parseDocuments(
      "# comment\nbase: &b {x: 1, y: [a, b]}\ncopy: *b\n\"true\": 1\nfalse: 2\n---\n- "
      "1\n---\n---\nlast: yes\n",
      "a.yaml", &lines);
  ASSERT_TRUE(docs.ok()) << docs.error();
  ASSERT_EQ(docs->size(), 3u) << "the empty document is skipped";
  const json& d = docs->front();
  EXPECT_EQ(d["copy"], d["base"]);
  EXPECT_EQ(d["copy"]["y"][1], "b");
  EXPECT_EQ(d["true"], 1) << "keys stay text";
  EXPECT_EQ(d["false"], 2);
  EXPECT_EQ((*docs)[2]["last"], "yes") << "YAML 1.1 yes is not a boolean in Kubernetes (YAML 1.2)";
  EXPECT_EQ(lines, (std::vector<size_t>{2, 7, 10}));
}

TEST(Documents, ListsAndMultipleDocumentsFlatten) {
  auto objs = parseObjects(
      "kind: List\nitems:\n- {kind: Namespace, metadata: {name: a}}\n- {kind: Namespace, metadata: "
      "{name: b}}\n"
      "---\n---\nkind: Namespace\nmetadata: {name: c}\n",
      "x.yaml");
  ASSERT_TRUE(objs.ok()) << objs.error();
  ASSERT_EQ(objs->size(), 3u);
  EXPECT_EQ(k8s::name((*objs)[2].object), "c");
  EXPECT_EQ((*objs)[1].item, 1u);
}

TEST(Documents, ErrorsSayWhere) {
  auto yaml = parseDocuments("a: [1, 2\nb: 3\n", "bad.yaml");
  ASSERT_FALSE(yaml.ok());
  EXPECT_NE(yaml.error().find("bad.yaml: invalid YAML at line"), std::string::npos) << yaml.error();
  auto js = parseDocuments("{\"a\": [}", "bad.json");
  ASSERT_FALSE(js.ok());
  EXPECT_NE(js.error().find("bad.json: invalid JSON"), std::string::npos);
  auto latin1 = parseDocuments("a: 1\nname: caf\xe9\n", "l.yaml");
  ASSERT_FALSE(latin1.ok());
  EXPECT_NE(latin1.error().find("l.yaml: not valid UTF-8 at line 2"), std::string::npos)
      << latin1.error();
  auto endless = parseDocuments("[1],", "e.yaml");
  ASSERT_FALSE(endless.ok()) << "yaml-cpp 0.7 loops on this; the reader must stop";
  auto scalar = parseObjects("just text", "s.yaml");
  ASSERT_FALSE(scalar.ok());
  EXPECT_NE(scalar.error().find("document 0 is not an object"), std::string::npos);
}

// A 330-byte "billion laughs": nine levels of nine aliases each would be 9^9 strings. Issue 13
// measured RSS going to 279 MB before the reader gave up; now it stops at the alias budget.
TEST(Documents, AliasBombIsRefusedBeforeItExpands) {
  std::string bomb =
      "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n";
  for (char level = 'b'; level <= 'i'; ++level) {
    const char prev = static_cast<char>(level - 1);
    bomb += std::string(1, level) + ": &" + level + " [";
    for (int i = 0; i < 9; ++i) bomb += std::string(i ? "," : "") + "*" + prev;
    bomb += "]\n";
  }
  ASSERT_LT(bomb.size(), 400u);
  rusage before{};
  getrusage(RUSAGE_SELF, &before);
  auto docs = parseDocuments(bomb, "policy.yaml");
  rusage after{};
  getrusage(RUSAGE_SELF, &after);
  ASSERT_FALSE(docs.ok()) << "the alias bomb was expanded";
  EXPECT_NE(docs.error().find("policy.yaml: invalid YAML at line "), std::string::npos)
      << docs.error();
  EXPECT_NE(docs.error().find("alias bomb"), std::string::npos) << docs.error();
  EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 32 * 1024) << "KiB of peak memory to refuse it";
  // Ordinary reuse of anchors is still read.
  auto ok = parseDocuments("base: &b {a: 1, b: [x, y]}\none: *b\ntwo: *b\n", "f.yaml");
  ASSERT_TRUE(ok.ok()) << ok.error();
  EXPECT_EQ(ok.value()[0]["two"]["b"][1], "y");
}

TEST(ClusterStateFile, KeepsWatchedKindsAndRejectsNamelessObjects) {
  auto store = loadClusterStateText(
      "{kind: PersistentVolume, metadata: {name: pv1}}\n---\n{kind: ConfigMap, metadata: {name: c, "
      "namespace: n}}\n"
      "---\n{kind: PersistentVolumeClaim, metadata: {name: a, namespace: n1}}\n"
      "---\n{kind: PersistentVolumeClaim, metadata: {name: b, namespace: n2}}\n",
      "s.yaml");
  ASSERT_TRUE(store.ok()) << store.error();
  EXPECT_TRUE(store.value()->ready());
  EXPECT_NE(store.value()->get("PersistentVolume", "", "pv1"), nullptr);
  EXPECT_EQ(store.value()->list("ConfigMap").size(), 0u);
  EXPECT_EQ(store.value()->list("PersistentVolumeClaim", "n1").size(), 1u);
  EXPECT_EQ(store.value()->list("PersistentVolumeClaim").size(), 2u);
  auto bad = loadClusterStateText("{kind: PersistentVolume, metadata: {}}", "s.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("has no kind or metadata.name"), std::string::npos);
}

TEST(JsonFast, ReadsWhatJsonParseReadsAndLeavesTheRestToIt) {
  for (const std::string text :
       {R"({"a":1,"b":[true,false,null],"c":{"d":"e"}})", R"({"dup":1,"dup":2})",
        R"({"n":-0,"big":18446744073709551615,"neg":-9223372036854775808,"f":1.5e-300})",
        R"({"s":"caf\u00e9 \ud83d\udcbe \"q\" \\ \n","utf8":"✓"})", R"([[[[[]]]]])", "\"x\"",
        "12"}) {
    json fast;
    ASSERT_TRUE(parseJsonFast(text, fast, 512)) << text;
    EXPECT_EQ(fast, json::parse(text)) << text;
  }
  // Later duplicates win, as with json::parse.
  json dup;
  ASSERT_TRUE(parseJsonFast(R"({"dup":1,"dup":2})", dup, 512));
  EXPECT_EQ(dup["dup"], 2);
  // What simdjson refuses is not read (json::parse then explains or, for a number beyond
  // uint64, reads it as a double).
  json untouched = "kept";
  for (const std::string text : {"{\"a\":", "{\"a\":1} x", "\"\xff\"", "[1,]", ""}) {
    EXPECT_FALSE(parseJsonFast(text, untouched, 512)) << text;
    EXPECT_EQ(untouched, "kept");
  }
  EXPECT_FALSE(parseJsonFast("[[[1]]]", untouched, 2)) << "deeper than the limit";
  // Large documents go to json::parse, which needs half the memory (issue 13).
  std::string large = "[0";
  while (large.size() < kFastJsonMaxBytes) large += ",0";
  large += "]";
  EXPECT_FALSE(parseJsonFast(large, untouched, 512)) << "over kFastJsonMaxBytes";
  large.resize(kFastJsonMaxBytes - 2);
  if (large.back() == ',') large.pop_back();
  large += "]";
  json fast;
  EXPECT_TRUE(parseJsonFast(large, fast, 512));
  EXPECT_EQ(fast, json::parse(large));
}

}  // namespace
}  // namespace stateguard
