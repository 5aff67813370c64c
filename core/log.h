#pragma once
// Minimal leveled logging to stderr: one line per event, timestamped (UTC).

#include <string_view>

namespace stateguard::log {

void info(std::string_view message);
void warn(std::string_view message);
void error(std::string_view message);
/// Silences info lines (tests, CLI).
void setQuiet(bool quiet);

}  // namespace stateguard::log
