#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status/status.h"

namespace buildcache::config {

// Parses a byte size in the Kubernetes quantity style, so values rendered from a resource
// (storage.maxSize: 200Gi) mean the same thing here:
//   "1000"                         bytes
//   "512Mi", "10Gi", "1Ki" ...     binary suffixes Ki Mi Gi Ti Pi Ei (powers of 1024)
//   "1G", "500M", "10k" ...        decimal suffixes k (or K) M G T P E (powers of 1000)
//   "1.5Gi", "0.5k"                a decimal fraction is allowed when the result is a whole
//                                  number of bytes ("0.3Ki" = 307.2 bytes is rejected)
// No sign, spaces, exponent or "B" suffix. Zero is accepted here (callers decide whether it is
// meaningful). Values above INT64_MAX are rejected. Errors are kInvalidArgument and quote the
// input.
Result<uint64_t> ParseByteSize(std::string_view text);

// Formats bytes with the largest binary suffix that divides it exactly ("512Mi", "1536Ki",
// "1000"), so ParseByteSize(FormatByteSize(n)) == n.
std::string FormatByteSize(uint64_t bytes);

// Parses a duration in Go's time.ParseDuration syntax (as used by Kubernetes resources): one or
// more decimal numbers, each with an optional fraction and a unit: ns, us (or µs), ms, s, m, h.
// "250ms", "30s", "5m", "1h", "1h30m", "1.5s". "0" alone needs no unit. Negative durations and
// values beyond ~292 years (int64 nanoseconds) are rejected. Fractions below a nanosecond are
// truncated, as in Go. Unlike Go, a dot must be followed by a digit ("1.s" is rejected).
Result<std::chrono::nanoseconds> ParseDuration(std::string_view text);

// Formats a duration with the largest unit that divides it exactly ("5m", "250ms", "90s").
std::string FormatDuration(std::chrono::nanoseconds d);

}  // namespace buildcache::config
