#include "common/config/units.h"

#include <charconv>
#include <cstddef>
#include <limits>

#include "common/text/quote.h"

namespace buildcache::config {
namespace {

using u128 = unsigned __int128;

constexpr uint64_t kMaxBytes = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
constexpr size_t kMaxFractionDigits = 18;

using text::Quote;

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// A decimal number "123" or "1.25" split into its digits: value = mantissa / 10^scale.
struct Decimal {
  u128 mantissa = 0;
  size_t scale = 0;
  bool truncated = false;  // nonzero fraction digits beyond kMaxFractionDigits were dropped
};

// Consumes a decimal number at the start of *s. Returns false if there is none or it is too long.
bool ConsumeDecimal(std::string_view* s, Decimal* out) {
  size_t i = 0;
  size_t int_digits = 0;
  Decimal d;
  while (i < s->size() && IsDigit((*s)[i])) {
    if (int_digits >= 19) {
      return false;  // beyond int64 whatever the unit
    }
    d.mantissa = d.mantissa * 10 + static_cast<unsigned>((*s)[i] - '0');
    ++int_digits;
    ++i;
  }
  size_t frac_digits = 0;
  if (i < s->size() && (*s)[i] == '.') {
    ++i;
    if (i == s->size() || !IsDigit((*s)[i])) {
      return false;  // "1." is not a number
    }
    while (i < s->size() && IsDigit((*s)[i])) {
      if (frac_digits < kMaxFractionDigits) {
        d.mantissa = d.mantissa * 10 + static_cast<unsigned>((*s)[i] - '0');
        ++frac_digits;
      } else if ((*s)[i] != '0') {
        d.truncated = true;
      }
      ++i;
    }
  }
  if (int_digits == 0 && frac_digits == 0) {
    return false;  // "", ".", or no digits at all
  }
  d.scale = frac_digits;
  s->remove_prefix(i);
  *out = d;
  return true;
}

u128 Pow10(size_t n) {
  u128 r = 1;
  for (size_t i = 0; i < n; ++i) {
    r *= 10;
  }
  return r;
}

struct Suffix {
  std::string_view name;
  uint64_t multiplier;
};

constexpr Suffix kByteSuffixes[] = {
    {"", 1},
    {"k", 1000ULL},
    {"K", 1000ULL},
    {"M", 1000ULL * 1000},
    {"G", 1000ULL * 1000 * 1000},
    {"T", 1000ULL * 1000 * 1000 * 1000},
    {"P", 1000ULL * 1000 * 1000 * 1000 * 1000},
    {"E", 1000ULL * 1000 * 1000 * 1000 * 1000 * 1000},
    {"Ki", 1ULL << 10},
    {"Mi", 1ULL << 20},
    {"Gi", 1ULL << 30},
    {"Ti", 1ULL << 40},
    {"Pi", 1ULL << 50},
    {"Ei", 1ULL << 60},
};

constexpr Suffix kDurationUnits[] = {
    {"ns", 1ULL},
    {"us", 1000ULL},
    {"\xC2\xB5s", 1000ULL},  // U+00B5 micro sign
    {"\xCE\xBCs", 1000ULL},  // U+03BC Greek small letter mu
    {"ms", 1000ULL * 1000},
    {"s", 1000ULL * 1000 * 1000},
    {"m", 60ULL * 1000 * 1000 * 1000},
    {"h", 3600ULL * 1000 * 1000 * 1000},
};

Status ByteSizeError(std::string_view text, std::string_view why) {
  return InvalidArgument("invalid byte size " + Quote(text) + ": " + std::string(why) +
                         " (expected a whole number of bytes with an optional suffix "
                         "Ki, Mi, Gi, Ti, Pi, Ei or k, M, G, T, P, E, e.g. 512Mi)");
}

Status DurationError(std::string_view text, std::string_view why) {
  return InvalidArgument("invalid duration " + Quote(text) + ": " + std::string(why) +
                         " (expected a number with a unit ns, us, ms, s, m or h, e.g. 30s, "
                         "250ms, 1h30m)");
}

}  // namespace

Result<uint64_t> ParseByteSize(std::string_view text) {
  if (text.empty()) {
    return ByteSizeError(text, "empty");
  }
  if (text.front() == '-') {
    return ByteSizeError(text, "negative");
  }
  std::string_view rest = text;
  Decimal d;
  if (!ConsumeDecimal(&rest, &d)) {
    return ByteSizeError(text, "not a number");
  }
  const Suffix* suffix = nullptr;
  for (const Suffix& s : kByteSuffixes) {
    if (rest == s.name) {
      suffix = &s;
    }
  }
  if (suffix == nullptr) {
    return ByteSizeError(text, "unknown suffix " + Quote(rest));
  }
  // mantissa < 10^37 < 2^123 and multiplier <= 2^60, so the product needs a guard.
  if (d.mantissa != 0 && suffix->multiplier > (~static_cast<u128>(0)) / d.mantissa) {
    return ByteSizeError(text, "too large");
  }
  u128 scaled = d.mantissa * suffix->multiplier;
  u128 divisor = Pow10(d.scale);
  if (d.truncated || scaled % divisor != 0) {
    return ByteSizeError(text, "not a whole number of bytes");
  }
  u128 bytes = scaled / divisor;
  if (bytes > kMaxBytes) {
    return ByteSizeError(text, "too large");
  }
  return static_cast<uint64_t>(bytes);
}

std::string FormatByteSize(uint64_t bytes) {
  static constexpr std::string_view kNames[] = {"Ei", "Pi", "Ti", "Gi", "Mi", "Ki"};
  if (bytes != 0) {
    for (int i = 0; i < 6; ++i) {
      uint64_t unit = 1ULL << (10 * (6 - i));
      if (bytes % unit == 0) {
        return std::to_string(bytes / unit) + std::string(kNames[i]);
      }
    }
  }
  return std::to_string(bytes);
}

Result<std::chrono::nanoseconds> ParseDuration(std::string_view text) {
  if (text.empty()) {
    return DurationError(text, "empty");
  }
  if (text.front() == '-') {
    return DurationError(text, "negative");
  }
  if (text == "0") {
    return std::chrono::nanoseconds(0);
  }
  std::string_view rest = text;
  u128 total = 0;
  while (!rest.empty()) {
    Decimal d;
    if (!ConsumeDecimal(&rest, &d)) {
      return DurationError(text, "expected a number");
    }
    size_t unit_len = 0;
    while (unit_len < rest.size() && !IsDigit(rest[unit_len]) && rest[unit_len] != '.') {
      ++unit_len;
    }
    std::string_view unit_name = rest.substr(0, unit_len);
    if (unit_name.empty()) {
      return DurationError(text, "missing unit");
    }
    const Suffix* unit = nullptr;
    for (const Suffix& u : kDurationUnits) {
      if (unit_name == u.name) {
        unit = &u;
      }
    }
    if (unit == nullptr) {
      return DurationError(text, "unknown unit " + Quote(unit_name));
    }
    rest.remove_prefix(unit_len);
    // mantissa < 10^37 and multiplier < 2^42: the product fits in 128 bits only if guarded.
    if (d.mantissa != 0 && unit->multiplier > (~static_cast<u128>(0)) / d.mantissa) {
      return DurationError(text, "too large");
    }
    total += d.mantissa * unit->multiplier / Pow10(d.scale);
    if (total > static_cast<u128>(std::numeric_limits<int64_t>::max())) {
      return DurationError(text, "too large");
    }
  }
  return std::chrono::nanoseconds(static_cast<int64_t>(total));
}

std::string FormatDuration(std::chrono::nanoseconds d) {
  struct Unit {
    std::string_view name;
    int64_t ns;
  };
  static constexpr Unit kUnits[] = {{"h", 3600'000'000'000}, {"m", 60'000'000'000},
                                    {"s", 1'000'000'000},    {"ms", 1'000'000},
                                    {"us", 1'000},           {"ns", 1}};
  int64_t n = d.count();
  if (n == 0) {
    return "0s";
  }
  for (const Unit& u : kUnits) {
    if (n % u.ns == 0) {
      return std::to_string(n / u.ns) + std::string(u.name);
    }
  }
  return std::to_string(n) + "ns";
}

}  // namespace buildcache::config
