#include "core/flags.h"

namespace stateguard {

Result<Flags> parseFlags(int argc, char** argv, int first, const std::set<std::string>& withValue,
                         const std::set<std::string>& booleans) {
  Flags flags;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-" || arg.rfind("--", 0) != 0) {
      flags.positional.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::string value;
    bool inlineValue = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inlineValue = true;
    }
    if (booleans.count(name)) {
      if (inlineValue) return makeError("flag --" + name + " takes no value");
      flags.values[name] = "true";
    } else if (withValue.count(name)) {
      if (!inlineValue) {
        if (i + 1 >= argc) return makeError("flag --" + name + " needs a value");
        value = argv[++i];
      }
      flags.values[name] = value;
    } else {
      return makeError("unknown flag --" + name);
    }
  }
  return flags;
}

}  // namespace stateguard
