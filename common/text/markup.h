// Escaping for HTML and XML text and attribute values (the PyPI simple index, WebDAV answers).
#pragma once

#include <string>
#include <string_view>

namespace buildcache::text {

// Appends s with &, <, >, " and ' replaced by character references (&amp; &lt; &gt; &quot;
// &#39;), which HTML and XML parsers read back as the original characters, in text and in
// attribute values quoted with either quote. Other bytes are appended as they are.
void AppendMarkupEscaped(std::string& out, std::string_view s);
// The same, as a new string.
std::string EscapeMarkup(std::string_view s);

}  // namespace buildcache::text
