#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status/status.h"

namespace YAML {
class Node;
}  // namespace YAML

namespace buildcache::config {

class Node;

// A parsed YAML configuration file that remembers which keys the program looked up, so keys it
// never asked for (typos, misplaced keys) are reported instead of silently ignored.
//
// Strictness: one document per file; duplicate keys and non-scalar keys are rejected at parse
// time; an empty file is an empty mapping. No yaml-cpp exception escapes this library; every
// error is a kInvalidArgument Status whose message starts with "FILE:LINE:COLUMN: " (1-based) and
// names the key path, e.g.
//   agent.yaml:4:3: store.maxSizee: unknown key (known: dataDir, maxSize, verifyReads)
//
// A Document and its Nodes share state and are not thread-safe; load configuration on one
// thread. Nodes stay valid after the Document is destroyed.
class Document {
 public:
  // Reads and parses a file. A missing or unreadable file yields the errno-derived status
  // (kNotFound, kFailedPrecondition, ...) naming the path.
  static Result<Document> LoadFile(const std::string& path);
  // Parses text; name stands for the file name in messages.
  static Result<Document> Parse(std::string_view text, std::string name = "<config>");

  // The top-level mapping. Fails if the document is a scalar or a sequence.
  Result<Node> Root() const;

  // Reports every key of a mapping the program opened (Root(), Section(), Item() of a mapping)
  // that was never looked up, one "FILE:L:C: PATH: unknown key (known: ...)" per line, where
  // "known" lists the keys the program asked for on that mapping. Mappings the program did not
  // open itself are not examined (they are either reported as an unknown key of their parent
  // or were read whole, like ReadStringMap). Call after reading everything.
  Status CheckUnknownKeys() const;

  const std::string& name() const;

 private:
  friend class Node;
  struct State;
  explicit Document(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

// A position in a Document: a mapping, sequence, scalar, null, or an absent key. Cheap to copy.
//
// The Read* methods look up a key of this mapping and store its value in *out when the key is
// present; an absent key leaves *out unchanged (so defaults are simply pre-set fields). A present
// key with a value of the wrong type fails with the key's path, the problem and the offending
// value: `store.maxSize: expected a byte size, got "lots"`. An explicit null (`key:` with nothing
// after it, `~`, `null`) is an error for scalar values, but an empty section for Section().
//
// Type rules (YAML 1.2 core schema, no yes/no/on/off): booleans are the plain scalars
// true/false (also True/TRUE/False/FALSE); integers are plain decimal scalars; strings are any
// scalar, quoted or not; byte sizes and durations are scalars in the syntax of units.h, quoted or
// not.
class Node {
 public:
  // "store.maxSize", "peers[2].url"; empty for the root.
  const std::string& path() const { return path_; }
  // "FILE:LINE:COLUMN" of this node (of its key when the value is null or absent).
  std::string Where() const;

  bool present() const;  // false for an absent key
  bool IsNull() const;
  bool IsScalar() const;
  bool IsMap() const;
  bool IsSequence() const;

  // Looks up key in this mapping and records it as known. Returns an absent node if the key is
  // missing or this is not a mapping.
  Node Get(std::string_view key) const;

  // The mapping under key, opened for unknown-key checking. An absent or null key yields an
  // empty (absent) section whose reads all leave defaults; a scalar or sequence is an error.
  Result<Node> Section(std::string_view key) const;

  Status Read(std::string_view key, std::string* out) const;
  Status Read(std::string_view key, bool* out) const;
  Status Read(std::string_view key, int64_t* out) const;
  Status Read(std::string_view key, double* out) const;
  Status ReadByteSize(std::string_view key, uint64_t* out) const;
  Status ReadDuration(std::string_view key, std::chrono::nanoseconds* out) const;
  // A string that must be one of allowed: `store.verifyReads: must be one of changed, always;
  // got "sometimes"`.
  Status ReadOneOf(std::string_view key, std::initializer_list<std::string_view> allowed,
                   std::string* out) const;
  Status ReadOneOf(std::string_view key, const std::vector<std::string_view>& allowed,
                   std::string* out) const;
  // A free-form mapping of strings to strings (for example node labels); its keys are not
  // subject to unknown-key checks.
  Status ReadStringMap(std::string_view key, std::map<std::string, std::string>* out) const;
  // A sequence of strings.
  Status ReadStringList(std::string_view key, std::vector<std::string>* out) const;

  // The value of this node itself (it must be present and of the right type).
  Result<std::string> AsString() const;
  Result<bool> AsBool() const;
  Result<int64_t> AsInt() const;
  Result<double> AsDouble() const;
  Result<uint64_t> AsByteSize() const;
  Result<std::chrono::nanoseconds> AsDuration() const;

  // Sequences: the number of items (0 if absent or not a sequence) and item i. An item that is a
  // mapping is opened for unknown-key checking, like a Section.
  size_t size() const;
  Node Item(size_t i) const;

  // A kInvalidArgument status "WHERE: PATH: message" for problems found by the caller, such as a
  // value out of range: node.Error("must be greater than 0").
  Status Error(std::string_view message) const;

 private:
  friend class Document;
  Node(std::shared_ptr<Document::State> doc, std::shared_ptr<const YAML::Node> value,
       std::string path, int line, int column);
  Node Child(std::string_view key, bool record) const;
  Status TypeError(std::string_view expected) const;
  void Open() const;

  std::shared_ptr<Document::State> doc_;
  std::shared_ptr<const YAML::Node> value_;  // null when absent
  std::string path_;
  int line_ = 0;  // 1-based; 0 when unknown
  int column_ = 0;
};

}  // namespace buildcache::config
