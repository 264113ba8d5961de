// buildcache-gocacheprog: the go command's GOCACHEPROG, backed by the node's buildcache agent.
// Usage: GOCACHEPROG="buildcache-gocacheprog --agent=http://HOST:PORT" go build ./...
//        buildcache-gocacheprog --install=DIR   (copies itself to DIR; the webhook's init
//        container)
#include <iostream>

#include "gocacheprog/cache_program.h"

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  auto options = buildcache::gocacheprog::ParseOptions(argc, argv);
  if (!options.ok()) {
    std::cerr << "buildcache-gocacheprog: " << options.status().ToString() << std::endl;
    return 2;
  }
  if (!options->install_dir.empty()) {
    buildcache::Status s = buildcache::gocacheprog::InstallSelf(options->install_dir);
    if (!s.ok()) {
      std::cerr << "buildcache-gocacheprog: install: " << s.ToString() << std::endl;
      return 1;
    }
    std::cerr << "buildcache-gocacheprog: installed in " << options->install_dir << std::endl;
    return 0;
  }
  buildcache::gocacheprog::CacheProgram program(std::move(*options), std::cerr);
  return program.Run(std::cin, std::cout);
}
