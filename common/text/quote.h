// Quoting and hex helpers for messages and wire text: one definition instead of a copy per file.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace buildcache::text {

struct QuoteOptions {
  // Characters of s quoted at most; a longer value ends in "..." after the closing quote's
  // place ("\"abc...\"").
  size_t max_chars = std::string_view::npos;
  // Writes LF as \n (YAML and JSON readers expect it) instead of \x0a.
  bool newline_as_n = false;
};

// s in double quotes for an error message or a rendered config value: '"' and '\\' escaped with
// a backslash, other control characters (and DEL) as \xHH, everything else as it is. Safe for any
// input bytes: the result never holds a raw control character.
std::string Quote(std::string_view s, QuoteOptions options = {});

// Appends the two hex digits of byte b (lower case unless `upper`).
void AppendHexByte(std::string& out, unsigned char b, bool upper = false);
// The bytes of raw as lower-case hex, two digits a byte.
std::string ToHex(std::string_view raw);

}  // namespace buildcache::text
