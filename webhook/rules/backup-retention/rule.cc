// backup-retention: a backup schedule that keeps too few backups, or keeps them too briefly, can
// only restore the damage it was meant to undo: Longhorn RecurringJobs (backup and snapshot
// tasks) with spec.retain below minRetain, Velero Schedules whose spec.template.ttl is below
// minTtl, or that are paused. Advisory (warn) by default.

#include <chrono>

#include "core/k8s.h"
#include "webhook/rules/common.h"
#include "webhook/rules/rules.h"

namespace stateguard::rules {
namespace {

constexpr const char* kId = "backup-retention";
constexpr const char* kDefaultMinTtl = "168h";
/// Velero's server default (--default-backup-ttl) for a Schedule without spec.template.ttl.
constexpr auto kVeleroDefaultTtl = std::chrono::hours(720);

/// The seed, told once for every finding.
const std::string kWhy =
    "A single kept backup can already hold the damage: when a volume comes back blank or "
    "corrupted, "
    "the next run copies the blank volume and, with nothing older kept, the last good copy is "
    "gone (a K3s cluster kept one nightly Longhorn backup, which had already captured its "
    "blank volumes).";

/// "7d", "1d", "30m", "-1h", for messages.
std::string human(std::chrono::nanoseconds d) {
  return (d.count() < 0 ? "-" : "") +
         formatDuration(std::chrono::duration_cast<std::chrono::seconds>(d));
}

/// "168h0m0s", as Velero writes a ttl (whole seconds).
std::string goDuration(std::chrono::nanoseconds d) {
  const long s = static_cast<long>(std::chrono::duration_cast<std::chrono::seconds>(d).count());
  return std::to_string(s / 3600) + "h" + std::to_string(s % 3600 / 60) + "m" +
         std::to_string(s % 60) + "s";
}

/// Rule backup-retention (see file comment).
class BackupRetention : public Rule {
 public:
  const RuleInfo& info() const override {
    static const RuleInfo kInfo{
        kId,
        "Longhorn RecurringJob or Velero Schedule keeping too few backups, too briefly, or paused",
        Mode::Warn,
        json{{"minRetain", 3}, {"minTtl", kDefaultMinTtl}},
        {{"longhorn.io", "v1beta2", "recurringjobs", "RecurringJob", {"CREATE", "UPDATE"}},
         {"longhorn.io", "v1beta1", "recurringjobs", "RecurringJob", {"CREATE", "UPDATE"}},
         {"velero.io", "v1", "schedules", "Schedule", {"CREATE", "UPDATE"}}},
    };
    return kInfo;
  }

  std::vector<Finding> evaluate(const RuleContext& ctx) const override {
    if (ctx.request.kind == "RecurringJob") return recurringJob(ctx);
    if (ctx.request.kind == "Schedule") return schedule(ctx);
    return {};
  }

 private:
  static std::vector<Finding> recurringJob(const RuleContext& ctx) {
    const json& job = ctx.request.object;
    const std::string task = k8s::str(job, "/spec/task");
    std::string noun;
    if (task == "backup" || task == "backup-force-create") {
      noun = "backup";
    } else if (task == "snapshot" || task == "snapshot-force-create") {
      noun = "snapshot";
    } else {
      return {};
    }
    const long minRetain = ctx.params.value("minRetain", 3L);
    const std::string what = "Longhorn RecurringJob " + k8s::ref(job) + " (task " + task + ")";
    const std::string fix = "Set spec.retain to " + std::to_string(minRetain) + " or more. ";
    const json& retain = k8s::at(job, "/spec/retain");
    if (!retain.is_null() && !retain.is_number_integer()) {
      return {violation(
          what + ": spec.retain " + retain.dump() + " cannot be read as a number of " + noun +
              "s to keep; the policy minimum is " + std::to_string(minRetain) + ". " + kWhy + " " +
              fix + breakGlassHint(ctx, kId),
          "RecurringJob " + k8s::ref(job) + ": spec.retain " + retain.dump() + " is not a number")};
    }
    const long kept = retain.is_null() ? 0 : retain.get<long>();
    if (kept >= minRetain) return {};
    const std::string found = retain.is_null()
                                  ? "spec.retain is not set, so it keeps no " + noun + "s"
                                  : "keeps only " + std::to_string(kept) + " " + noun +
                                        (kept == 1 ? "" : "s") +
                                        " (spec.retain: " + std::to_string(kept) + ")";
    return {violation(what + " " + found + "; the policy minimum is " + std::to_string(minRetain) +
                          ". " + kWhy + " " + fix + breakGlassHint(ctx, kId),
                      "RecurringJob " + k8s::ref(job) + " keeps " + countOf(kept, noun) +
                          ", policy minimum " + std::to_string(minRetain))};
  }

  static std::vector<Finding> schedule(const RuleContext& ctx) {
    const json& sched = ctx.request.object;
    const std::string what = "Velero Schedule " + k8s::ref(sched);
    std::vector<Finding> out;
    const json& paused = k8s::at(sched, "/spec/paused");
    if (paused.is_boolean() && paused.get<bool>()) {
      out.push_back(violation(
          what +
              " is paused (spec.paused: true): it takes no new backups, and the ones it took "
              "expire with their ttl until none is left. " +
              kWhy + " Resume it (spec.paused: false) or delete it on purpose. " +
              breakGlassHint(ctx, kId),
          "Schedule " + k8s::ref(sched) + " is paused: no new backups, old ones expire"));
    }

    const std::string minText = ctx.params.value("minTtl", std::string(kDefaultMinTtl));
    std::optional<std::chrono::nanoseconds> minTtl = parseGoDuration(minText);
    if (!minTtl) {
      if (auto d = parseDuration(minText)) minTtl = *d;  // "7d" from a policy file
    }
    std::string policyNote;
    if (!minTtl) {
      minTtl = *parseGoDuration(kDefaultMinTtl);
      policyNote = " (the policy's minTtl \"" + minText + "\" cannot be read; " + kDefaultMinTtl +
                   " is used)";
    }
    const std::string minimum = "the policy minimum is " + human(*minTtl) + policyNote + ". ";
    const std::string fix = "Set spec.template.ttl to \"" + goDuration(*minTtl) +
                            "\" or more, or leave it out for Velero's default of 720h. ";

    const json& ttlField = k8s::at(sched, "/spec/template/ttl");
    if (ttlField.is_null()) return out;  // Velero's default, 720h
    const std::string ttlText = ttlField.is_string() ? ttlField.get<std::string>() : "";
    const auto ttl = parseGoDuration(ttlText);
    if (!ttl) {
      out.push_back(violation(what + ": spec.template.ttl " + ttlField.dump() +
                                  " cannot be read as a Go duration (like \"720h0m0s\"), so how "
                                  "long its backups are kept is unknown; " +
                                  minimum + kWhy + " " + fix + breakGlassHint(ctx, kId),
                              "Schedule " + k8s::ref(sched) + ": spec.template.ttl " +
                                  ttlField.dump() + " cannot be read"));
      return out;
    }
    // Velero replaces a zero ttl by its server default (--default-backup-ttl, 720h).
    const std::chrono::nanoseconds effective =
        ttl->count() == 0 ? std::chrono::nanoseconds(kVeleroDefaultTtl) : *ttl;
    if (effective >= *minTtl) return out;
    out.push_back(violation(what + " keeps each backup only " + human(effective) +
                                " (spec.template.ttl: " + ttlText + "); " + minimum +
                                "Damage noticed later than that can no longer be undone: every "
                                "backup older than it is gone. " +
                                kWhy + " " + fix + breakGlassHint(ctx, kId),
                            "Schedule " + k8s::ref(sched) + " keeps backups " + human(effective) +
                                ", minimum " + human(*minTtl) + ": raise spec.template.ttl"));
    return out;
  }
};

}  // namespace

RulePtr makeBackupRetention() { return std::make_unique<BackupRetention>(); }

}  // namespace stateguard::rules
