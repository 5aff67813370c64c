#pragma once
// RFC 3339 timestamps and human-readable durations.

#include <chrono>
#include <optional>
#include <string>

namespace stateguard {

using Clock = std::chrono::system_clock;

/// Parses "2026-11-21T15:04:05Z", with optional fractional seconds and a "+hh:mm" offset.
std::optional<Clock::time_point> parseRfc3339(const std::string& text);
/// Current time as RFC 3339 UTC with milliseconds ("2026-11-21T13:04:05.123Z").
std::string nowRfc3339();
/// Formats as "2026-11-21T15:04:05Z".
std::string formatRfc3339(Clock::time_point t);
/// Parses "90s", "30m", "12h", "7d"; nullopt for anything else.
std::optional<std::chrono::seconds> parseDuration(const std::string& text);
/// "3d4h", "2h15m", "45s".
std::string formatDuration(std::chrono::seconds d);
/// Parses a Go duration as Go's time.ParseDuration does ("720h0m0s", "1h30m", "1.5h", "300ms",
/// "-2m", "0"; units ns, us, µs, ms, s, m, h); nullopt for anything else or on overflow.
std::optional<std::chrono::nanoseconds> parseGoDuration(const std::string& text);

}  // namespace stateguard
