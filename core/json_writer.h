#pragma once
// Appending JSON text by hand for the hot path (admission responses, audit lines): the same bytes
// nlohmann::json's dump(-1, ' ', false, error_handler_t::replace) writes, without building a json
// tree first. The tests compare both on every rule-suite case, and the review decoder fuzz
// target on every input.

#include <string>
#include <string_view>

namespace stateguard {

/// Appends `s` as a JSON string literal (quotes included), escaped as nlohmann::json escapes it;
/// invalid UTF-8 becomes U+FFFD.
void appendJsonString(std::string& out, std::string_view s);

}  // namespace stateguard
