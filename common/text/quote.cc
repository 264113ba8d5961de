#include "common/text/quote.h"

namespace buildcache::text {

void AppendHexByte(std::string& out, unsigned char b, bool upper) {
  static constexpr char kLower[] = "0123456789abcdef";
  static constexpr char kUpper[] = "0123456789ABCDEF";
  const char* digits = upper ? kUpper : kLower;
  out.push_back(digits[b >> 4]);
  out.push_back(digits[b & 0xf]);
}

std::string ToHex(std::string_view raw) {
  std::string out;
  out.reserve(raw.size() * 2);
  for (char c : raw) AppendHexByte(out, static_cast<unsigned char>(c));
  return out;
}

std::string Quote(std::string_view s, QuoteOptions options) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < options.max_chars; ++i) {
    char c = s[i];
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n' && options.newline_as_n) {
      out.append("\\n");
    } else if (u < 0x20 || u == 0x7f) {
      out.append("\\x");
      AppendHexByte(out, u);
    } else {
      out.push_back(c);
    }
  }
  if (s.size() > options.max_chars) out.append("...");
  out.push_back('"');
  return out;
}

}  // namespace buildcache::text
