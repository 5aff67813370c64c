#pragma once
// Tiny command-line flag parser shared by the binaries: --name value, --name=value, --bool.

#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/result.h"

namespace stateguard {

/// Parsed flags and positional arguments.
struct Flags {
  std::map<std::string, std::string> values;                 ///< last value of each flag
  std::map<std::string, std::vector<std::string>> repeated;  ///< every value, in order
  std::vector<std::string> positional;

  bool has(const std::string& name) const { return values.count(name) > 0; }
  std::string get(const std::string& name, const std::string& fallback = "") const {
    auto it = values.find(name);
    return it == values.end() ? fallback : it->second;
  }
  /// Every value given for a repeatable flag (--as-group a --as-group b).
  std::vector<std::string> all(const std::string& name) const {
    auto it = repeated.find(name);
    return it == repeated.end() ? std::vector<std::string>{} : it->second;
  }
};

/// Long flags (--name) and one-letter flags (-o). `withValue` lists flags that take a value,
/// `booleans` those that do not. Unknown flags are errors.
Result<Flags> parseFlags(int argc, char** argv, int first, const std::set<std::string>& withValue,
                         const std::set<std::string>& booleans);

}  // namespace stateguard
