#pragma once

// The platform a pip or uv client runs on, read from its User-Agent, and which wheels fit it.
//
// pip sends "pip/<version> <json>" and uv "uv/<version> <json>" (the "linehaul" format), where
// the JSON names the interpreter ({"implementation": {"name": "CPython", "version": "3.11.7"}}),
// the libc ({"distro": {"libc": {"lib": "glibc", "version": "2.36"}}}), the CPU ("cpu":
// "x86_64") and the OS ({"system": {"name": "Linux"}}). Anything else (another client, a
// truncated or hostile string) is an unknown platform, never an error.

#include <optional>
#include <string>
#include <string_view>

#include "agent/frontends/pypi/names.h"

namespace buildcache::pypi {

struct ClientPlatform {
  std::string implementation;  // PEP 425 abbreviation: "cp", "pp"
  int python_major = 0;
  int python_minor = 0;
  std::string system;  // lowercase: "linux"
  std::string cpu;     // "x86_64", "aarch64"
  std::string libc;    // "glibc", "musl" or "" (unknown)
  int libc_major = 0;
  int libc_minor = 0;

  // A stable key naming the platform, e.g. "cp311-linux-x86_64-glibc2.36"; "-" separated
  // fields of [a-z0-9._].
  std::string Key() const;

  friend bool operator==(const ClientPlatform&, const ClientPlatform&) = default;
};

// User-Agents longer than this are not parsed (unknown platform).
inline constexpr size_t kMaxUserAgentBytes = 8192;

// The platform of a pip or uv User-Agent; nullopt when it is not one, or lacks the interpreter,
// its version, the CPU or the OS, or names them with characters outside [A-Za-z0-9._-].
std::optional<ClientPlatform> ParseClientPlatform(std::string_view user_agent);

// Whether pip on `platform` would install a wheel with these tags (PEP 425, compressed tag sets
// such as "py2.py3" included): an interpreter tag of its implementation and version (or a
// generic "pyX"/"pyXY" of an older minor), abi "none", "abi3" (CPython, for cpXY of an older or
// the same minor) or the exact ABI, and platform "any", "linux_<cpu>", "manylinux_X_Y_<cpu>" (and
// the legacy aliases) up to its glibc, or "musllinux_X_Y_<cpu>" up to its musl.
bool WheelFits(const WheelName& wheel, const ClientPlatform& platform);

}  // namespace buildcache::pypi
