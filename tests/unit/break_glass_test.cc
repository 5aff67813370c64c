// Break-glass annotation parsing and the conditions under which it is honoured.

#include "webhook/break_glass.h"

#include <gtest/gtest.h>

#include <limits>

namespace stateguard {
namespace {

TEST(BreakGlassParse, FullForm) {
  auto bg =
      parseBreakGlass("pv-delete, pvc-delete; until=2026-11-21T18:00:00Z; reason=INC-1; really");
  ASSERT_TRUE(bg.ok()) << bg.error();
  EXPECT_EQ(bg->rules, (std::vector<std::string>{"pv-delete", "pvc-delete"}));
  EXPECT_EQ(formatRfc3339(bg->until), "2026-11-21T18:00:00Z");
  EXPECT_EQ(bg->reason, "INC-1; really") << "the reason keeps everything after reason=";
}

TEST(BreakGlassParse, ErrorsShowTheExpectedForm) {
  for (const char* bad :
       {"", "; until=2026-11-21T18:00:00Z; reason=x", "pv-delete; reason=x",
        "pv-delete; until=2026-11-21T18:00:00Z", "pv-delete; until=soon; reason=x",
        "pv-delete; until=2026-11-21T18:00:00Z; why=x"}) {
    auto bg = parseBreakGlass(bad);
    ASSERT_FALSE(bg.ok()) << bad;
    EXPECT_NE(bg.error().find("expected \"<rule-id>; until="), std::string::npos) << bg.error();
  }
}

TEST(Rfc3339, OffsetsFractionsAndGarbage) {
  auto a = parseRfc3339("2026-11-21T18:00:00Z");
  auto b = parseRfc3339("2026-11-21T20:00:00.123+02:00");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(std::chrono::duration_cast<std::chrono::seconds>(*b - *a).count(), 0);
  for (const char* bad :
       {"2026-11-21", "2026-13-01T00:00:00Z", "2026-11-21T18:00:00", "2026-11-21T18:00:00Zjunk",
        "2026-11-21T18:00:00+2", "tomorrow", "1386-11-21T14:10:29Z", "2610-11-21T14:10:29Z"}) {
    EXPECT_FALSE(parseRfc3339(bad)) << bad;
  }
  EXPECT_EQ(formatDuration(std::chrono::seconds(90061)), "1d1h");
  EXPECT_EQ(formatDuration(std::chrono::seconds(45)), "45s");
}

TEST(GoDuration, ReadsWhatGoTimeParseDurationReads) {
  using std::chrono::hours;
  using std::chrono::minutes;
  using std::chrono::nanoseconds;
  using std::chrono::seconds;
  EXPECT_EQ(parseGoDuration("720h0m0s"), nanoseconds(hours(720)));
  EXPECT_EQ(parseGoDuration("24h"), nanoseconds(hours(24)));
  EXPECT_EQ(parseGoDuration("30m"), nanoseconds(minutes(30)));
  EXPECT_EQ(parseGoDuration("1h30m"), nanoseconds(minutes(90)));
  EXPECT_EQ(parseGoDuration("1.5h"), nanoseconds(minutes(90)));
  EXPECT_EQ(parseGoDuration(".5s"), nanoseconds(500000000));
  EXPECT_EQ(parseGoDuration("1m30.25s"), nanoseconds(90250000000));
  EXPECT_EQ(parseGoDuration("300ms"), nanoseconds(300000000));
  EXPECT_EQ(parseGoDuration("2us"), nanoseconds(2000));
  EXPECT_EQ(parseGoDuration("2\u00b5s"), nanoseconds(2000));
  EXPECT_EQ(parseGoDuration("2\u03bcs"), nanoseconds(2000));
  EXPECT_EQ(parseGoDuration("7ns"), nanoseconds(7));
  EXPECT_EQ(parseGoDuration("1h1m1s1ms1us1ns"), nanoseconds(3661001001001));
  EXPECT_EQ(parseGoDuration("0"), nanoseconds(0));
  EXPECT_EQ(parseGoDuration("0s"), nanoseconds(0));
  EXPECT_EQ(parseGoDuration("-2m"), nanoseconds(minutes(-2)));
  EXPECT_EQ(parseGoDuration("+2m"), nanoseconds(minutes(2)));
  EXPECT_EQ(parseGoDuration("2562047h47m16.854775807s"),
            nanoseconds(std::numeric_limits<int64_t>::max()));
  EXPECT_EQ(parseGoDuration("-2562047h47m16.854775808s"),
            nanoseconds(std::numeric_limits<int64_t>::min()));
  for (const char* bad : {"",
                          "-",
                          "+",
                          "h",
                          "30",
                          "1h30",
                          "7d",
                          "7days",
                          "1H",
                          "1.h.",
                          "..5s",
                          "1 h",
                          " 1h",
                          "1h ",
                          "1e3s",
                          "2562047h47m16.854775808s",
                          "9999999999h",
                          "99999999999999999999ns",
                          "1hh",
                          "0x10s"}) {
    EXPECT_FALSE(parseGoDuration(bad)) << bad;
  }
}

AdmissionRequest deleteWith(const std::string& annotation, std::vector<std::string> groups) {
  AdmissionRequest r;
  r.operation = "DELETE";
  r.user.username = "u";
  r.user.groups = std::move(groups);
  r.oldObject = {
      {"metadata", {{"name", "x"}, {"annotations", {{"stateguard.io/allow", annotation}}}}}};
  return r;
}

TEST(BreakGlassCheck, HonouredOnlyForGroupRuleAndTime) {
  BreakGlassConfig cfg;
  auto now = Clock::now();
  std::string until = formatRfc3339(now + std::chrono::hours(1));
  auto ok = checkBreakGlass(
      deleteWith("pv-delete; until=" + until + "; reason=r", {"stateguard:break-glass"}), cfg,
      "pv-delete", now);
  EXPECT_TRUE(ok.granted);
  EXPECT_EQ(ok.reason, "r");

  auto outsider = checkBreakGlass(deleteWith("pv-delete; until=" + until + "; reason=r", {"dev"}),
                                  cfg, "pv-delete", now);
  EXPECT_FALSE(outsider.granted);
  EXPECT_NE(outsider.explanation.find("not in a break-glass group"), std::string::npos);

  auto expired = checkBreakGlass(
      deleteWith("pv-delete; until=" + until + "; reason=r", {"stateguard:break-glass"}), cfg,
      "pv-delete", now + std::chrono::hours(2));
  EXPECT_FALSE(expired.granted);
  EXPECT_NE(expired.explanation.find("expired"), std::string::npos);

  std::string far = formatRfc3339(now + std::chrono::hours(30));
  auto tooFar = checkBreakGlass(
      deleteWith("pv-delete; until=" + far + "; reason=r", {"stateguard:break-glass"}), cfg,
      "pv-delete", now);
  EXPECT_FALSE(tooFar.granted);

  auto none = checkBreakGlass(AdmissionRequest{}, cfg, "pv-delete", now);
  EXPECT_FALSE(none.granted);
  EXPECT_TRUE(none.explanation.empty());
}

}  // namespace
}  // namespace stateguard
