#pragma once

// Rewriting a packument as it arrives, without parsing it: the document is passed on as the
// upstream sent it, except each version's dist.tarball string, which a scanner locates and
// replaces as soon as the version is complete. So a served packument's first bytes leave while the
// upstream is still sending the rest, the memory a rewrite holds is one version, not the document,
// and the cost is a scan, not a parse and re-serialization.

#include <cstddef>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "agent/frontends/npm/names.h"
#include "agent/frontends/npm/packument.h"
#include "agent/upstream/url.h"
#include "common/status/status.h"

namespace buildcache::npm {

// Receives a rewritten packument in order: literal JSON text, and the places where the tarball
// base URL ("http://host:port/npm/") goes. The base is left to the sink so one rewrite serves
// every address clients reach the agent by.
class RewriteSink {
 public:
  virtual ~RewriteSink() = default;
  virtual Status Text(std::string_view text) = 0;
  virtual Status Base() = 0;
};

// A rewritten packument held in memory: `text` with the base inserted at each offset of `bases`
// (ascending). Memory is the document's size, whatever the base.
struct PackumentTemplate {
  std::string text;
  std::vector<size_t> bases;
  // The length of the document with a base of base_size bytes.
  uint64_t Length(size_t base_size) const { return text.size() + bases.size() * base_size; }
};

// A RewriteSink that fills a PackumentTemplate.
class TemplateSink : public RewriteSink {
 public:
  explicit TemplateSink(PackumentTemplate* out) : out_(out) {}
  Status Text(std::string_view text) override {
    out_->text.append(text);
    return Status::Ok();
  }
  Status Base() override {
    out_->bases.push_back(out_->text.size());
    return Status::Ok();
  }

 private:
  PackumentTemplate* out_;
};

// Rewrites one packument fed in pieces, with ReadPackument's rules for each version: a servable
// tarball URL becomes <base><name.full()>/-/<file>, a version whose tarball is not servable is
// left out (the first version to claim a file name keeps it), a version without a string
// dist.tarball is kept as it is. The tarball index is collected as the versions pass.
//
// The document is checked as it streams: one JSON object, strings (no raw control characters),
// literals and numbers, nesting (at most 64 levels) and the order of keys, values, ',' and ':'.
// Within a version, the last "dist" and its last "tarball", "integrity" and "shasum" count, as
// for JSON.parse; a version with a key written with escapes at those levels is parsed in full and
// re-serialized instead. A top-level key written with escapes, a second "versions", or a version
// listed twice is refused: npm would read such a document differently than a rewrite that passes
// it through. Errors are kInvalidArgument; after one, the rewriter stays failed. Not thread-safe.
class PackumentRewriter {
 public:
  // sink == nullptr: only the tarball index is collected (nothing is rendered).
  PackumentRewriter(const upstream::Url& packument_url, PackageName name, RewriteSink* sink);

  Status Feed(std::string_view data);
  // Checks that the document is complete.
  Status Finish();

  TarballIndex& tarballs() { return tarballs_; }
  size_t dropped() const { return dropped_; }

 private:
  enum class Expect { kValue, kKeyOrClose, kKey, kColon, kCommaOrClose, kDone };

  Status Fail(std::string message);
  Status Emit(std::string_view text);
  // A version member of "versions" is complete in member_: rewrites it.
  Status EndVersion();
  // After a complete value at the current depth.
  void ValueDone();

  upstream::Url base_url_;
  PackageName name_;
  RewriteSink* sink_;
  TarballIndex tarballs_;
  size_t dropped_ = 0;
  Status failed_;

  std::vector<char> stack_;  // '{' or '['
  Expect expect_ = Expect::kValue;
  bool in_string_ = false;
  bool escaped_ = false;
  bool in_scalar_ = false;
  bool string_is_key_ = false;
  bool array_open_ = false;  // just after '[': ']' may close it

  // Top-level key tracking.
  std::string top_key_;
  bool top_key_escaped_ = false;
  bool capturing_top_key_ = false;
  bool next_is_versions_ = false;
  bool seen_versions_ = false;

  // Inside "versions" (its object is stack level 2): each member is buffered, then rewritten.
  bool in_versions_ = false;
  bool versions_emitted_any_ = false;
  std::string member_;
  size_t member_key_end_ = 0;  // end of the key's closing quote in member_
  std::set<std::string, std::less<>> version_keys_;

  // Inside one version (stack levels 3 and 4): where its dist.tarball, dist.integrity and
  // dist.shasum strings are in member_ (the last of each wins, as for JSON.parse), so the tarball
  // URL is replaced in the text without parsing the version. A key there written with escapes
  // sends the version through a full parse instead.
  struct Range {
    size_t begin = 0;
    size_t end = 0;
    bool set = false;
  };
  void ResetVersion();

  // One buffered member of "versions": its text, the key as written and where its ':' is.
  struct VersionMember {
    const std::string& member;
    std::string_view key_text;
    size_t colon;
    std::string key = {};  // decoded
  };
  struct ScannedDist {
    Range tarball;
    Range integrity;
    Range shasum;
  };
  // The version as scanned: its tarball string replaced in the text.
  Status RewriteScanned(const VersionMember& version, const ScannedDist& dist);
  // The version parsed in full and re-serialized (a key at its dist levels had escapes).
  Status RewriteParsed(const VersionMember& version);
  // "," unless first, then the version's key and ':'.
  Status EmitSeparator(const VersionMember& version);
  // The sink's base URL (where a rewritten tarball URL begins).
  Status EmitBase();
  // Records the version's tarball in the index when it is servable (false, counted as dropped,
  // when not): its URL resolves to a valid file name, which no earlier version claimed for a
  // different tarball. *filename is that name.
  bool Admit(std::string_view tarball, std::string integrity, std::string shasum,
             std::string* filename);

  size_t key_level_ = 0;  // stack size of the key being read
  std::string key_;
  bool key_escaped_ = false;
  std::string level3_key_;
  std::string level4_key_;
  bool dist_open_ = false;  // the version's current "dist" is an object being read
  Range tarball_;
  Range integrity_;
  Range shasum_;
  Range* string_target_ = nullptr;  // the range the current string value fills
  bool version_needs_parse_ = false;
  std::string scalar_;  // the scalar being read (checked when it ends)
};

}  // namespace buildcache::npm
