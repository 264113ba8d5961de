#include "common/text/markup.h"

namespace buildcache::text {

void AppendMarkupEscaped(std::string& out, std::string_view s) {
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
}

std::string EscapeMarkup(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  AppendMarkupEscaped(out, s);
  return out;
}

}  // namespace buildcache::text
