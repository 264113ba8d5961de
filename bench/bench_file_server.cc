// A throwaway file server on the buildcache HTTP server, for comparing the server alone against
// nginx: GET /<name> answers with the file <root>/<name> via SendFile.
//   bench_file_server <root> [host:port]
// Prints "listening <port>" on stdout once ready and runs until stdin closes.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "common/http/server.h"

int main(int argc, char** argv) {
  using namespace buildcache::http;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s ROOT [HOST:PORT]\n", argv[0]);
    return 2;
  }
  std::string root = argv[1];
  ServerOptions options;
  options.listen = argc > 2 ? argv[2] : "127.0.0.1:0";
  auto server = Server::Start(options, [&root](Request& req, Response& resp) {
    std::string_view path = req.path();
    if (path.find("..") != std::string_view::npos) {
      resp.SetStatus(400);
      (void)resp.Send("bad path\n");
      return;
    }
    std::string file = root;
    file.append(path);
    int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
      if (fd >= 0) close(fd);
      resp.SetStatus(404);
      (void)resp.Send("not found\n");
      return;
    }
    resp.SetHeader("Content-Type", "application/octet-stream");
    (void)resp.SendFile(fd, 0, static_cast<uint64_t>(st.st_size));
    close(fd);
  });
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
    return 1;
  }
  std::printf("listening %u\n", (*server)->port());
  std::fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {
  }
  (*server)->Stop();
  return 0;
}
