#pragma once

// Helpers shared by the store tests.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <random>
#include <string>

#include "agent/store/blob_store.h"
#include "common/base/check.h"

namespace buildcache::store::testing {

// A fresh directory under the test temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = ::testing::TempDir() + "/bcstore-XXXXXX";
    CHECK(::mkdtemp(tmpl.data()) != nullptr) << "mkdtemp " << tmpl;
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Deterministic pseudo-random content.
inline std::string Content(uint64_t seed, size_t size) {
  std::mt19937_64 rng(seed * 0x9e3779b97f4a7c15ull + size);
  std::string s(size, '\0');
  for (size_t i = 0; i < size; ++i) s[i] = static_cast<char>(rng());
  return s;
}

// Reads the whole blob mapped to key, or the error.
inline Result<std::string> Get(BlobStore& store, std::string_view key) {
  BC_ASSIGN_OR_RETURN(std::unique_ptr<BlobReader> reader, store.Open(key));
  return ReadAll(*reader);
}

inline size_t CountFiles(const std::string& dir) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       it != std::filesystem::recursive_directory_iterator(); ++it) {
    if (it->is_regular_file()) ++n;
  }
  return n;
}

}  // namespace buildcache::store::testing
