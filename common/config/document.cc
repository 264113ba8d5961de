#include "common/config/document.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "common/config/units.h"
#include "common/text/quote.h"

namespace buildcache::config {

namespace {
// For each mapping the program looked into (by path): the keys it asked for.
using KnownKeys = std::map<std::string, std::set<std::string>, std::less<>>;
}  // namespace

struct Document::State {
  std::string name;
  std::shared_ptr<const YAML::Node> root;
  KnownKeys known;
};

namespace {

constexpr int kMaxDepth = 64;
constexpr size_t kMaxNodes = 1'000'000;  // bounds alias fan-out ("billion laughs")
constexpr std::string_view kStrTag = "tag:yaml.org,2002:str";

std::string JoinPath(const std::string& parent, std::string_view key) {
  if (parent.empty()) {
    return std::string(key);
  }
  std::string p = parent;
  p.push_back('.');
  p.append(key);
  return p;
}

std::string Location(const std::string& name, int line, int column) {
  if (line <= 0) {
    return name;
  }
  return name + ":" + std::to_string(line) + ":" + std::to_string(column);
}

std::string LocationOf(const std::string& name, const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0) {
    return name;
  }
  return Location(name, mark.line + 1, mark.column + 1);
}

// A value for an error message: quoted, control characters escaped, long values shortened.
std::string Quote(std::string_view s) {
  return text::Quote(s, {.max_chars = 80, .newline_as_n = true});
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) {
    prev[j] = j;
  }
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t subst = prev[j - 1] + (std::tolower(static_cast<unsigned char>(a[i - 1])) ==
                                            std::tolower(static_cast<unsigned char>(b[j - 1]))
                                        ? 0
                                        : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// Rejects what yaml-cpp accepts but a strict configuration should not: non-scalar keys,
// duplicate keys, runaway nesting or alias expansion.
Status Validate(const std::string& name, const YAML::Node& node, int depth, size_t* visited) {
  if (++*visited > kMaxNodes) {
    return InvalidArgument(name + ": document too large");
  }
  if (depth > kMaxDepth) {
    return InvalidArgument(LocationOf(name, node.Mark()) + ": nesting too deep");
  }
  if (node.IsMap()) {
    std::set<std::string> seen;
    // yaml-cpp iterators yield temporaries: copy the (cheap, reference-counted) nodes out.
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node key = it->first;
      const YAML::Node value = it->second;
      if (!key.IsScalar()) {
        return InvalidArgument(LocationOf(name, key.Mark()) + ": keys must be plain strings");
      }
      if (!seen.insert(key.Scalar()).second) {
        return InvalidArgument(LocationOf(name, key.Mark()) + ": duplicate key " +
                               Quote(key.Scalar()));
      }
      BC_RETURN_IF_ERROR(Validate(name, value, depth + 1, visited));
    }
  } else if (node.IsSequence()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node item = *it;
      BC_RETURN_IF_ERROR(Validate(name, item, depth + 1, visited));
    }
  }
  return Status::Ok();
}

void CollectUnknown(const std::string& name, const KnownKeys& known_keys, const YAML::Node& node,
                    const std::string& path, std::vector<std::string>* errors) {
  if (node.IsMap()) {
    auto known = known_keys.find(path);
    if (known == known_keys.end()) {
      return;  // not opened by the program
    }
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node key_node = it->first;
      const YAML::Node value = it->second;
      const std::string& key = key_node.Scalar();
      std::string child = JoinPath(path, key);
      if (known->second.count(key)) {
        CollectUnknown(name, known_keys, value, child, errors);
        continue;
      }
      std::string msg = LocationOf(name, key_node.Mark()) + ": " + child + ": unknown key";
      std::string suggestion;
      size_t best = 3;
      for (const std::string& k : known->second) {
        size_t d = EditDistance(key, k);
        if (d < best) {
          best = d;
          suggestion = k;
        }
      }
      std::string list;
      for (const std::string& k : known->second) {
        if (!list.empty()) {
          list += ", ";
        }
        list += k;
      }
      if (list.empty()) {
        msg += " (no keys are allowed here)";
      } else if (!suggestion.empty()) {
        msg.append(" (did you mean ")
            .append(suggestion)
            .append("? known: ")
            .append(list)
            .append(")");
      } else {
        msg += " (known: " + list + ")";
      }
      errors->push_back(std::move(msg));
    }
  } else if (node.IsSequence()) {
    size_t i = 0;
    for (auto it = node.begin(); it != node.end(); ++it, ++i) {
      const YAML::Node item = *it;
      CollectUnknown(name, known_keys, item, path + "[" + std::to_string(i) + "]", errors);
    }
  }
}

// Records where each document starts, to count documents without building them.
class DocumentStarts : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> starts;

  // YAML::EventHandler
  void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// Checks that text holds at most one document. yaml-cpp 0.7 neither reports a stray token after
// a document (",", "&a ,") nor advances past it: YAML::Load silently returns an empty document
// and YAML::LoadAll loops forever. Such a token shows up as a further document starting where
// the previous one did. May throw YAML::Exception.
Status CheckSingleDocument(const std::string& name, const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentStarts starts;
  for (int i = 0; i < 3 && parser.HandleNextDocument(starts); ++i) {
    size_t n = starts.starts.size();
    if (n >= 2 && starts.starts[n - 1].pos == starts.starts[n - 2].pos) {
      const YAML::Mark& m = starts.starts[n - 1];
      std::string found = m.pos >= 0 && static_cast<size_t>(m.pos) < text.size()
                              ? Quote(text.substr(m.pos, 1))
                              : std::string("end of input");
      return InvalidArgument(LocationOf(name, m) + ": malformed YAML: unexpected " + found);
    }
  }
  if (starts.starts.size() > 1) {
    return InvalidArgument(LocationOf(name, starts.starts[1]) +
                           ": more than one YAML document in a configuration file");
  }
  return Status::Ok();
}

}  // namespace

// --- Document ---

Result<Document> Document::LoadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return ErrnoStatus(errno, "reading config file " + path);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    return ErrnoStatus(errno, "reading config file " + path);
  }
  return Parse(ss.str(), path);
}

Result<Document> Document::Parse(std::string_view text, std::string name) {
  try {
    std::string copy(text);
    BC_RETURN_IF_ERROR(CheckSingleDocument(name, copy));
    auto state = std::make_shared<State>();
    state->name = std::move(name);
    YAML::Node root = YAML::Load(copy);
    size_t visited = 0;
    BC_RETURN_IF_ERROR(Validate(state->name, root, 0, &visited));
    state->root = std::make_shared<const YAML::Node>(root);
    return Document(std::move(state));
  } catch (const YAML::Exception& e) {
    return InvalidArgument(LocationOf(name, e.mark) + ": malformed YAML: " + e.msg);
  } catch (const std::exception& e) {
    return InvalidArgument(name + ": malformed YAML: " + e.what());
  }
}

Result<Node> Document::Root() const {
  const YAML::Node& root = *state_->root;
  if (root.IsNull()) {
    return Node(state_, nullptr, "", 0, 0);  // empty file
  }
  YAML::Mark mark = root.Mark();
  Node node(state_, state_->root, "", mark.is_null() ? 0 : mark.line + 1,
            mark.is_null() ? 0 : mark.column + 1);
  if (!root.IsMap()) {
    return InvalidArgument(node.Where() + ": expected a mapping of keys at the top level");
  }
  node.Open();
  return node;
}

Status Document::CheckUnknownKeys() const {
  try {
    std::vector<std::string> errors;
    CollectUnknown(state_->name, state_->known, *state_->root, "", &errors);
    if (errors.empty()) {
      return Status::Ok();
    }
    std::string msg;
    for (const std::string& e : errors) {
      if (!msg.empty()) {
        msg += "\n";
      }
      msg += e;
    }
    return InvalidArgument(std::move(msg));
  } catch (const std::exception& e) {
    return Internal(state_->name + ": " + e.what());
  }
}

const std::string& Document::name() const { return state_->name; }

// --- Node ---

Node::Node(std::shared_ptr<Document::State> doc, std::shared_ptr<const YAML::Node> value,
           std::string path, int line, int column)
    : doc_(std::move(doc)),
      value_(std::move(value)),
      path_(std::move(path)),
      line_(line),
      column_(column) {}

std::string Node::Where() const { return Location(doc_->name, line_, column_); }

bool Node::present() const { return value_ != nullptr; }
bool Node::IsNull() const { return value_ && value_->IsNull(); }
bool Node::IsScalar() const { return value_ && value_->IsScalar(); }
bool Node::IsMap() const { return value_ && value_->IsMap(); }
bool Node::IsSequence() const { return value_ && value_->IsSequence(); }

void Node::Open() const { doc_->known[path_]; }

Node Node::Child(std::string_view key, bool record) const {
  std::string path = JoinPath(path_, key);
  if (record) {
    doc_->known[path_].insert(std::string(key));
  }
  if (!IsMap()) {
    return Node(doc_, nullptr, std::move(path), line_, column_);
  }
  for (auto it = value_->begin(); it != value_->end(); ++it) {
    const YAML::Node k = it->first;
    const YAML::Node v = it->second;
    if (k.Scalar() != key) {
      continue;
    }
    // Null values carry no useful position in yaml-cpp; point at the key instead.
    YAML::Mark mark = v.IsNull() ? k.Mark() : v.Mark();
    if (mark.is_null()) {
      mark = k.Mark();
    }
    return Node(doc_, std::make_shared<const YAML::Node>(v), std::move(path),
                mark.is_null() ? line_ : mark.line + 1, mark.is_null() ? column_ : mark.column + 1);
  }
  return Node(doc_, nullptr, std::move(path), line_, column_);
}

Node Node::Get(std::string_view key) const { return Child(key, /*record=*/true); }

Status Node::Error(std::string_view message) const {
  std::string m = Where() + ": ";
  m += path_.empty() ? std::string("top level") : path_;
  m += ": ";
  m += message;
  return InvalidArgument(std::move(m));
}

Status Node::TypeError(std::string_view expected) const {
  std::string got;
  if (!value_) {
    got = "nothing";
  } else if (value_->IsNull()) {
    got = "null";
  } else if (value_->IsMap()) {
    got = "a mapping";
  } else if (value_->IsSequence()) {
    got = "a sequence";
  } else {
    got = Quote(value_->Scalar());
  }
  return Error("expected " + std::string(expected) + ", got " + got);
}

Result<Node> Node::Section(std::string_view key) const {
  Node child = Get(key);
  if (!child.present() || child.IsNull()) {
    return Node(doc_, nullptr, child.path_, child.line_, child.column_);
  }
  if (!child.IsMap()) {
    return child.TypeError("a mapping of keys");
  }
  child.Open();
  return child;
}

Result<std::string> Node::AsString() const {
  if (!IsScalar()) {
    return TypeError("a string");
  }
  return value_->Scalar();
}

namespace {

// Quoted or !!str-tagged scalars are strings, never booleans or numbers.
bool IsPlain(const YAML::Node& n) { return n.Tag() != "!" && n.Tag() != kStrTag; }

}  // namespace

Result<bool> Node::AsBool() const {
  if (IsScalar() && IsPlain(*value_)) {
    const std::string& s = value_->Scalar();
    if (s == "true" || s == "True" || s == "TRUE") {
      return true;
    }
    if (s == "false" || s == "False" || s == "FALSE") {
      return false;
    }
  }
  return TypeError("true or false");
}

Result<int64_t> Node::AsInt() const {
  if (!IsScalar() || !IsPlain(*value_)) {
    return TypeError("an integer");
  }
  std::string_view s = value_->Scalar();
  if (s.starts_with('+')) {
    s.remove_prefix(1);
  }
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range) {
    return TypeError("an integer in the 64-bit range");
  }
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) {
    return TypeError("an integer");
  }
  return v;
}

Result<double> Node::AsDouble() const {
  if (!IsScalar() || !IsPlain(*value_)) {
    return TypeError("a number");
  }
  std::string_view s = value_->Scalar();
  if (s.starts_with('+')) {
    s.remove_prefix(1);
  }
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, std::chars_format::general);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty() || !std::isfinite(v)) {
    return TypeError("a number");
  }
  return v;
}

Result<uint64_t> Node::AsByteSize() const {
  if (!IsScalar()) {
    return TypeError("a byte size such as 512Mi or 10Gi");
  }
  Result<uint64_t> r = ParseByteSize(value_->Scalar());
  if (!r.ok()) {
    return Error(r.status().message());
  }
  return r;
}

Result<std::chrono::nanoseconds> Node::AsDuration() const {
  if (!IsScalar()) {
    return TypeError("a duration such as 30s or 5m");
  }
  Result<std::chrono::nanoseconds> r = ParseDuration(value_->Scalar());
  if (!r.ok()) {
    return Error(r.status().message());
  }
  return r;
}

namespace {

template <typename T, typename Fn>
Status ReadInto(const Node& child, T* out, Fn&& as) {
  if (!child.present()) {
    return Status::Ok();
  }
  auto r = as(child);
  if (!r.ok()) {
    return r.status();
  }
  *out = std::move(r).value();
  return Status::Ok();
}

}  // namespace

Status Node::Read(std::string_view key, std::string* out) const {
  return ReadInto(Get(key), out, [](const Node& n) { return n.AsString(); });
}

Status Node::Read(std::string_view key, bool* out) const {
  return ReadInto(Get(key), out, [](const Node& n) { return n.AsBool(); });
}

Status Node::Read(std::string_view key, int64_t* out) const {
  return ReadInto(Get(key), out, [](const Node& n) { return n.AsInt(); });
}

Status Node::Read(std::string_view key, double* out) const {
  return ReadInto(Get(key), out, [](const Node& n) { return n.AsDouble(); });
}

Status Node::ReadByteSize(std::string_view key, uint64_t* out) const {
  return ReadInto(Get(key), out, [](const Node& n) { return n.AsByteSize(); });
}

Status Node::ReadDuration(std::string_view key, std::chrono::nanoseconds* out) const {
  return ReadInto(Get(key), out, [](const Node& n) { return n.AsDuration(); });
}

Status Node::ReadOneOf(std::string_view key, std::initializer_list<std::string_view> allowed,
                       std::string* out) const {
  return ReadOneOf(key, std::vector<std::string_view>(allowed), out);
}

Status Node::ReadOneOf(std::string_view key, const std::vector<std::string_view>& allowed,
                       std::string* out) const {
  Node child = Get(key);
  if (!child.present()) {
    return Status::Ok();
  }
  std::string list;
  for (std::string_view a : allowed) {
    if (!list.empty()) {
      list += ", ";
    }
    list += a;
  }
  Result<std::string> s = child.AsString();
  if (!s.ok()) {
    return child.TypeError("one of " + list);
  }
  for (std::string_view a : allowed) {
    if (*s == a) {
      *out = std::move(s).value();
      return Status::Ok();
    }
  }
  return child.Error("must be one of " + list + "; got " + Quote(*s));
}

Status Node::ReadStringMap(std::string_view key, std::map<std::string, std::string>* out) const {
  Node child = Get(key);
  if (!child.present()) {
    return Status::Ok();
  }
  if (child.IsNull()) {
    out->clear();
    return Status::Ok();
  }
  if (!child.IsMap()) {
    return child.TypeError("a mapping of strings");
  }
  std::map<std::string, std::string> result;
  for (auto it = child.value_->begin(); it != child.value_->end(); ++it) {
    const YAML::Node k = it->first;
    Node value = child.Child(k.Scalar(), /*record=*/false);
    BC_ASSIGN_OR_RETURN(std::string v, value.AsString());
    result.emplace(k.Scalar(), std::move(v));
  }
  *out = std::move(result);
  return Status::Ok();
}

Status Node::ReadStringList(std::string_view key, std::vector<std::string>* out) const {
  Node child = Get(key);
  if (!child.present()) {
    return Status::Ok();
  }
  if (child.IsNull()) {
    out->clear();
    return Status::Ok();
  }
  if (!child.IsSequence()) {
    return child.TypeError("a list of strings");
  }
  std::vector<std::string> result;
  for (size_t i = 0; i < child.size(); ++i) {
    BC_ASSIGN_OR_RETURN(std::string v, child.Item(i).AsString());
    result.push_back(std::move(v));
  }
  *out = std::move(result);
  return Status::Ok();
}

size_t Node::size() const { return IsSequence() ? value_->size() : 0; }

Node Node::Item(size_t i) const {
  std::string path = path_ + "[" + std::to_string(i) + "]";
  if (!IsSequence()) {
    return Node(doc_, nullptr, std::move(path), line_, column_);
  }
  size_t k = 0;
  for (auto it = value_->begin(); it != value_->end(); ++it, ++k) {
    if (k != i) {
      continue;
    }
    const YAML::Node v = *it;
    YAML::Mark mark = v.Mark();
    Node item(doc_, std::make_shared<const YAML::Node>(v), std::move(path),
              mark.is_null() ? line_ : mark.line + 1, mark.is_null() ? column_ : mark.column + 1);
    if (item.IsMap()) {
      item.Open();
    }
    return item;
  }
  return Node(doc_, nullptr, std::move(path), line_, column_);
}

}  // namespace buildcache::config
