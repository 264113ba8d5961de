// CHECK(cond) << ...: an invariant that holds in every build. When it does not, the condition, the
// place and the message go to stderr and the process aborts. Unlike assert, it is not compiled out
// in release builds; use it where continuing would corrupt data or serve wrong bytes, never for
// input from a client, a peer or a file (those get a Status).
#pragma once

#include <sstream>

namespace buildcache::internal {

class CheckFailure {
 public:
  CheckFailure(const char* condition, const char* file, int line);
  [[noreturn]] ~CheckFailure();
  template <class T>
  CheckFailure& operator<<(const T& value) {
    if (!has_message_) message_ << ": ";
    has_message_ = true;
    message_ << value;
    return *this;
  }

 private:
  std::ostringstream message_;
  bool has_message_ = false;
};

// Lets `CHECK(x) << "msg";` parse as a void expression in both branches.
struct CheckVoidify {
  void operator&(CheckFailure&) {}
};

}  // namespace buildcache::internal

// Not parenthesized on purpose: the caller's `<< message` must bind to the CheckFailure.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define CHECK(condition)                                 \
  (condition) ? (void)0                                  \
              : ::buildcache::internal::CheckVoidify() & \
                    ::buildcache::internal::CheckFailure(#condition, __FILE__, __LINE__)
// NOLINTEND(bugprone-macro-parentheses)
