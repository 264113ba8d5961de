#pragma once

// A response that holds its last body byte back until a check of the whole body passes, so a
// client can never take a body that failed the check for a complete one. The goproxy front end
// streams a module zip through it while the checksum database decides (an h1 hash needs the whole
// zip, its central directory is at the end).

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "agent/store/digest.h"
#include "common/http/server.h"
#include "common/status/status.h"

namespace buildcache::goproxy {

// Wraps `inner` (not owned). A response whose status is not 200 is passed through untouched (an
// error answer). A 200 body, however it is sent (Send, SendFile, Begin/Write/End), is forwarded
// as it comes except its last byte (with a known length, each piece goes out in one write and
// only the last piece is cut); at the end `check` runs with the SHA-256 and size of the
// whole body. OK: the byte is sent and the response completed. Not OK: the inner response is
// aborted (the client sees a failed transfer) and that status is returned.
//
// before_start, when set, runs before the status line of a 200 response goes out; a non-OK status
// leaves the inner response unstarted (the caller can still answer with an error) and is
// returned from the sending call. on_body, when set, sees every byte of a 200 body in order, each
// piece after it was forwarded (the goproxy front end hashes a zip's files meanwhile). Both run on
// the calling thread. Not thread-safe.
class HeldBackResponse : public http::Response {
 public:
  using Check = std::function<Status(const store::Digest& sha256, uint64_t size)>;
  HeldBackResponse(http::Response& inner, Check check, std::function<Status()> before_start = {},
                   std::function<void(std::string_view)> on_body = {});

  // http::Response
  void SetStatus(int code) override;
  void SetHeader(std::string_view name, std::string_view value) override;
  Status Send(std::string_view body) override;
  Status SendFile(int fd, uint64_t offset, uint64_t length) override;
  Status Begin(std::optional<uint64_t> length) override;
  Status Write(std::string_view data) override;
  Status End() override;
  void Abort() override;
  bool started() const override;

  // The status the check (or before_start) returned, OK while none failed.
  const Status& outcome() const { return outcome_; }

 private:
  bool Held() const { return status_ == 200; }
  // Sends what of `data` (the body's newest bytes, counted in size_) may go now.
  Status Forward(std::string_view data);

  http::Response& inner_;
  Check check_;
  std::function<Status()> before_start_;
  std::function<void(std::string_view)> on_body_;
  int status_ = 200;
  store::Sha256 sha_;
  uint64_t size_ = 0;
  std::optional<uint64_t> length_;  // as Begin was told
  std::optional<char> pending_;
  Status outcome_;
};

}  // namespace buildcache::goproxy
