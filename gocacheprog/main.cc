// buildcache-gocacheprog: the go command's GOCACHEPROG, backed by the node's buildcache agent.
// Usage: GOCACHEPROG="buildcache-gocacheprog --agent=http://ADDR:PORT" go build ./...
#include <iostream>

#include "gocacheprog/cache_program.h"

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  auto options = buildcache::gocacheprog::ParseOptions(argc, argv);
  if (!options.ok()) {
    std::cerr << "buildcache-gocacheprog: " << options.status().ToString() << std::endl;
    return 2;
  }
  buildcache::gocacheprog::CacheProgram program(std::move(*options), std::cerr);
  return program.Run(std::cin, std::cout);
}
