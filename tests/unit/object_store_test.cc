// ObjectStore holds each object as its projection packed in MessagePack (issue 15): what goes in
// comes out as the projection, lists by namespace stay exact, and the bytes held are accounted.

#include <gtest/gtest.h>

#include <string_view>

#include "core/cluster_state.h"
#include "core/json_fast.h"
#include "core/k8s.h"
#include "core/projection.h"

namespace stateguard {
namespace {

json pod(const std::string& ns, const std::string& name, const std::string& image) {
  return json{{"apiVersion", "v1"},
              {"kind", "Pod"},
              {"metadata",
               {{"name", name},
                {"namespace", ns},
                {"uid", "uid-" + name},
                {"annotations", {{"a", "b"}}},
                {"managedFields", json::array({{{"manager", "kubelet"}}})}}},
              {"spec", {{"nodeName", "n1"}, {"containers", {{{"name", "app"}, {"image", image}}}}}},
              {"status", {{"phase", "Running"}, {"podIP", "10.0.0.1"}}}};
}

TEST(ObjectStore, GivesBackTheProjectionOfWhatWasPut) {
  ObjectStore store;
  json p = pod("a", "p1", "img:1");
  store.upsert("Pod", p);
  json projected = p;
  projectForCache("Pod", projected);
  ObjectPtr got = store.get("Pod", "a", "p1");
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, projected);
  EXPECT_FALSE(got->contains("/metadata/managedFields"_json_pointer));
  EXPECT_EQ(store.get("Pod", "a", "p2"), nullptr);
  EXPECT_EQ(store.get("Pod", "b", "p1"), nullptr);
}

TEST(ObjectStore, ListsOneNamespaceOrAllAndAccountsTheBytesHeld) {
  ObjectStore store;
  store.upsert("Pod", pod("a", "p1", "img:1"));
  store.upsert("Pod", pod("b", "p1", "img:1"));
  store.upsert("Pod", pod("b", "p2", "img:1"));
  EXPECT_EQ(store.list("Pod").size(), 3u);
  auto inB = store.list("Pod", "b");
  ASSERT_EQ(inB.size(), 2u);
  EXPECT_EQ(k8s::name(*inB[0]), "p1");
  EXPECT_EQ(k8s::name(*inB[1]), "p2");
  EXPECT_TRUE(store.list("Pod", "c").empty());

  const size_t three = store.packedBytes();
  EXPECT_GT(three, 0u);
  store.upsert("Pod", pod("b", "p2", "img:1"));  // replaced, not added
  EXPECT_EQ(store.packedBytes(), three);
  store.remove("Pod", "b", "p2");
  EXPECT_LT(store.packedBytes(), three);
  EXPECT_EQ(store.size("Pod"), 2u);

  std::vector<json> fresh = {pod("c", "q", "img:2")};
  store.replaceAll("Pod", std::move(fresh));
  EXPECT_EQ(store.size("Pod"), 1u);
  EXPECT_EQ((*store.get("Pod", "c", "q"))["spec"]["containers"][0]["image"], "img:2");
  ObjectStore one;
  one.upsert("Pod", pod("c", "q", "img:2"));
  EXPECT_EQ(store.packedBytes(), one.packedBytes());
  store.replaceAll("Pod", ObjectStore::Batch());
  EXPECT_EQ(store.packedBytes(), 0u);
}

// forEach hands out what list does, one decoded object at a time (the background scan's walk);
// generation() grows with every change the store keeps, and not for an update that changes only
// dropped fields (most of a Pod's status churn), so the scan is not woken for nothing.
TEST(ObjectStore, ForEachVisitsWhatListGivesAndGenerationCountsRealChanges) {
  ObjectStore store;
  store.upsert("Pod", pod("a", "p1", "img:1"));
  store.upsert("Pod", pod("b", "p1", "img:1"));
  store.upsert("Pod", pod("b", "p2", "img:1"));
  for (const std::string ns : {"", "b", "c"}) {
    std::vector<json> visited, listed;
    store.forEach(
        "Pod", [&](const ObjectPtr& o) { visited.push_back(*o); }, ns);
    for (const ObjectPtr& o : store.list("Pod", ns)) listed.push_back(*o);
    EXPECT_EQ(visited, listed) << "namespace \"" << ns << "\"";
  }
  EXPECT_EQ(store.list("Pod", "b").size(), 2u);

  const uint64_t before = store.generation();
  json same = pod("b", "p2", "img:1");
  same["metadata"]["managedFields"] = json::array({{{"manager", "kubelet"}}});  // dropped
  store.upsert("Pod", same);
  EXPECT_EQ(store.generation(), before) << "an update the projection drops is no change";
  store.upsert("Pod", pod("b", "p2", "img:2"));
  EXPECT_GT(store.generation(), before);
  const uint64_t changed = store.generation();
  store.remove("Pod", "b", "p2");
  EXPECT_GT(store.generation(), changed);
  store.remove("Pod", "b", "absent");
  const uint64_t removed = store.generation();
  store.remove("Pod", "b", "absent");
  EXPECT_EQ(store.generation(), removed);
}

TEST(ObjectStore, HoldsLessThanTheProjectionsJson) {
  ObjectStore store;
  json p = pod("team-1", "app-7c9f8d6b5-00001", "registry.example.com/team/app:1.0.0");
  store.upsert("Pod", p);
  projectForCache("Pod", p);
  EXPECT_LT(store.packedBytes(), p.dump().size());
}

// The watch cache decodes list pages with ListPageDecoder, skipping what cacheSkipsField names:
// what it builds must project to exactly what a full decode projects to, for every kind.
TEST(ListPageDecoder, SkippingFieldsProjectsToTheSameObjectsAsAFullDecode) {
  json full = pod("a", "p1", "img:1");
  full.erase("kind");
  full.erase("apiVersion");
  full["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{...}";
  full["metadata"]["labels"] = {{"app", "web"}};
  full["metadata"]["ownerReferences"] = json::array(
      {{{"kind", "ReplicaSet"}, {"name", "rs"}, {"uid", "u"}, {"blockOwnerDeletion", true}}});
  full["metadata"]["generateName"] = "p-";
  full["spec"]["volumes"] =
      json::array({{{"name", "data"}, {"persistentVolumeClaim", {{"claimName", "c1"}}}},
                   {{"name", "tok"}, {"projected", {{"sources", json::array()}}}}});
  full["spec"]["initContainers"] =
      json::array({{{"name", "init"}, {"image", "i"}, {"args", {"-x"}}}});
  full["spec"]["tolerations"] = json::array({{{"key", "k"}}});
  full["status"]["conditions"] = json::array({{{"type", "Ready"}}});
  json pv = {
      {"metadata",
       {{"name", "pv1"},
        {"managedFields", json::array({{{"manager", "m"}}})},
        {"annotations", {{"kubectl.kubernetes.io/last-applied-configuration", "{}"}}}}},
      {"spec", {{"persistentVolumeReclaimPolicy", "Delete"}, {"claimRef", {{"name", "c1"}}}}},
      {"status", {{"phase", "Bound"}}}};
  for (const auto& [kind, item] :
       {std::pair<std::string, json>{"Pod", full}, {"PersistentVolume", pv}}) {
    const std::string text = json{{"apiVersion", "v1"},
                                  {"kind", kind + "List"},
                                  {"metadata", {{"resourceVersion", "42"}, {"continue", "tok=="}}},
                                  {"items", json::array({item, 7, item})}}
                                 .dump();
    ListPageDecoder decoder;
    ListPageDecoder::Page page;
    std::string error;
    ASSERT_TRUE(decoder.parse(text, page, error)) << error;
    EXPECT_EQ(page.apiVersion, "v1");
    EXPECT_EQ(page.resourceVersion, "42");
    EXPECT_EQ(page.continueToken, "tok==");
    EXPECT_TRUE(page.itemsIsArray);
    std::vector<json> items;
    const FieldSkip skip = [&](std::span<const std::string_view> path) {
      return cacheSkipsField(kind, path);
    };
    ASSERT_TRUE(decoder.forEachItem(skip, [&](json i) { items.push_back(std::move(i)); }));
    ASSERT_EQ(items.size(), 3u);
    EXPECT_EQ(items[1], json(7));  // not an object: handed over as it is
    json expected = item;
    projectForCache(kind, expected);
    for (json got : {items[0], items[2]}) {
      EXPECT_FALSE(got.contains("/metadata/managedFields"_json_pointer)) << kind;
      projectForCache(kind, got);
      EXPECT_EQ(got, expected) << kind;
    }
    // Without a skip the items are whole.
    ASSERT_TRUE(decoder.forEachItem(nullptr, [&](json i) {
      if (i.is_object()) {
        EXPECT_EQ(i, item);
      }
    }));
  }
}

TEST(ListPageDecoder, RefusesWhatIsNotAList) {
  ListPageDecoder decoder;
  ListPageDecoder::Page page;
  std::string error;
  EXPECT_FALSE(decoder.parse("{\"items\": [", page, error));
  EXPECT_NE(error.find("not JSON"), std::string::npos) << error;
  EXPECT_FALSE(decoder.parse("[1, 2]", page, error));
  EXPECT_EQ(error, "not an object");
  EXPECT_FALSE(decoder.parse(R"({"items": {"a": 1}})", page, error));
  EXPECT_EQ(error, "items is not an array");
  // No items, or null items: an empty page.
  for (const char* empty : {R"({"metadata": {"resourceVersion": "3"}})",
                            R"({"metadata": {"resourceVersion": "3"}, "items": null})"}) {
    ASSERT_TRUE(decoder.parse(empty, page, error)) << empty;
    EXPECT_FALSE(page.itemsIsArray);
    EXPECT_EQ(page.resourceVersion, "3");
    size_t n = 0;
    EXPECT_TRUE(decoder.forEachItem(nullptr, [&](json) { ++n; }));
    EXPECT_EQ(n, 0u);
  }
  // Deeper than the limit: refused, not a stack overflow.
  std::string deep = R"({"items": [)" + std::string(100, '[') + std::string(100, ']') + "]}";
  ASSERT_TRUE(decoder.parse(deep, page, error));
  EXPECT_FALSE(decoder.forEachItem(
      nullptr, [](json) {}, 50));
}

TEST(Projection, TurnedOffSkipsNothing) {
  const std::string_view path[] = {"metadata", "managedFields"};
  EXPECT_TRUE(cacheSkipsField("Pod", path));
  setCacheProjection(false);
  EXPECT_FALSE(cacheSkipsField("Pod", path));
  setCacheProjection(true);
}

}  // namespace
}  // namespace stateguard
