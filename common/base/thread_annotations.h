// Clang thread-safety annotations and the annotated mutex the agent's locks use.
//
// The analysis (`-Wthread-safety`, on in the clang build that scripts/test runs) checks at compile
// time that every member marked GUARDED_BY(mu_) is touched only with mu_ held, and that functions
// marked REQUIRES(mu_) are called with it held. GCC ignores the attributes.
//
// std::mutex of libstdc++ carries no annotations, so guarded state uses Mutex and MutexLock below.
// Wait on a condition with CondVar::Wait in a loop (`while (!ready_) cv_.Wait(mu_);`): the analysis
// does not see the caller's locks inside a predicate lambda.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define BC_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define BC_THREAD_ANNOTATION(x)
#endif

#define CAPABILITY(x) BC_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY BC_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) BC_THREAD_ANNOTATION(guarded_by(x))
#define PT_GUARDED_BY(x) BC_THREAD_ANNOTATION(pt_guarded_by(x))
#define ACQUIRED_BEFORE(...) BC_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) BC_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
#define REQUIRES(...) BC_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define REQUIRES_SHARED(...) BC_THREAD_ANNOTATION(requires_shared_capability(__VA_ARGS__))
#define ACQUIRE(...) BC_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define ACQUIRE_SHARED(...) BC_THREAD_ANNOTATION(acquire_shared_capability(__VA_ARGS__))
#define RELEASE(...) BC_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define RELEASE_SHARED(...) BC_THREAD_ANNOTATION(release_shared_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) BC_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define EXCLUDES(...) BC_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define ASSERT_CAPABILITY(x) BC_THREAD_ANNOTATION(assert_capability(x))
#define RETURN_CAPABILITY(x) BC_THREAD_ANNOTATION(lock_returned(x))
#define NO_THREAD_SAFETY_ANALYSIS BC_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace buildcache {

// A std::mutex the analysis knows about. Also BasicLockable (lock/unlock) so CondVar can wait on
// it.
class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }
  bool TryLock() TRY_ACQUIRE(true) { return mu_.try_lock(); }
  // Tells the analysis the caller holds the lock (for callbacks it cannot follow).
  void AssertHeld() const ASSERT_CAPABILITY(this) {}

  void lock() ACQUIRE() { mu_.lock(); }
  void unlock() RELEASE() { mu_.unlock(); }

 private:
  std::mutex mu_;
};

// Holds a Mutex for the enclosing scope.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) ACQUIRE(mu) : mu_(mu) { mu_.Lock(); }
  ~MutexLock() RELEASE() { mu_.Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mu_;
};

// A condition variable over Mutex. Wait releases mu while blocked and holds it again on return.
class CondVar {
 public:
  void Wait(Mutex& mu) REQUIRES(mu) { cv_.wait(mu); }
  // False when the timeout passed (the caller rechecks its condition either way).
  template <class Rep, class Period>
  bool WaitFor(Mutex& mu, std::chrono::duration<Rep, Period> timeout) REQUIRES(mu) {
    return cv_.wait_for(mu, timeout) == std::cv_status::no_timeout;
  }
  template <class Clock, class Duration>
  bool WaitUntil(Mutex& mu, std::chrono::time_point<Clock, Duration> deadline) REQUIRES(mu) {
    return cv_.wait_until(mu, deadline) == std::cv_status::no_timeout;
  }
  void NotifyOne() { cv_.notify_one(); }
  void NotifyAll() { cv_.notify_all(); }

 private:
  std::condition_variable_any cv_;
};

}  // namespace buildcache
