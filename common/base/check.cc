#include "common/base/check.h"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace buildcache::internal {

CheckFailure::CheckFailure(const char* condition, const char* file, int line) {
  message_ << file << ":" << line << ": CHECK(" << condition << ") failed";
}

CheckFailure::~CheckFailure() {
  const std::string text = message_.str();
  std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace buildcache::internal
