#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "common/status/status.h"

namespace buildcache::kube {

// Timestamps as the API server writes them (RFC 3339, UTC).

// metav1.Time: "2026-11-28T07:30:00Z" (whole seconds; the fraction is truncated).
std::string FormatTime(std::chrono::system_clock::time_point t);
// metav1.MicroTime: "2026-11-28T07:30:00.123456Z" (Lease renewTime, Event eventTime).
std::string FormatMicroTime(std::chrono::system_clock::time_point t);
// Parses either form, with "Z" or a numeric offset and any number of fraction digits (beyond
// microseconds they are truncated).
Result<std::chrono::system_clock::time_point> ParseTime(std::string_view text);

}  // namespace buildcache::kube
