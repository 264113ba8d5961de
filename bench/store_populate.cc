// Fills an LmdbStore with many small objects as fast as the store allows (no fsync), for the
// memory benchmark in bench/store_rss.py. Keys are the ones the HTTP cache API uses
// ("httpcache/bench/<n>"), so a buildcache-agent started on the directory serves them.
//
//   store_populate DATA_DIR COUNT [SIZE] [THREADS]
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "agent/store/lmdb_store.h"

using namespace buildcache;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s DATA_DIR COUNT [SIZE] [THREADS]\n", argv[0]);
    return 2;
  }
  const uint64_t count = std::strtoull(argv[2], nullptr, 10);
  const size_t size = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 100;
  const int threads = argc > 4 ? std::atoi(argv[4]) : 2;

  store::LmdbStoreOptions options;
  options.data_dir = argv[1];
  options.sync = false;
  auto opened = store::LmdbStore::Open(options);
  if (!opened.ok()) {
    std::fprintf(stderr, "open: %s\n", opened.status().ToString().c_str());
    return 1;
  }
  store::LmdbStore& s = **opened;
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::vector<std::thread> workers;
  workers.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      std::string body(size, 'x');
      for (uint64_t i = next++; i < count && !failed; i = next++) {
        // Distinct content per object: the counter at the front.
        std::string id = std::to_string(i);
        body.replace(0, id.size() + 1, id + ":");
        auto r = store::PutBytes(s, "httpcache/bench/" + id, body);
        if (!r.ok()) {
          std::fprintf(stderr, "put %s: %s\n", id.c_str(), r.status().ToString().c_str());
          failed = true;
        }
        if (i % 100000 == 0) {
          std::fprintf(stderr, "[populate] %llu/%llu\n", static_cast<unsigned long long>(i),
                       static_cast<unsigned long long>(count));
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  std::printf("%llu objects, %llu bytes\n", static_cast<unsigned long long>(s.Stats().blobs),
              static_cast<unsigned long long>(s.Stats().bytes));
  return failed ? 1 : 0;
}
