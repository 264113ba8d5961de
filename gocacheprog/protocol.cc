#include "gocacheprog/protocol.h"

#include <ctime>

namespace buildcache::gocacheprog {

namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A cursor over one JSON text. Only what the request schema needs is materialised (strings,
// integers, booleans); anything else is validated and skipped.
class JsonReader {
 public:
  explicit JsonReader(std::string_view text) : s_(text) {}

  void SkipSpace() {
    while (i_ < s_.size() &&
           (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\r' || s_[i_] == '\n')) {
      ++i_;
    }
  }
  bool Consume(char c) {
    SkipSpace();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  char Peek() {
    SkipSpace();
    return i_ < s_.size() ? s_[i_] : '\0';
  }
  bool AtEnd() {
    SkipSpace();
    return i_ == s_.size();
  }

  Result<std::string> String() {
    if (!Consume('"')) return InvalidArgument("expected a JSON string");
    std::string out;
    while (i_ < s_.size()) {
      char c = s_[i_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) return InvalidArgument("control byte in string");
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (i_ >= s_.size()) break;
      char e = s_[i_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out.push_back(e);
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u': {
          if (i_ + 4 > s_.size()) return InvalidArgument("short \\u escape");
          uint32_t cp = 0;
          for (int k = 0; k < 4; ++k) {
            int v = HexValue(s_[i_++]);
            if (v < 0) return InvalidArgument("bad \\u escape");
            cp = cp * 16 + static_cast<uint32_t>(v);
          }
          // Only the fields we read matter (base64 and command names are ASCII); keep a
          // replacement for anything else rather than decoding surrogates.
          out.push_back(cp < 0x80 ? static_cast<char>(cp) : '?');
          break;
        }
        default:
          return InvalidArgument("bad escape in string");
      }
    }
    return InvalidArgument("unterminated string");
  }

  Result<int64_t> Integer() {
    SkipSpace();
    size_t start = i_;
    bool negative = i_ < s_.size() && s_[i_] == '-';
    if (negative) ++i_;
    uint64_t v = 0;
    size_t digits = 0;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
      if (v > (uint64_t{1} << 62)) return InvalidArgument("integer out of range");
      v = v * 10 + static_cast<uint64_t>(s_[i_++] - '0');
      ++digits;
    }
    if (digits == 0 || (i_ < s_.size() && (s_[i_] == '.' || s_[i_] == 'e' || s_[i_] == 'E'))) {
      i_ = start;
      return InvalidArgument("expected an integer");
    }
    return negative ? -static_cast<int64_t>(v) : static_cast<int64_t>(v);
  }

  bool Literal(std::string_view word) {
    SkipSpace();
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }

  // Skips any JSON value, nesting bounded so hostile input cannot exhaust the stack.
  Status SkipValue(int depth = 0) {
    if (depth > 32) return InvalidArgument("JSON nested too deeply");
    char c = Peek();
    if (c == '"') return String().status();
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++i_;
      if (Consume(close)) return Status::Ok();
      do {
        if (c == '{') {
          BC_RETURN_IF_ERROR(String().status());
          if (!Consume(':')) return InvalidArgument("expected ':'");
        }
        BC_RETURN_IF_ERROR(SkipValue(depth + 1));
      } while (Consume(','));
      if (!Consume(close)) return InvalidArgument("unterminated JSON container");
      return Status::Ok();
    }
    if (Literal("true") || Literal("false") || Literal("null")) return Status::Ok();
    SkipSpace();
    size_t start = i_;
    while (i_ < s_.size() &&
           (std::string_view("+-.eE0123456789").find(s_[i_]) != std::string_view::npos)) {
      ++i_;
    }
    if (i_ == start) return InvalidArgument("bad JSON value");
    return Status::Ok();
  }

 private:
  std::string_view s_;
  size_t i_ = 0;
};

void AppendJsonString(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (u < 0x20) {
      out += "\\u00";
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
}

}  // namespace

Result<Request> ParseRequest(std::string_view line) {
  JsonReader r(line);
  Request req;
  if (!r.Consume('{')) return InvalidArgument("request is not a JSON object");
  if (!r.Consume('}')) {
    do {
      BC_ASSIGN_OR_RETURN(std::string key, r.String());
      if (!r.Consume(':')) return InvalidArgument("expected ':' after \"" + key + "\"");
      if (key == "ID") {
        BC_ASSIGN_OR_RETURN(req.id, r.Integer());
      } else if (key == "Command") {
        BC_ASSIGN_OR_RETURN(req.command, r.String());
      } else if (key == "BodySize") {
        BC_ASSIGN_OR_RETURN(req.body_size, r.Integer());
        if (req.body_size < 0) return InvalidArgument("negative BodySize");
      } else if ((key == "ActionID" || key == "OutputID") && r.Peek() == '"') {
        BC_ASSIGN_OR_RETURN(std::string text, r.String());
        BC_ASSIGN_OR_RETURN((key == "ActionID" ? req.action_id : req.output_id),
                            Base64Decode(text));
      } else {
        BC_RETURN_IF_ERROR(r.SkipValue());
      }
    } while (r.Consume(','));
    if (!r.Consume('}')) return InvalidArgument("unterminated request object");
  }
  if (!r.AtEnd()) return InvalidArgument("trailing bytes after the request object");
  return req;
}

Result<std::string> ParseBodyLine(std::string_view line) {
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
  if (line.size() < 2 || line.front() != '"' || line.back() != '"') {
    return InvalidArgument("put body is not a JSON string");
  }
  return Base64Decode(line.substr(1, line.size() - 2));
}

std::string EncodeResponse(const Response& r) {
  std::string out = "{\"ID\":" + std::to_string(r.id);
  if (!r.err.empty()) {
    out += ",\"Err\":";
    AppendJsonString(out, r.err);
  }
  if (r.known_commands) out += ",\"KnownCommands\":[\"get\",\"put\",\"close\"]";
  if (r.miss) out += ",\"Miss\":true";
  if (!r.output_id.empty()) out += ",\"OutputID\":\"" + Base64Encode(r.output_id) + "\"";
  if (r.size != 0) out += ",\"Size\":" + std::to_string(r.size);
  if (r.time_unix_nanos) out += ",\"Time\":\"" + Rfc3339Nanos(*r.time_unix_nanos) + "\"";
  if (!r.disk_path.empty()) {
    out += ",\"DiskPath\":";
    AppendJsonString(out, r.disk_path);
  }
  out += "}\n";
  return out;
}

Result<std::string> Base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) return InvalidArgument("base64 length is not a multiple of 4");
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      char c = text[i + k];
      if (c == '=' && last && k >= 2) {
        v[k] = 0;
        ++pad;
        continue;
      }
      if (pad > 0) return InvalidArgument("base64 data after padding");
      v[k] = text::Base64Value(c);
      if (v[k] < 0) return InvalidArgument("bad base64 character");
    }
    uint32_t w =
        (uint32_t(v[0]) << 18) | (uint32_t(v[1]) << 12) | (uint32_t(v[2]) << 6) | uint32_t(v[3]);
    out.push_back(static_cast<char>((w >> 16) & 0xff));
    if (pad < 2) out.push_back(static_cast<char>((w >> 8) & 0xff));
    if (pad < 1) out.push_back(static_cast<char>(w & 0xff));
  }
  return out;
}

std::optional<std::string> Unhex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = HexValue(hex[i]);
    int lo = HexValue(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return out;
}

std::string Rfc3339Nanos(int64_t unix_nanos) {
  time_t secs = static_cast<time_t>(unix_nanos / 1000000000);
  int64_t nanos = unix_nanos % 1000000000;
  if (nanos < 0) {
    nanos += 1000000000;
    --secs;
  }
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[64];
  size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  char frac[16];
  snprintf(frac, sizeof(frac), ".%09lldZ", static_cast<long long>(nanos));
  return std::string(buf, n) + frac;
}

}  // namespace buildcache::gocacheprog
