// One client connection of the HTTP server: the Request and Response a handler sees (a
// RequestReader and a ResponseWriter over the same socket) and the keep-alive loop that serves
// requests on it one after another. Internal to common/http.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "common/http/request_reader.h"
#include "common/http/response_writer.h"
#include "common/http/server.h"

namespace buildcache::http::server_internal {

// Where a connection is, as the server's Stop sees it: idle connections (waiting for a request)
// are closed at once, busy ones get the grace period.
enum class ConnState : int { kIdle, kBusy, kClosing };

class Connection final : public Request, public Response {
 public:
  // Takes ownership of fd (closed by the destructor). options, handler and stopping belong to the
  // server and outlive the connection.
  Connection(int fd, std::string remote, const ServerOptions& options, const Handler& handler,
             const std::atomic<bool>& stopping);
  ~Connection() override;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Serves requests until the client closes, an error or a timeout ends the connection, or the
  // server stops. Blocks the calling thread.
  void Serve();
  int fd() const { return fd_; }
  // Written by Serve (kIdle <-> kBusy) and by the server's Stop (-> kClosing) from another thread.
  std::atomic<ConnState>& state() { return state_; }

  // Request
  std::string_view method() const override { return reader_.method(); }
  std::string_view target() const override { return reader_.target(); }
  std::string_view header(std::string_view name) const override { return reader_.header(name); }
  std::optional<uint64_t> content_length() const override { return reader_.content_length(); }
  std::string_view remote_address() const override { return remote_; }
  Result<size_t> ReadBody(std::span<char> buf) override { return reader_.ReadBody(buf); }

  // Response
  void SetStatus(int code) override { writer_.SetStatus(code); }
  void SetHeader(std::string_view name, std::string_view value) override {
    writer_.SetHeader(name, value);
  }
  Status Send(std::string_view body) override { return writer_.Send(body); }
  Status SendFile(int fd, uint64_t offset, uint64_t length) override {
    return writer_.SendFile(fd, offset, length);
  }
  Status Begin(std::optional<uint64_t> length) override { return writer_.Begin(length); }
  Status Write(std::string_view data) override { return writer_.Write(data); }
  Status End() override { return writer_.End(); }
  void Abort() override { writer_.Abort(); }
  bool started() const override { return writer_.state() != ResponseWriter::State::kPending; }

 private:
  // Runs the handler on the request just read and completes what it left undone. True when the
  // connection can serve another request.
  bool HandleRequest();
  // Answers with the server's own error and closes the connection.
  void SendSimple(int code, std::string_view body);
  // Stops writing and reads and drops input for a bounded time before the close.
  void LingeringClose();

  const int fd_;
  const std::string remote_;
  const ServerOptions& options_;
  const Handler& handler_;
  const std::atomic<bool>& stopping_;
  std::atomic<ConnState> state_{ConnState::kIdle};
  // Moves an idle connection to busy when a request starts; false when Stop closed it first.
  const std::function<bool()> claim_;
  RequestReader reader_;
  ResponseWriter writer_;
};

}  // namespace buildcache::http::server_internal
