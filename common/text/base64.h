// Base64 (RFC 4648, standard alphabet): kubeconfig and Secret data, HTTP Basic credentials, Go's
// h1: directory hashes, npm integrity strings.
#pragma once

#include <string>
#include <string_view>

#include "common/status/status.h"

namespace buildcache::text {

// raw in standard base64 with '=' padding ("" for "").
std::string Base64Encode(std::string_view raw);

// Decodes standard base64, with or without '=' padding; ASCII whitespace (space, tab, CR, LF)
// is skipped. kInvalidArgument for any other character, data after padding, or a length that
// leaves a lone character (no whole byte).
Result<std::string> Base64Decode(std::string_view text);

// The value (0-63) of one standard-alphabet digit, -1 for any other character (for decoders
// with stricter rules, such as gocacheprog's).
int Base64Value(char c);

}  // namespace buildcache::text
