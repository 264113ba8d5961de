#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <variant>

namespace buildcache::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Parses "debug", "info", "warn"/"warning", "error" (case-insensitive).
bool ParseLevel(std::string_view text, Level* out);
std::string_view LevelName(Level level);

// A field value: strings are JSON-escaped, numbers and booleans are written bare.
using Value = std::variant<std::string_view, int64_t, uint64_t, double, bool>;

struct Field {
  std::string_view key;
  Value value;
  Field(std::string_view k, std::string_view v) : key(k), value(v) {}
  Field(std::string_view k, const std::string& v) : key(k), value(std::string_view(v)) {}
  Field(std::string_view k, const char* v) : key(k), value(std::string_view(v)) {}
  Field(std::string_view k, int v) : key(k), value(static_cast<int64_t>(v)) {}
  Field(std::string_view k, long v) : key(k), value(static_cast<int64_t>(v)) {}
  Field(std::string_view k, long long v) : key(k), value(static_cast<int64_t>(v)) {}
  Field(std::string_view k, unsigned v) : key(k), value(static_cast<uint64_t>(v)) {}
  Field(std::string_view k, unsigned long v) : key(k), value(static_cast<uint64_t>(v)) {}
  Field(std::string_view k, unsigned long long v) : key(k), value(static_cast<uint64_t>(v)) {}
  Field(std::string_view k, double v) : key(k), value(v) {}
  Field(std::string_view k, bool v) : key(k), value(v) {}
};

// Logs are JSON lines on stderr with a fixed message and key-value fields:
//   {"ts":"2026-11-28T07:30:00.123Z","level":"info","msg":"blob evicted","digest":"ab..","bytes":1}
// Thread-safe; each line is written with a single write(2). The message must be a fixed string
// (variable data goes in fields) so logs can be grepped and counted.
void SetLevel(Level level);
Level GetLevel();
bool Enabled(Level level);

// Redirects output to the given file descriptor (default 2). For tests.
void SetOutputFd(int fd);

void Write(Level level, std::string_view msg, std::initializer_list<Field> fields = {});

// Renders one line without the trailing newline (exposed for tests).
std::string Format(Level level, std::string_view msg, std::initializer_list<Field> fields);

inline void Debug(std::string_view msg, std::initializer_list<Field> f = {}) {
  if (Enabled(Level::kDebug)) {
    Write(Level::kDebug, msg, f);
  }
}
inline void Info(std::string_view msg, std::initializer_list<Field> f = {}) {
  if (Enabled(Level::kInfo)) {
    Write(Level::kInfo, msg, f);
  }
}
inline void Warn(std::string_view msg, std::initializer_list<Field> f = {}) {
  if (Enabled(Level::kWarn)) {
    Write(Level::kWarn, msg, f);
  }
}
inline void Error(std::string_view msg, std::initializer_list<Field> f = {}) {
  Write(Level::kError, msg, f);
}

// Appends s to out as a JSON string literal (with quotes), escaping control characters and
// invalid UTF-8 bytes (as \u00XX) so any input yields a valid line.
void AppendJsonString(std::string* out, std::string_view s);

}  // namespace buildcache::log
