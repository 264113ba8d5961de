#pragma once

// Wheels, a client platform and a stored sdist for the PyPI front end's tests. Header-only; for
// tests only.

#include <chrono>
#include <string>
#include <string_view>

#include "agent/frontends/goproxy/testing/test_zip.h"
#include "agent/frontends/pypi/build_runner.h"
#include "agent/frontends/pypi/platform.h"
#include "agent/store/blob_store.h"
#include "agent/store/digest.h"
#include "common/status/status.h"

namespace buildcache::pypi::testing {

// How long a test waits for a build before it fails (never reached when the code works).
inline constexpr auto kWait = std::chrono::seconds(60);

// A wheel whose metadata names `name` `version` with one tag; `init_py` is its module's body.
inline std::string WheelBytes(const std::string& name, const std::string& version,
                              const std::string& tag = "py3-none-any",
                              const std::string& init_py = "") {
  std::string dist = name + "-" + version + ".dist-info/";
  return goproxy::testing::BuildZip(
      {{name + "/__init__.py", init_py, true},
       {dist + "METADATA",
        "Metadata-Version: 2.1\nName: " + name + "\nVersion: " + version + "\n\nbody\n", true},
       {dist + "WHEEL", "Wheel-Version: 1.0\nTag: " + tag + "\n", true}});
}

// CPython 3.11 on glibc 2.36, x86_64: what pip on Debian bookworm says it is.
inline ClientPlatform Cp311Glibc236() {
  ClientPlatform p;
  p.implementation = "cp";
  p.python_major = 3;
  p.python_minor = 11;
  p.system = "linux";
  p.cpu = "x86_64";
  p.libc = "glibc";
  p.libc_major = 2;
  p.libc_minor = 36;
  return p;
}

// The sdist demo-1.0.tar.gz (its bytes are `kSdistBytes`), stored where the front end keeps it.
inline constexpr std::string_view kSdistBytes = "demo-1.0.tar.gz-bytes";
inline Result<SdistRef> PutDemoSdist(store::BlobStore& store) {
  const std::string key = "pypi/files/demo/demo-1.0.tar.gz";
  if (auto put = store::PutBytes(store, key, kSdistBytes); !put.ok()) return put.status();
  return SdistRef{.project = "demo",
                  .version = "1.0",
                  .filename = "demo-1.0.tar.gz",
                  .sha256 = store::Digest::Of(kSdistBytes).Hex(),
                  .store_key = key};
}

}  // namespace buildcache::pypi::testing
