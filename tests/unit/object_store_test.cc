// ObjectStore holds each object as its projection packed in MessagePack (issue 15): what goes in
// comes out as the projection, lists by namespace stay exact, and the bytes held are accounted.

#include <gtest/gtest.h>

#include "core/cluster_state.h"
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

TEST(ObjectStore, HoldsLessThanTheProjectionsJson) {
  ObjectStore store;
  json p = pod("team-1", "app-7c9f8d6b5-00001", "registry.example.com/team/app:1.0.0");
  store.upsert("Pod", p);
  projectForCache("Pod", p);
  EXPECT_LT(store.packedBytes(), p.dump().size());
}

}  // namespace
}  // namespace stateguard
