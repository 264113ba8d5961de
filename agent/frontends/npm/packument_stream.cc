#include "agent/frontends/npm/packument_stream.h"

#include <nlohmann/json.hpp>
#include <utility>

namespace buildcache::npm {
namespace {

using Json = nlohmann::json;

constexpr size_t kMaxDepth = 64;
// Put where the base goes while a version is re-serialized: control characters, which a JSON
// serializer always escapes, so the escaped form below can only come from here (checked: it must
// occur exactly once).
constexpr std::string_view kMarker = "\x1f\x1e\x1d";
constexpr std::string_view kEscapedMarker = "\\u001f\\u001e\\u001d";

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Characters of numbers and of true/false/null (checked loosely: the client parses them).
bool IsScalarChar(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '-' || c == '+' || c == '.' ||
         c == 'E';
}

// true, false, null or a JSON number.
bool IsJsonScalar(std::string_view s) {
  if (s == "true" || s == "false" || s == "null") return true;
  size_t i = 0;
  auto digits = [&] {
    size_t from = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    return i > from;
  };
  if (i < s.size() && s[i] == '-') ++i;
  if (i < s.size() && s[i] == '0') {
    ++i;
  } else if (!digits()) {
    return false;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (!digits()) return false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == s.size();
}

// The value of a JSON string token (quotes included).
std::optional<std::string> DecodeString(std::string_view token) {
  Json j = Json::parse(token, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_string()) return std::nullopt;
  return j.get<std::string>();
}

std::string StringField(const Json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

PackumentRewriter::PackumentRewriter(const upstream::Url& packument_url, PackageName name,
                                     RewriteSink* sink)
    : base_url_(packument_url), name_(std::move(name)), sink_(sink) {}

Status PackumentRewriter::Fail(std::string message) {
  if (failed_.ok()) failed_ = InvalidArgument("packument: " + std::move(message));
  return failed_;
}

Status PackumentRewriter::Emit(std::string_view text) {
  if (sink_ == nullptr || text.empty()) return Status::Ok();
  Status s = sink_->Text(text);
  if (!s.ok() && failed_.ok()) failed_ = s;
  return s;
}

void PackumentRewriter::ValueDone() {
  expect_ = stack_.empty() ? Expect::kDone : Expect::kCommaOrClose;
  if (in_versions_ && stack_.size() == 2) (void)EndVersion();
}

void PackumentRewriter::ResetVersion() {
  level3_key_.clear();
  level4_key_.clear();
  dist_open_ = false;
  tarball_ = integrity_ = shasum_ = Range{};
  string_target_ = nullptr;
  version_needs_parse_ = false;
}

Status PackumentRewriter::EndVersion() {
  std::string member = std::move(member_);
  member_.clear();
  const bool parse = version_needs_parse_;
  const ScannedDist dist{tarball_, integrity_, shasum_};
  ResetVersion();
  const size_t colon = member.find(':', member_key_end_);
  if (member_key_end_ == 0 || colon == std::string::npos) return Fail("malformed version entry");
  VersionMember version{member, std::string_view(member).substr(0, member_key_end_), colon};
  Json key = Json::parse(version.key_text, nullptr, /*allow_exceptions=*/false);
  if (key.is_discarded() || !key.is_string()) return Fail("malformed version key");
  version.key = key.get<std::string>();
  if (!version_keys_.insert(version.key).second) {
    return Fail("version " + version.key + " is listed twice");
  }
  return parse ? RewriteParsed(version) : RewriteScanned(version, dist);
}

Status PackumentRewriter::EmitSeparator(const VersionMember& version) {
  if (versions_emitted_any_) BC_RETURN_IF_ERROR(Emit(","));
  versions_emitted_any_ = true;
  BC_RETURN_IF_ERROR(Emit(version.key_text));
  return Emit(":");
}

Status PackumentRewriter::EmitBase() {
  Status s = sink_->Base();
  if (!s.ok() && failed_.ok()) failed_ = s;
  return s;
}

bool PackumentRewriter::Admit(std::string_view tarball, std::string integrity, std::string shasum,
                              std::string* filename) {
  std::optional<std::string> name;
  TarballDist entry;
  if (auto url = upstream::ResolveReference(base_url_, tarball); url.ok()) {
    name = TarballFilename(*url);
    entry.url = url->ToString();
  }
  entry.integrity = std::move(integrity);
  entry.shasum = std::move(shasum);
  bool servable = name.has_value();
  if (servable) {
    auto [existing, inserted] = tarballs_.try_emplace(*name, entry);
    servable = inserted || (existing->second.url == entry.url &&
                            existing->second.integrity == entry.integrity &&
                            existing->second.shasum == entry.shasum);
  }
  if (!servable) {
    ++dropped_;
    return false;
  }
  *filename = std::move(*name);
  return true;
}

Status PackumentRewriter::RewriteScanned(const VersionMember& version, const ScannedDist& dist) {
  const std::string_view member = version.member;
  const std::string_view value_text = member.substr(version.colon + 1);
  // The version as the scanner saw it: its tarball string replaced in the text.
  if (!dist.tarball.set) {
    BC_RETURN_IF_ERROR(EmitSeparator(version));
    return Emit(value_text);
  }
  auto token = [&](const Range& r) { return member.substr(r.begin, r.end - r.begin); };
  std::optional<std::string> tarball = DecodeString(token(dist.tarball));
  std::optional<std::string> integrity =
      dist.integrity.set ? DecodeString(token(dist.integrity)) : std::string();
  std::optional<std::string> shasum =
      dist.shasum.set ? DecodeString(token(dist.shasum)) : std::string();
  if (!tarball || !integrity || !shasum) return Fail("malformed string in a version's dist");
  std::string filename;
  if (!Admit(*tarball, std::move(*integrity), std::move(*shasum), &filename)) return Status::Ok();
  if (sink_ == nullptr) return Status::Ok();
  BC_RETURN_IF_ERROR(EmitSeparator(version));
  const size_t value_begin = version.colon + 1;
  BC_RETURN_IF_ERROR(Emit(member.substr(value_begin, dist.tarball.begin - value_begin)));
  BC_RETURN_IF_ERROR(Emit("\""));
  BC_RETURN_IF_ERROR(EmitBase());
  BC_RETURN_IF_ERROR(Emit(name_.full() + "/-/" + filename + "\""));
  return Emit(member.substr(dist.tarball.end));
}

Status PackumentRewriter::RewriteParsed(const VersionMember& version) {
  const std::string_view value_text = std::string_view(version.member).substr(version.colon + 1);
  Json parsed = Json::parse(value_text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return Fail("version " + version.key + " is not JSON");

  Json* tarball = nullptr;
  Json* dist = nullptr;
  if (parsed.is_object()) {
    auto d = parsed.find("dist");
    if (d != parsed.end() && d->is_object()) {
      dist = &*d;
      auto t = d->find("tarball");
      if (t != d->end() && t->is_string()) tarball = &*t;
    }
  }
  if (tarball == nullptr) {
    // Kept as the upstream wrote it.
    BC_RETURN_IF_ERROR(EmitSeparator(version));
    return Emit(value_text);
  }
  std::string filename;
  if (!Admit(tarball->get_ref<const std::string&>(), StringField(*dist, "integrity"),
             StringField(*dist, "shasum"), &filename)) {
    return Status::Ok();
  }
  if (sink_ == nullptr) return Status::Ok();
  *tarball = std::string(kMarker) + name_.full() + "/-/" + filename;
  const std::string dumped =
      parsed.dump(-1, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace);
  const size_t at = dumped.find(kEscapedMarker);
  if (at == std::string::npos || dumped.rfind(kEscapedMarker) != at) {
    return Fail("version " + version.key + " cannot be rewritten");
  }
  BC_RETURN_IF_ERROR(EmitSeparator(version));
  BC_RETURN_IF_ERROR(Emit(std::string_view(dumped).substr(0, at)));
  BC_RETURN_IF_ERROR(EmitBase());
  return Emit(std::string_view(dumped).substr(at + kEscapedMarker.size()));
}

// Long on purpose (~185 lines): one pass of a byte-at-a-time JSON scanner whose states are the
// branches below; split into functions, every piece would take the whole scanner state and the
// position in `data` and hand back where to continue.
Status PackumentRewriter::Feed(std::string_view data) {
  if (!failed_.ok()) return failed_;
  size_t emit_from = 0;
  for (size_t i = 0; i < data.size(); ++i) {
    const char c = data[i];
    // A scalar ends at the first character that cannot belong to it; that character is then
    // read on its own.
    if (in_scalar_ && !IsScalarChar(c)) {
      in_scalar_ = false;
      if (!IsJsonScalar(scalar_)) return Fail("malformed literal or number");
      ValueDone();
      if (!failed_.ok()) return failed_;
    }
    if (in_versions_) {
      // The versions object closes: the members were emitted one by one.
      if (!in_string_ && !in_scalar_ && stack_.size() == 2 && c == '}' &&
          (expect_ == Expect::kKeyOrClose || expect_ == Expect::kCommaOrClose)) {
        in_versions_ = false;
        BC_RETURN_IF_ERROR(Emit("}"));
        emit_from = i + 1;
      } else if (!(member_.empty() && stack_.size() == 2 && !in_string_ &&
                   (IsSpace(c) || c == ','))) {
        member_.push_back(c);
      }
    }

    if (in_string_) {
      if (escaped_) {
        escaped_ = false;
      } else if (c == '\\') {
        escaped_ = true;
        if (capturing_top_key_) top_key_escaped_ = true;
        if (string_is_key_) key_escaped_ = true;
      } else if (c == '"') {
        in_string_ = false;
        if (string_is_key_) {
          expect_ = Expect::kColon;
          if (capturing_top_key_) {
            capturing_top_key_ = false;
            if (top_key_escaped_) return Fail("a top-level key is written with escapes");
            next_is_versions_ = top_key_ == "versions";
          }
          if (in_versions_ && stack_.size() == 2) member_key_end_ = member_.size();
          if (in_versions_ && (key_level_ == 3 || key_level_ == 4)) {
            if (key_escaped_) version_needs_parse_ = true;
            (key_level_ == 3 ? level3_key_ : level4_key_) = key_;
          }
        } else {
          if (string_target_ != nullptr) {
            string_target_->end = member_.size();
            string_target_->set = true;
            string_target_ = nullptr;
          }
          ValueDone();
        }
      } else if (static_cast<unsigned char>(c) < 0x20) {
        return Fail("control character in a string");
      } else {
        if (capturing_top_key_ && top_key_.size() < 16) top_key_.push_back(c);
        if (string_is_key_ && key_.size() < 16) key_.push_back(c);
      }
      if (!failed_.ok()) return failed_;
      continue;
    }
    if (in_scalar_) {
      if (scalar_.size() >= 256) return Fail("number too long");
      scalar_.push_back(c);
      continue;
    }
    if (IsSpace(c)) continue;

    auto start_value = [&]() -> Status {
      const bool versions_value = stack_.size() == 1 && next_is_versions_;
      next_is_versions_ = false;
      if (versions_value) {
        if (seen_versions_) return Fail("\"versions\" is given twice");
        seen_versions_ = true;
      }
      if (stack_.empty() && c != '{') return Fail("not a JSON object");
      if (in_versions_ && stack_.size() == 3 && level3_key_ == "dist") {
        // A (new) dist value: the last one counts.
        tarball_ = integrity_ = shasum_ = Range{};
        dist_open_ = c == '{';
      } else if (in_versions_ && stack_.size() == 4 && dist_open_) {
        Range* target = level4_key_ == "tarball"     ? &tarball_
                        : level4_key_ == "integrity" ? &integrity_
                        : level4_key_ == "shasum"    ? &shasum_
                                                     : nullptr;
        if (target != nullptr) {
          *target = Range{};
          if (c == '"') {
            target->begin = member_.size() - 1;
            string_target_ = target;
          }
        }
      }
      if (c == '{' || c == '[') {
        if (stack_.size() >= kMaxDepth) return Fail("nests too deeply");
        stack_.push_back(c);
        expect_ = c == '{' ? Expect::kKeyOrClose : Expect::kValue;
        array_open_ = c == '[';  // "]" may follow at once
        if (versions_value && c == '{') {
          BC_RETURN_IF_ERROR(Emit(data.substr(emit_from, i + 1 - emit_from)));
          emit_from = data.size();
          in_versions_ = true;
          versions_emitted_any_ = false;
          member_.clear();
        }
        return Status::Ok();
      }
      if (c == '"') {
        in_string_ = true;
        string_is_key_ = false;
        return Status::Ok();
      }
      if (IsScalarChar(c)) {
        in_scalar_ = true;
        scalar_.assign(1, c);
        return Status::Ok();
      }
      return Fail(std::string("unexpected '") + c + "'");
    };
    auto start_key = [&]() {
      in_string_ = true;
      string_is_key_ = true;
      key_level_ = stack_.size();
      key_.clear();
      key_escaped_ = false;
      if (stack_.size() == 1) {
        capturing_top_key_ = true;
        top_key_.clear();
        top_key_escaped_ = false;
      }
    };
    auto close = [&](char open) -> Status {
      if (stack_.empty() || stack_.back() != open) return Fail("unbalanced brackets");
      if (stack_.size() == 4 && dist_open_) dist_open_ = false;
      stack_.pop_back();
      array_open_ = false;
      ValueDone();
      return failed_;
    };

    switch (expect_) {
      case Expect::kValue:
        if (c == ']' && array_open_) {
          BC_RETURN_IF_ERROR(close('['));
        } else {
          array_open_ = false;
          BC_RETURN_IF_ERROR(start_value());
        }
        break;
      case Expect::kKeyOrClose:
        if (c == '}') {
          BC_RETURN_IF_ERROR(close('{'));
        } else if (c == '"') {
          start_key();
        } else {
          return Fail("expected a key");
        }
        break;
      case Expect::kKey:
        if (c != '"') return Fail("expected a key");
        start_key();
        break;
      case Expect::kColon:
        if (c != ':') return Fail("expected ':'");
        expect_ = Expect::kValue;
        break;
      case Expect::kCommaOrClose:
        if (c == ',') {
          expect_ = stack_.back() == '{' ? Expect::kKey : Expect::kValue;
        } else if (c == '}' || c == ']') {
          BC_RETURN_IF_ERROR(close(c == '}' ? '{' : '['));
        } else {
          return Fail("expected ',' or a closing bracket");
        }
        break;
      case Expect::kDone:
        return Fail("text after the document");
    }
    if (!failed_.ok()) return failed_;
  }
  if (!in_versions_ && emit_from < data.size()) BC_RETURN_IF_ERROR(Emit(data.substr(emit_from)));
  return failed_;
}

Status PackumentRewriter::Finish() {
  if (!failed_.ok()) return failed_;
  if (in_scalar_) {
    in_scalar_ = false;
    if (!IsJsonScalar(scalar_)) return Fail("malformed literal or number");
    ValueDone();
  }
  if (!failed_.ok()) return failed_;
  if (in_string_ || expect_ != Expect::kDone) return Fail("the document is incomplete");
  return Status::Ok();
}

}  // namespace buildcache::npm
