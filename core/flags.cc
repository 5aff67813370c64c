#include "core/flags.h"

namespace stateguard {

Result<Flags> parseFlags(int argc, char** argv, int first, const std::set<std::string>& withValue,
                         const std::set<std::string>& booleans) {
  Flags flags;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    const bool shortFlag = arg.size() == 2 && arg[0] == '-' && arg[1] != '-';  // -o
    if (!shortFlag && (arg == "-" || arg.rfind("--", 0) != 0)) {
      flags.positional.push_back(arg);
      continue;
    }
    std::string name = arg.substr(shortFlag ? 1 : 2);
    std::string value;
    bool inlineValue = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inlineValue = true;
    }
    if (booleans.count(name)) {
      if (inlineValue) return makeError("flag " + arg.substr(0, arg.find('=')) + " takes no value");
      flags.values[name] = "true";
    } else if (withValue.count(name)) {
      if (!inlineValue) {
        if (i + 1 >= argc) return makeError("flag --" + name + " needs a value");
        value = argv[++i];
      }
      flags.values[name] = value;
      flags.repeated[name].push_back(value);
    } else {
      return makeError("unknown flag --" + name);
    }
  }
  return flags;
}

}  // namespace stateguard
