#include "common/log/log.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <ctime>

#include "common/base/thread_annotations.h"
#include "common/text/quote.h"
#include "common/text/utf8.h"

namespace buildcache::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::atomic<int> g_fd{2};
// Serialises writes so a partial write(2) (a line longer than the pipe buffer) is completed before
// another thread's line starts.
Mutex g_write_mu;

char ToLowerAscii(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (ToLowerAscii(a[i]) != ToLowerAscii(b[i])) {
      return false;
    }
  }
  return true;
}

void AppendHexEscape(std::string* out, unsigned value) {
  out->append("\\u");
  text::AppendHexByte(*out, static_cast<unsigned char>(value >> 8));
  text::AppendHexByte(*out, static_cast<unsigned char>(value & 0xff));
}

void AppendTimestamp(std::string* out) {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm utc{};
  gmtime_r(&ts.tv_sec, &utc);
  char buf[40];
  int n = std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                        utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                        static_cast<int>(ts.tv_nsec / 1000000));
  out->append(buf, n > 0 ? static_cast<size_t>(n) : 0);
}

template <typename T>
void AppendNumber(std::string* out, T v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  out->append(buf, ec == std::errc() ? end : buf);
}

void AppendValue(std::string* out, const Value& value) {
  if (auto* s = std::get_if<std::string_view>(&value)) {
    AppendJsonString(out, *s);
  } else if (auto* i = std::get_if<int64_t>(&value)) {
    AppendNumber(out, *i);
  } else if (auto* u = std::get_if<uint64_t>(&value)) {
    AppendNumber(out, *u);
  } else if (auto* d = std::get_if<double>(&value)) {
    // JSON has no NaN or infinity; write them as strings so the line stays parseable.
    if (std::isnan(*d)) {
      out->append("\"NaN\"");
    } else if (std::isinf(*d)) {
      out->append(*d > 0 ? "\"+Inf\"" : "\"-Inf\"");
    } else {
      AppendNumber(out, *d);  // shortest round-trip form, locale independent
    }
  } else if (auto* b = std::get_if<bool>(&value)) {
    out->append(*b ? "true" : "false");
  }
}

}  // namespace

bool ParseLevel(std::string_view text, Level* out) {
  if (EqualsIgnoreCase(text, "debug")) {
    *out = Level::kDebug;
  } else if (EqualsIgnoreCase(text, "info")) {
    *out = Level::kInfo;
  } else if (EqualsIgnoreCase(text, "warn") || EqualsIgnoreCase(text, "warning")) {
    *out = Level::kWarn;
  } else if (EqualsIgnoreCase(text, "error")) {
    *out = Level::kError;
  } else {
    return false;
  }
  return true;
}

std::string_view LevelName(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "unknown";
}

void SetLevel(Level level) { g_level.store(static_cast<int>(level), std::memory_order_relaxed); }

Level GetLevel() { return static_cast<Level>(g_level.load(std::memory_order_relaxed)); }

bool Enabled(Level level) {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

void SetOutputFd(int fd) { g_fd.store(fd, std::memory_order_relaxed); }

void AppendJsonString(std::string* out, std::string_view s) {
  out->push_back('"');
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"':
          out->append("\\\"");
          break;
        case '\\':
          out->append("\\\\");
          break;
        case '\n':
          out->append("\\n");
          break;
        case '\r':
          out->append("\\r");
          break;
        case '\t':
          out->append("\\t");
          break;
        default:
          if (c < 0x20 || c == 0x7f) {
            AppendHexEscape(out, c);
          } else {
            out->push_back(static_cast<char>(c));
          }
      }
      ++i;
      continue;
    }
    size_t len = text::Utf8SequenceLength(s, i);
    if (len == 0) {
      // An invalid byte is shown as the code point of the same value, so nothing is dropped.
      AppendHexEscape(out, c);
      ++i;
      continue;
    }
    // U+2028 and U+2029 are valid JSON but break JavaScript-based log viewers.
    if (len == 3 && c == 0xE2 && static_cast<unsigned char>(s[i + 1]) == 0x80 &&
        (static_cast<unsigned char>(s[i + 2]) & 0xFE) == 0xA8) {
      AppendHexEscape(out, 0x2000u | (static_cast<unsigned char>(s[i + 2]) - 0x80u));
    } else {
      out->append(s.substr(i, len));
    }
    i += len;
  }
  out->push_back('"');
}

std::string Format(Level level, std::string_view msg, std::initializer_list<Field> fields) {
  std::string line;
  line.reserve(96 + msg.size() + fields.size() * 32);
  line.append("{\"ts\":\"");
  AppendTimestamp(&line);
  line.append("\",\"level\":\"");
  line.append(LevelName(level));
  line.append("\",\"msg\":");
  AppendJsonString(&line, msg);
  for (const Field& f : fields) {
    line.push_back(',');
    AppendJsonString(&line, f.key);
    line.push_back(':');
    AppendValue(&line, f.value);
  }
  line.push_back('}');
  return line;
}

void Write(Level level, std::string_view msg, std::initializer_list<Field> fields) {
  if (!Enabled(level)) {
    return;
  }
  std::string line = Format(level, msg, fields);
  line.push_back('\n');
  int fd = g_fd.load(std::memory_order_relaxed);
  MutexLock lock(g_write_mu);
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return;  // nowhere to report a failure to log
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace buildcache::log
