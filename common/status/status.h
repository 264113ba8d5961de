#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace buildcache {

// The outcome of an operation. No exception crosses a library boundary: adapters around
// third-party code (cpprestsdk, yaml-cpp, LMDB) catch and convert to a Status. The mapping of a
// code to an HTTP status lives in exactly one place (common/http/status_http.h).
enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // the caller's input is malformed (bad key, bad config value)
  kNotFound,            // no such key or object
  kAlreadyExists,       // create of something that exists
  kPermissionDenied,    // the caller may not ask for this (a peer naming a non-upstream URL)
  kFailedPrecondition,  // the system is not in a state to do this
  kResourceExhausted,   // quota or disk full (ENOSPC), object too large for the quota
  kTooLarge,            // a single object exceeds a configured size limit
  kDataLoss,            // stored or received bytes do not match their digest
  kUnavailable,         // a dependency (upstream, peer, disk) failed; retrying may help
  kDeadlineExceeded,    // a bounded wait ran out
  kCancelled,           // the operation was abandoned (client went away, shutdown)
  kInternal,            // a broken invariant or unexpected library error
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "NOT_FOUND: no such key" style, for logs and error bodies.
  std::string ToString() const;

  // Returns a copy with "context: " prepended to the message.
  Status WithContext(std::string_view context) const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
inline Status PermissionDenied(std::string m) {
  return {StatusCode::kPermissionDenied, std::move(m)};
}
inline Status FailedPrecondition(std::string m) {
  return {StatusCode::kFailedPrecondition, std::move(m)};
}
inline Status ResourceExhausted(std::string m) {
  return {StatusCode::kResourceExhausted, std::move(m)};
}
inline Status TooLarge(std::string m) { return {StatusCode::kTooLarge, std::move(m)}; }
inline Status DataLoss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
inline Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status DeadlineExceeded(std::string m) {
  return {StatusCode::kDeadlineExceeded, std::move(m)};
}
inline Status Cancelled(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

// A Status built from errno after a failed system call: ENOSPC/EDQUOT map to kResourceExhausted,
// ENOENT to kNotFound, EACCES/EROFS to kFailedPrecondition, everything else to kUnavailable.
Status ErrnoStatus(int err, std::string_view what);

// Either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(v_).ok() && "Result built from an OK status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace buildcache

// Returns the status from the enclosing function when it is not OK.
#define BC_RETURN_IF_ERROR(expr)              \
  do {                                        \
    ::buildcache::Status bc_status_ = (expr); \
    if (!bc_status_.ok()) return bc_status_;  \
  } while (0)

// Names and declarations (a##b, tmp, lhs: `auto x`) cannot take parentheses.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define BC_CONCAT_INNER(a, b) a##b
#define BC_CONCAT(a, b) BC_CONCAT_INNER(a, b)
// BC_ASSIGN_OR_RETURN(auto x, MakeX()); declares x from a Result or returns its status.
#define BC_ASSIGN_OR_RETURN(lhs, expr) \
  BC_ASSIGN_OR_RETURN_IMPL(BC_CONCAT(bc_result_, __LINE__), lhs, expr)
#define BC_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()
// NOLINTEND(bugprone-macro-parentheses)
