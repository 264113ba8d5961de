#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/check.h"
#include "common/base/thread_annotations.h"

namespace buildcache::metrics {

// A small Prometheus-style metrics registry. Families are created once (at wiring time, from a
// binary's metric catalog) and hold labelled children; children are created on first use and live
// as long as the registry. Updating a child is lock-free (atomics); looking a child up by label
// values takes a short lock, so hot paths should keep the child pointer.
//
// Naming follows Prometheus conventions: prefix buildcache_, base units, _total on counters.
// Invalid metric or label names, duplicate registrations and a wrong number of label values are
// programming errors and abort; label values and help texts may be any bytes (they are escaped,
// and invalid UTF-8 is replaced by U+FFFD, on output).

// The Content-Type of Registry::Render() output.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

class Counter {
 public:
  // Adds v. Counters only go up: negative and NaN increments are ignored.
  void Inc(double v = 1.0);
  double Value() const;

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void Set(double v);
  void Add(double v);
  double Value() const;

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  // upper_bounds must be strictly increasing (aborts otherwise); a trailing +Inf is implied and
  // dropped if given.
  explicit Histogram(std::vector<double> upper_bounds);
  // Counts v in the first bucket whose bound is >= v (NaN goes to the +Inf bucket only).
  void Observe(double v);
  // Cumulative counts per bucket (same order as bounds, +Inf last), sum and count.
  // count always equals cumulative.back(), even while other threads observe.
  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // size bounds.size() + 1
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Snap() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // non-cumulative, size bounds+1
  std::atomic<double> sum_{0};
};

// Exponential buckets: start, start*factor, ... (count values).
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// Default latency buckets in seconds, 0.5 ms .. ~16 s.
std::vector<double> DefaultLatencyBuckets();

// Formats a sample value the way Prometheus parses it: integral values up to 2^53 without
// exponent or fraction ("1000000"), others in shortest round-trip form, as a plain decimal when
// 1e-5 <= |v| < 2^53 ("0.0005", "1234.5") and with an exponent otherwise ("1e+300", "1.5e-09");
// "+Inf", "-Inf", "NaN". Independent of the C locale.
std::string FormatValue(double v);

template <typename T>
class Family {
 public:
  Family(const Family&) = delete;
  Family& operator=(const Family&) = delete;

  // Returns the child for these label values (one per label name, same order), creating it.
  // Label values are escaped on output, so any string is safe. A family without labels has a
  // single child, With().
  T& With(const std::vector<std::string>& label_values = {});

 private:
  friend class Registry;
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         std::function<std::unique_ptr<T>()> make)
      : name_(std::move(name)),
        help_(std::move(help)),
        label_names_(std::move(label_names)),
        make_(std::move(make)) {}
  std::string name_;
  std::string help_;
  std::vector<std::string> label_names_;
  std::function<std::unique_ptr<T>()> make_;
  mutable Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_ GUARDED_BY(mu_);
};

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Registering the same name twice is a programming error (aborts). The returned family lives as
  // long as the registry. Families without labels render a zero sample from the start; labelled
  // families render their HELP and TYPE lines from the start and samples once a child exists.
  Family<Counter>& AddCounter(std::string name, std::string help,
                              std::vector<std::string> label_names = {});
  Family<Gauge>& AddGauge(std::string name, std::string help,
                          std::vector<std::string> label_names = {});
  // "le" may not be a label name of a histogram.
  Family<Histogram>& AddHistogram(std::string name, std::string help,
                                  std::vector<std::string> label_names,
                                  std::vector<double> upper_bounds);

  // A gauge whose value is computed at scrape time (for example stored bytes read from the store).
  // fn is called from Render() without any registry lock held, on the scraping thread.
  void AddCallbackGauge(std::string name, std::string help, std::function<double()> fn);

  // Renders every family in the Prometheus text exposition format 0.0.4 (kContentType), families
  // sorted by name, children sorted by label values. Safe to call concurrently with updates.
  std::string Render() const;

 private:
  struct Entry;
  static void CheckNames(const std::string& name, const std::vector<std::string>& label_names,
                         bool histogram);
  template <typename T>
  Family<T>& Add(std::string name, std::string help, std::vector<std::string> label_names,
                 std::function<std::unique_ptr<T>()> make);
  void Insert(std::unique_ptr<Entry> entry);
  mutable Mutex mu_;
  std::map<std::string, std::unique_ptr<Entry>> families_ GUARDED_BY(mu_);
};

template <typename T>
T& Family<T>::With(const std::vector<std::string>& label_values) {
  CHECK(label_values.size() == label_names_.size())
      << "metrics: " << name_ << " takes " << label_names_.size() << " label values, got "
      << label_values.size();
  MutexLock lock(mu_);
  auto it = children_.find(label_values);
  if (it == children_.end()) it = children_.emplace(label_values, make_()).first;
  return *it->second;
}

}  // namespace buildcache::metrics
