#include "common/metrics/metrics.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

namespace buildcache::metrics {
namespace {

TEST(FormatValueTest, IntegersHaveNoExponentOrFraction) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(-0.0), "0");
  EXPECT_EQ(FormatValue(1), "1");
  EXPECT_EQ(FormatValue(-42), "-42");
  EXPECT_EQ(FormatValue(1000000), "1000000");
  EXPECT_EQ(FormatValue(536870912), "536870912");
  EXPECT_EQ(FormatValue(9007199254740992.0), "9007199254740992");
}

TEST(FormatValueTest, FractionsAndSpecialValuesParseInPrometheus) {
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(0.0005), "0.0005");
  EXPECT_EQ(FormatValue(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(FormatValue(1234.5), "1234.5");
  EXPECT_EQ(FormatValue(1e16), "1e+16");  // beyond 2^53 integers are not exact
  EXPECT_EQ(FormatValue(1.5e17), "1.5e+17");
  EXPECT_EQ(FormatValue(1e300), "1e+300");
  EXPECT_EQ(FormatValue(1.5e-9), "1.5e-09");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::quiet_NaN()), "NaN");
}

TEST(RegistryTest, RendersSmallRegistryExactly) {
  Registry r;
  auto& hits = r.AddCounter("buildcache_hits_total", "Cache hits.", {"frontend", "source"});
  hits.With({"pypi", "local"}).Inc();
  hits.With({"pypi", "local"}).Inc(2);
  hits.With({"goproxy", "peer"}).Inc(0.5);
  r.AddGauge("buildcache_up", "Whether the agent is up.").With().Set(1);
  auto& lat = r.AddHistogram("buildcache_request_duration_seconds", "Request latency.",
                             {"frontend"}, {0.1, 1, 10});
  lat.With({"npm"}).Observe(0.05);
  lat.With({"npm"}).Observe(0.1);  // le is inclusive
  lat.With({"npm"}).Observe(5);
  lat.With({"npm"}).Observe(100);
  r.AddCallbackGauge("buildcache_store_bytes", "Bytes in the store.", [] { return 1048576.0; });
  r.AddCounter("buildcache_unused_total", "Labelled and never used.", {"x"});

  EXPECT_EQ(r.Render(),
            "# HELP buildcache_hits_total Cache hits.\n"
            "# TYPE buildcache_hits_total counter\n"
            "buildcache_hits_total{frontend=\"goproxy\",source=\"peer\"} 0.5\n"
            "buildcache_hits_total{frontend=\"pypi\",source=\"local\"} 3\n"
            "# HELP buildcache_request_duration_seconds Request latency.\n"
            "# TYPE buildcache_request_duration_seconds histogram\n"
            "buildcache_request_duration_seconds_bucket{frontend=\"npm\",le=\"0.1\"} 2\n"
            "buildcache_request_duration_seconds_bucket{frontend=\"npm\",le=\"1\"} 2\n"
            "buildcache_request_duration_seconds_bucket{frontend=\"npm\",le=\"10\"} 3\n"
            "buildcache_request_duration_seconds_bucket{frontend=\"npm\",le=\"+Inf\"} 4\n"
            "buildcache_request_duration_seconds_sum{frontend=\"npm\"} 105.15\n"
            "buildcache_request_duration_seconds_count{frontend=\"npm\"} 4\n"
            "# HELP buildcache_store_bytes Bytes in the store.\n"
            "# TYPE buildcache_store_bytes gauge\n"
            "buildcache_store_bytes 1048576\n"
            "# HELP buildcache_unused_total Labelled and never used.\n"
            "# TYPE buildcache_unused_total counter\n"
            "# HELP buildcache_up Whether the agent is up.\n"
            "# TYPE buildcache_up gauge\n"
            "buildcache_up 1\n");
}

TEST(RegistryTest, UnlabelledFamiliesRenderZeroBeforeFirstUse) {
  Registry r;
  r.AddCounter("buildcache_errors_total", "Errors.");
  r.AddHistogram("buildcache_size_bytes", "Sizes.", {}, {1024});
  EXPECT_EQ(r.Render(),
            "# HELP buildcache_errors_total Errors.\n"
            "# TYPE buildcache_errors_total counter\n"
            "buildcache_errors_total 0\n"
            "# HELP buildcache_size_bytes Sizes.\n"
            "# TYPE buildcache_size_bytes histogram\n"
            "buildcache_size_bytes_bucket{le=\"1024\"} 0\n"
            "buildcache_size_bytes_bucket{le=\"+Inf\"} 0\n"
            "buildcache_size_bytes_sum 0\n"
            "buildcache_size_bytes_count 0\n");
}

TEST(RegistryTest, EscapesLabelValuesAndHelp) {
  Registry r;
  r.AddCounter("buildcache_x_total", "Line one\nback\\slash \"quoted\".", {"v"})
      .With({"a\\b\"c\nd\xff"})
      .Inc();
  EXPECT_EQ(r.Render(),
            "# HELP buildcache_x_total Line one\\nback\\\\slash \"quoted\".\n"
            "# TYPE buildcache_x_total counter\n"
            "buildcache_x_total{v=\"a\\\\b\\\"c\\nd\xEF\xBF\xBD\"} 1\n");
}

TEST(RegistryTest, CountersIgnoreNegativeAndNanIncrements) {
  Counter c;
  c.Inc(2);
  c.Inc(-1);
  c.Inc(std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(c.Value(), 2);
  Gauge g;
  g.Set(5);
  g.Add(-7.5);
  EXPECT_EQ(g.Value(), -2.5);
}

TEST(RegistryTest, HistogramDropsTrailingInfBoundAndCountsNanInInfBucket) {
  Histogram h({1, 2, std::numeric_limits<double>::infinity()});
  h.Observe(std::numeric_limits<double>::quiet_NaN());
  h.Observe(1.5);
  Histogram::Snapshot s = h.Snap();
  EXPECT_EQ(s.bounds, (std::vector<double>{1, 2}));
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{0, 1, 2}));
  EXPECT_EQ(s.count, 2u);
}

TEST(RegistryTest, BucketHelpers) {
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
  std::vector<double> d = DefaultLatencyBuckets();
  EXPECT_EQ(d.front(), 0.0005);
  EXPECT_GT(d.back(), 16);
  EXPECT_LT(d.back(), 17);
}

TEST(RegistryTest, ConcurrentUpdatesAreNotLost) {
  Registry r;
  auto& counter = r.AddCounter("buildcache_ops_total", "Ops.", {"worker"});
  auto& gauge = r.AddGauge("buildcache_inflight", "In flight.");
  auto& hist = r.AddHistogram("buildcache_op_seconds", "Op time.", {}, {0.5, 1.5});
  constexpr int kThreads = 8;
  constexpr int kIters = 20000;
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Counter& shared = counter.With({"shared"});
      for (int i = 0; i < kIters; ++i) {
        shared.Inc();
        counter.With({"w" + std::to_string(t % 2)}).Inc();
        gauge.With().Add(1);
        gauge.With().Add(-1);
        hist.With().Observe(i % 2);
        if (i % 5000 == 0) {
          (void)r.Render();  // scrapes race with updates
        }
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(counter.With({"shared"}).Value(), kThreads * kIters);
  EXPECT_EQ(counter.With({"w0"}).Value() + counter.With({"w1"}).Value(), kThreads * kIters);
  EXPECT_EQ(gauge.With().Value(), 0);
  Histogram::Snapshot s = hist.With().Snap();
  EXPECT_EQ(s.count, static_cast<uint64_t>(kThreads * kIters));
  EXPECT_EQ(s.cumulative[0], static_cast<uint64_t>(kThreads * kIters / 2));
  EXPECT_EQ(s.sum, kThreads * kIters / 2);
}

TEST(RegistryDeathTest, ProgrammingErrorsAbort) {
  EXPECT_DEATH(
      {
        Registry r;
        r.AddCounter("buildcache_a_total", "a");
        r.AddGauge("buildcache_a_total", "a");
      },
      "registered twice");
  EXPECT_DEATH(Registry().AddCounter("bad-name", "x"), "invalid metric name");
  EXPECT_DEATH(Registry().AddCounter("buildcache_b_total", "x", {"__reserved"}), "invalid label");
  EXPECT_DEATH(Registry().AddHistogram("buildcache_h", "x", {"le"}, {1}), "label named le");
  EXPECT_DEATH(Registry().AddHistogram("buildcache_h", "x", {}, {2, 1}), "strictly increasing");
  EXPECT_DEATH(Registry().AddCounter("buildcache_c_total", "x", {"a"}).With({}), "label values");
}

// Runs `promtool check metrics` on text; returns its exit code and combined output.
std::pair<int, std::string> PromtoolCheck(const std::string& text) {
  char tmpl[] = "/tmp/metrics_test_XXXXXX";
  int fd = mkstemp(tmpl);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  close(fd);
  std::string cmd = std::string("promtool check metrics < ") + tmpl + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) {
    out.append(buf, n);
  }
  int status = pclose(p);
  unlink(tmpl);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(RegistryTest, PromtoolAcceptsEveryMetricKindWithHostileLabels) {
  Registry r;
  const std::vector<std::string> hostile = {
      "",
      "plain",
      "back\\slash",
      "\"quoted\"",
      "new\nline",
      "trailing\\",
      "} 1\nbuildcache_injected_total 2",
      "uni\xc3\xa9\xf0\x9f\x98\x80",
      "invalid\xff\xfe\xc0\x80",
      "tab\tcr\r",
      "# HELP not a comment",
  };
  auto& counter = r.AddCounter("buildcache_requests_total", "Requests by \"path\" \\ kind.\nMore.",
                               {"path", "code"});
  auto& gauge = r.AddGauge("buildcache_open_connections", "Open connections.", {"peer"});
  auto& hist = r.AddHistogram("buildcache_fetch_duration_seconds", "Fetch latency.", {"upstream"},
                              DefaultLatencyBuckets());
  auto& bytes = r.AddHistogram("buildcache_object_size_bytes", "Object sizes.", {},
                               ExponentialBuckets(1024, 4, 8));
  r.AddCounter("buildcache_evictions_total", "Evictions.");
  r.AddGauge("buildcache_temperature_ratio", "A ratio.").With().Set(0.1 + 0.2);
  r.AddCallbackGauge("buildcache_store_size_bytes", "Store size.", [] { return 1.5e12; });
  r.AddCallbackGauge("buildcache_nan_ratio", "Not a number.",
                     [] { return std::numeric_limits<double>::quiet_NaN(); });
  for (size_t i = 0; i < hostile.size(); ++i) {
    counter.With({hostile[i], std::to_string(200 + i)}).Inc(static_cast<double>(i) * 1e6);
    gauge.With({hostile[i]}).Set(-static_cast<double>(i) / 3);
    hist.With({hostile[i]}).Observe(static_cast<double>(i) * 0.01);
    bytes.With().Observe(static_cast<double>(i) * 100000);
  }
  hist.With({"inf"}).Observe(std::numeric_limits<double>::infinity());

  std::string text = r.Render();
  auto [rc, out] = PromtoolCheck(text);
  EXPECT_EQ(rc, 0) << out << "\n--- input ---\n" << text;
  EXPECT_EQ(out, "") << "\n--- input ---\n" << text;
}

TEST(RegistryTest, PromtoolCheckIsNotVacuous) {
  // The same check reports a broken exposition, so a passing check above means something.
  auto [rc, out] = PromtoolCheck("# TYPE fooBar counter\nfooBar{a=\"\xff\"} 1\n");
  EXPECT_NE(rc, 0);
  EXPECT_NE(out, "");
}

}  // namespace
}  // namespace buildcache::metrics
