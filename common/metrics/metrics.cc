#include "common/metrics/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <variant>

#include "common/text/utf8.h"

namespace buildcache::metrics {
namespace {

[[noreturn]] void Die(const std::string& what) { CHECK(false) << "metrics: " << what; }

bool IsValidName(std::string_view name, bool allow_colon) {
  if (name.empty()) {
    return false;
  }
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (allow_colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
    if (!ok) {
      return false;
    }
  }
  return true;
}

// Appends s with the escapes of the text format: backslash and newline always, double quote in
// label values. Prometheus rejects invalid UTF-8, so each invalid byte becomes U+FFFD.
void AppendEscaped(std::string* out, std::string_view s, bool escape_quote) {
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '\n') {
      out->append("\\n");
    } else if (c == '"' && escape_quote) {
      out->append("\\\"");
    } else {
      size_t len = text::Utf8SequenceLength(s, i);
      if (len == 0) {
        out->append("\xEF\xBF\xBD");
        ++i;
      } else {
        out->append(s.substr(i, len));
        i += len;
      }
      continue;
    }
    ++i;
  }
}

// Appends {a="x",b="y"} (plus an optional extra pair such as le), or nothing when there are no
// labels at all.
void AppendLabels(std::string* out, const std::vector<std::string>& names,
                  const std::vector<std::string>& values, std::string_view extra_name = {},
                  std::string_view extra_value = {}) {
  if (names.empty() && extra_name.empty()) {
    return;
  }
  out->push_back('{');
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) {
      out->push_back(',');
    }
    out->append(names[i]);
    out->append("=\"");
    AppendEscaped(out, values[i], /*escape_quote=*/true);
    out->push_back('"');
  }
  if (!extra_name.empty()) {
    if (!names.empty()) {
      out->push_back(',');
    }
    out->append(extra_name);
    out->append("=\"");
    out->append(extra_value);
    out->push_back('"');
  }
  out->push_back('}');
}

void AppendHeader(std::string* out, const std::string& name, const std::string& help,
                  std::string_view type) {
  out->append("# HELP ");
  out->append(name);
  out->push_back(' ');
  AppendEscaped(out, help, /*escape_quote=*/false);
  out->append("\n# TYPE ");
  out->append(name);
  out->push_back(' ');
  out->append(type);
  out->push_back('\n');
}

void AppendSample(std::string* out, std::string_view name, const std::vector<std::string>& names,
                  const std::vector<std::string>& values, double v,
                  std::string_view extra_name = {}, std::string_view extra_value = {}) {
  out->append(name);
  AppendLabels(out, names, values, extra_name, extra_value);
  out->push_back(' ');
  out->append(FormatValue(v));
  out->push_back('\n');
}

void AtomicAdd(std::atomic<double>* a, double v) { a->fetch_add(v, std::memory_order_relaxed); }

}  // namespace

// --- Counter, Gauge, Histogram ---

void Counter::Inc(double v) {
  if (!(v >= 0)) {
    return;  // also rejects NaN
  }
  AtomicAdd(&value_, v);
}

double Counter::Value() const { return value_.load(std::memory_order_relaxed); }

void Gauge::Set(double v) { value_.store(v, std::memory_order_relaxed); }

void Gauge::Add(double v) { AtomicAdd(&value_, v); }

double Gauge::Value() const { return value_.load(std::memory_order_relaxed); }

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)) {
  if (!bounds_.empty() && std::isinf(bounds_.back()) && bounds_.back() > 0) {
    bounds_.pop_back();
  }
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (std::isnan(bounds_[i]) || (i > 0 && !(bounds_[i - 1] < bounds_[i]))) {
      Die("histogram bounds must be strictly increasing");
    }
  }
  buckets_ = std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1);
}

void Histogram::Observe(double v) {
  size_t index = bounds_.size();
  if (!std::isnan(v)) {
    index =
        static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  }
  buckets_[index].fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(&sum_, v);
}

Histogram::Snapshot Histogram::Snap() const {
  Snapshot snap;
  snap.bounds = bounds_;
  snap.cumulative.resize(bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    snap.cumulative[i] = running;
  }
  snap.count = running;
  snap.sum = sum_.load(std::memory_order_relaxed);
  return snap;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  if (!(start > 0) || !(factor > 1) || count < 1) {
    Die("invalid exponential buckets");
  }
  std::vector<double> out;
  out.reserve(count);
  double v = start;
  for (int i = 0; i < count; ++i) {
    out.push_back(v);
    v *= factor;
  }
  return out;
}

std::vector<double> DefaultLatencyBuckets() { return ExponentialBuckets(0.0005, 2, 16); }

std::string FormatValue(double v) {
  if (std::isnan(v)) {
    return "NaN";
  }
  if (std::isinf(v)) {
    return v > 0 ? "+Inf" : "-Inf";
  }
  char buf[64];
  constexpr double kExactIntegerLimit = 9007199254740992.0;  // 2^53
  std::to_chars_result r;
  if (v == std::trunc(v) && std::fabs(v) <= kExactIntegerLimit) {
    r = std::to_chars(buf, buf + sizeof(buf), static_cast<int64_t>(v));
  } else if (std::fabs(v) >= 1e-5 && std::fabs(v) < kExactIntegerLimit) {
    // Plain decimals for the usual range, so bucket bounds read le="0.0005", not le="5e-04".
    r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed);
  } else {
    r = std::to_chars(buf, buf + sizeof(buf), v);
  }
  return std::string(buf, r.ptr);
}

// --- Registry ---

struct Registry::Entry {
  std::variant<std::unique_ptr<Family<Counter>>, std::unique_ptr<Family<Gauge>>,
               std::unique_ptr<Family<Histogram>>, std::function<double()>>
      family;
  std::string name;  // for callback gauges
  std::string help;  // for callback gauges
};

Registry::Registry() = default;
Registry::~Registry() = default;

void Registry::CheckNames(const std::string& name, const std::vector<std::string>& label_names,
                          bool histogram) {
  if (!IsValidName(name, /*allow_colon=*/true)) {
    Die("invalid metric name \"" + name + "\"");
  }
  for (size_t i = 0; i < label_names.size(); ++i) {
    const std::string& l = label_names[i];
    if (!IsValidName(l, /*allow_colon=*/false) || l.starts_with("__")) {
      Die(std::string("invalid label name \"").append(l).append("\" on ").append(name));
    }
    if (histogram && l == "le") {
      Die("histogram " + name + " may not have a label named le");
    }
    for (size_t j = 0; j < i; ++j) {
      if (label_names[j] == l) {
        Die(std::string("duplicate label name \"").append(l).append("\" on ").append(name));
      }
    }
  }
}

void Registry::Insert(std::unique_ptr<Entry> entry) {
  MutexLock lock(mu_);
  std::string name = entry->name;
  if (!families_.emplace(name, std::move(entry)).second) {
    Die("metric \"" + name + "\" registered twice");
  }
}

template <typename T>
Family<T>& Registry::Add(std::string name, std::string help, std::vector<std::string> label_names,
                         std::function<std::unique_ptr<T>()> make) {
  auto entry = std::make_unique<Entry>();
  entry->name = name;
  entry->help = help;
  auto family = std::unique_ptr<Family<T>>(
      new Family<T>(std::move(name), std::move(help), std::move(label_names), std::move(make)));
  Family<T>& ref = *family;
  if (ref.label_names_.empty()) {
    ref.With();
  }
  entry->family = std::move(family);
  Insert(std::move(entry));
  return ref;
}

Family<Counter>& Registry::AddCounter(std::string name, std::string help,
                                      std::vector<std::string> label_names) {
  CheckNames(name, label_names, false);
  return Add<Counter>(std::move(name), std::move(help), std::move(label_names),
                      [] { return std::make_unique<Counter>(); });
}

Family<Gauge>& Registry::AddGauge(std::string name, std::string help,
                                  std::vector<std::string> label_names) {
  CheckNames(name, label_names, false);
  return Add<Gauge>(std::move(name), std::move(help), std::move(label_names),
                    [] { return std::make_unique<Gauge>(); });
}

Family<Histogram>& Registry::AddHistogram(std::string name, std::string help,
                                          std::vector<std::string> label_names,
                                          std::vector<double> upper_bounds) {
  CheckNames(name, label_names, true);
  Histogram probe(upper_bounds);  // validates the bounds now rather than on first use
  return Add<Histogram>(
      std::move(name), std::move(help), std::move(label_names),
      [bounds = std::move(upper_bounds)] { return std::make_unique<Histogram>(bounds); });
}

void Registry::AddCallbackGauge(std::string name, std::string help, std::function<double()> fn) {
  CheckNames(name, {}, false);
  if (!fn) {
    Die("callback gauge " + name + " has no function");
  }
  auto entry = std::make_unique<Entry>();
  entry->name = std::move(name);
  entry->help = std::move(help);
  entry->family = std::move(fn);
  Insert(std::move(entry));
}

std::string Registry::Render() const {
  // Entries are never removed, so pointers taken under the lock stay valid; rendering without the
  // registry lock lets callback gauges take their own locks freely.
  std::vector<const Entry*> entries;
  {
    MutexLock lock(mu_);
    entries.reserve(families_.size());
    for (const auto& [name, entry] : families_) {
      entries.push_back(entry.get());
    }
  }
  std::string out;
  auto render_scalar = [&out](const auto& family, std::string_view type) {
    MutexLock lock(family.mu_);
    // A labelled family with no sample yet still shows its HELP and TYPE, so what the binary can
    // export is discoverable from any scrape.
    AppendHeader(&out, family.name_, family.help_, type);
    for (const auto& [values, child] : family.children_) {
      AppendSample(&out, family.name_, family.label_names_, values, child->Value());
    }
  };
  for (const Entry* e : entries) {
    if (auto* c = std::get_if<std::unique_ptr<Family<Counter>>>(&e->family)) {
      if (*c) {
        render_scalar(**c, "counter");
      }
    } else if (auto* g = std::get_if<std::unique_ptr<Family<Gauge>>>(&e->family)) {
      if (*g) {
        render_scalar(**g, "gauge");
      }
    } else if (auto* h = std::get_if<std::unique_ptr<Family<Histogram>>>(&e->family)) {
      if (!*h) {
        continue;
      }
      const Family<Histogram>& family = **h;
      MutexLock lock(family.mu_);
      AppendHeader(&out, family.name_, family.help_, "histogram");
      const std::string bucket = family.name_ + "_bucket";
      const std::string sum = family.name_ + "_sum";
      const std::string count = family.name_ + "_count";
      for (const auto& [values, child] : family.children_) {
        Histogram::Snapshot snap = child->Snap();
        for (size_t i = 0; i < snap.bounds.size(); ++i) {
          AppendSample(&out, bucket, family.label_names_, values,
                       static_cast<double>(snap.cumulative[i]), "le", FormatValue(snap.bounds[i]));
        }
        AppendSample(&out, bucket, family.label_names_, values, static_cast<double>(snap.count),
                     "le", "+Inf");
        AppendSample(&out, sum, family.label_names_, values, snap.sum);
        AppendSample(&out, count, family.label_names_, values, static_cast<double>(snap.count));
      }
    } else if (auto* fn = std::get_if<std::function<double()>>(&e->family)) {
      AppendHeader(&out, e->name, e->help, "gauge");
      AppendSample(&out, e->name, {}, {}, (*fn)());
    }
  }
  return out;
}

}  // namespace buildcache::metrics
