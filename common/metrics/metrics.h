#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace buildcache::metrics {

// A small Prometheus-style metrics registry. Families are created once (at wiring time, from a
// binary's metric catalog) and hold labelled children; children are created on first use and live
// as long as the registry. Updating a child is lock-free (atomics); looking a child up by label
// values takes a short lock, so hot paths should keep the child pointer.
//
// Naming follows Prometheus conventions: prefix buildcache_, base units, _total on counters.

class Counter {
 public:
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
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double v);
  // Cumulative counts per bucket (same order as bounds, +Inf last), sum and count.
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
  std::atomic<uint64_t> count_{0};
};

// Exponential buckets: start, start*factor, ... (count values).
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// Default latency buckets in seconds, 0.5 ms .. ~16 s.
std::vector<double> DefaultLatencyBuckets();

template <typename T>
class Family {
 public:
  // Returns the child for these label values (one per label name, same order), creating it.
  // Label values are escaped on output, so any string is safe.
  T& With(const std::vector<std::string>& label_values);

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
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_;
};

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Registering the same name twice is a programming error (aborts).
  Family<Counter>& AddCounter(std::string name, std::string help,
                              std::vector<std::string> label_names = {});
  Family<Gauge>& AddGauge(std::string name, std::string help,
                          std::vector<std::string> label_names = {});
  Family<Histogram>& AddHistogram(std::string name, std::string help,
                                  std::vector<std::string> label_names,
                                  std::vector<double> upper_bounds);

  // A gauge whose value is computed at scrape time (for example stored bytes read from the store).
  void AddCallbackGauge(std::string name, std::string help, std::function<double()> fn);

  // Renders every family in the Prometheus text exposition format 0.0.4
  // (Content-Type: text/plain; version=0.0.4; charset=utf-8), families sorted by name.
  std::string Render() const;

 private:
  struct Entry;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Entry>> families_;
};

}  // namespace buildcache::metrics
