// store_bench: PUT/GET throughput and memory of LmdbStore with many small objects.
//
//   store_bench --dir=/tmp/b --objects=1000000 --size=512 --threads=4 --sync=0 --reads=200000
//
// Prints one JSON object with rates, the index size and VmRSS/VmHWM after each phase.

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "agent/store/lmdb_store.h"
#include "common/log/log.h"

namespace {

using buildcache::store::LmdbStore;
using buildcache::store::LmdbStoreOptions;

std::string Flag(int argc, char** argv, const std::string& name, const std::string& def) {
  std::string prefix = "--" + name + "=";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind(prefix, 0) == 0) {
      return a.substr(prefix.size());
    }
  }
  return def;
}

uint64_t StatusKb(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) {
      return std::strtoull(line.c_str() + std::strlen(field), nullptr, 10);
    }
  }
  return 0;
}

std::string Key(uint64_t i) { return "bench/obj/" + std::to_string(i * 2654435761u % 1000000007u); }

std::string Body(uint64_t i, size_t size) {
  std::string s(size, 'x');
  std::snprintf(s.data(), size, "%llu", static_cast<unsigned long long>(i));
  return s;
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = Flag(argc, argv, "dir", "/tmp/store_bench");
  uint64_t objects = std::stoull(Flag(argc, argv, "objects", "100000"));
  size_t size = std::stoul(Flag(argc, argv, "size", "512"));
  int threads = std::stoi(Flag(argc, argv, "threads", "4"));
  bool sync = Flag(argc, argv, "sync", "1") == "1";
  uint64_t reads = std::stoull(Flag(argc, argv, "reads", "100000"));
  bool reuse = Flag(argc, argv, "reuse", "0") == "1";
  buildcache::log::SetLevel(buildcache::log::Level::kWarn);
  if (!reuse) {
    std::filesystem::remove_all(dir);
  }

  LmdbStoreOptions o;
  o.data_dir = dir;
  o.sync = sync;
  auto opened = LmdbStore::Open(o);
  if (!opened.ok()) {
    std::fprintf(stderr, "open: %s\n", opened.status().ToString().c_str());
    return 1;
  }
  LmdbStore& store = **opened;
  uint64_t rss_open = StatusKb("VmRSS:");

  std::atomic<uint64_t> next{0}, failures{0};
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  if (!reuse) {
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        for (uint64_t i; (i = next.fetch_add(1)) < objects;) {
          if (!PutBytes(store, Key(i), Body(i, size)).ok()) {
            failures.fetch_add(1);
          }
        }
      });
    }
    for (auto& t : pool) {
      t.join();
    }
    pool.clear();
  }
  double put_s = Seconds(start);
  uint64_t rss_put = StatusKb("VmRSS:");
  // Let the background flusher trim the index mapping once.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  uint64_t rss_put_settled = StatusKb("VmRSS:");
  std::fprintf(stderr, "after put: RssAnon %llu kB, RssFile %llu kB\n",
               static_cast<unsigned long long>(StatusKb("RssAnon:")),
               static_cast<unsigned long long>(StatusKb("RssFile:")));

  std::atomic<uint64_t> read_bytes{0}, misses{0};
  start = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      char buf[65536];
      for (uint64_t n = 0; n < reads / threads; ++n) {
        auto r = store.Open(Key(rng() % objects));
        if (!r.ok()) {
          misses.fetch_add(1);
          continue;
        }
        auto got = (*r)->ReadAt(0, std::span<char>(buf, sizeof(buf)));
        if (got.ok()) {
          read_bytes.fetch_add(*got);
        }
      }
    });
  }
  for (auto& t : pool) {
    t.join();
  }
  double get_s = Seconds(start);
  uint64_t rss_get = StatusKb("VmRSS:");
  std::fprintf(stderr, "after get: RssAnon %llu kB, RssFile %llu kB\n",
               static_cast<unsigned long long>(StatusKb("RssAnon:")),
               static_cast<unsigned long long>(StatusKb("RssFile:")));

  uint64_t index_bytes = std::filesystem::file_size(dir + "/index/data.mdb");
  std::printf(
      "{\"objects\":%llu,\"size\":%zu,\"threads\":%d,\"sync\":%d,\"put_per_s\":%.0f,"
      "\"put_failures\":%llu,\"get_per_s\":%.0f,\"get_misses\":%llu,\"index_bytes\":%llu,"
      "\"index_bytes_per_object\":%.0f,\"rss_kb_open\":%llu,\"rss_kb_after_put\":%llu,"
      "\"rss_kb_after_put_settled\":%llu,\"rss_kb_after_get\":%llu,\"hwm_kb\":%llu}\n",
      static_cast<unsigned long long>(objects), size, threads, sync ? 1 : 0,
      reuse ? 0.0 : static_cast<double>(objects) / put_s,
      static_cast<unsigned long long>(failures.load()), static_cast<double>(reads) / get_s,
      static_cast<unsigned long long>(misses.load()), static_cast<unsigned long long>(index_bytes),
      static_cast<double>(index_bytes) / static_cast<double>(objects),
      static_cast<unsigned long long>(rss_open), static_cast<unsigned long long>(rss_put),
      static_cast<unsigned long long>(rss_put_settled), static_cast<unsigned long long>(rss_get),
      static_cast<unsigned long long>(StatusKb("VmHWM:")));
  return 0;
}
