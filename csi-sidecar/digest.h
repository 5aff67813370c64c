#pragma once
// SHA-256 for names that must stay short whatever a volume id holds: ledger file names and the
// ids quoted in messages and audit lines. Kept here (no OpenSSL) because the format gate, which
// reads the ledger, links statically into any driver image.

#include <string>
#include <string_view>

namespace stateguard::csi {

/// The SHA-256 of `data`, 64 lowercase hex digits.
std::string sha256Hex(std::string_view data);

/// `id` itself when it is at most `limit` bytes; else its first bytes (cut on a UTF-8 character
/// boundary) and "... (N bytes, sha256 <16 hex digits>)", so a person can still match it.
std::string shortenId(const std::string& id, size_t limit = 128);

}  // namespace stateguard::csi
