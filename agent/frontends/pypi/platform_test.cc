#include "agent/frontends/pypi/platform.h"

#include <gtest/gtest.h>

namespace buildcache::pypi {
namespace {

// What pip 24 on Debian 12 sends (abridged only in the values it does not read).
constexpr std::string_view kPipUa =
    R"(pip/24.0 {"ci":null,"cpu":"x86_64","distro":{"id":"bookworm","libc":{"lib":"glibc",)"
    R"("version":"2.36"},"name":"Debian GNU/Linux","version":"12"},"implementation":)"
    R"({"name":"CPython","version":"3.11.2"},"installer":{"name":"pip","version":"24.0"},)"
    R"("openssl_version":"OpenSSL 3.0.11","python":"3.11.2","setuptools_version":"66.1.1",)"
    R"("system":{"name":"Linux","release":"6.1.0"}})";

// uv on Alpine (musl).
constexpr std::string_view kUvUa =
    R"(uv/0.4.18 {"installer":{"name":"uv","version":"0.4.18"},"python":"3.12.6",)"
    R"("implementation":{"name":"CPython","version":"3.12.6"},"distro":{"name":"Alpine Linux",)"
    R"("version":"3.20.3","id":null,"libc":{"lib":"musl","version":"1.2.5"}},)"
    R"("system":{"name":"Linux","release":"6.1.0"},"cpu":"aarch64","ci":null})";

ClientPlatform Glibc236() { return *ParseClientPlatform(kPipUa); }

WheelName W(std::string_view filename) { return ParseWheelFilename(filename).value(); }

TEST(PlatformTest, ReadsPipAndUvUserAgents) {
  auto pip = ParseClientPlatform(kPipUa);
  ASSERT_TRUE(pip);
  EXPECT_EQ(pip->implementation, "cp");
  EXPECT_EQ(pip->python_major, 3);
  EXPECT_EQ(pip->python_minor, 11);
  EXPECT_EQ(pip->system, "linux");
  EXPECT_EQ(pip->cpu, "x86_64");
  EXPECT_EQ(pip->libc, "glibc");
  EXPECT_EQ(pip->libc_minor, 36);
  EXPECT_EQ(pip->Key(), "cp311-linux-x86_64-glibc2.36");
  auto uv = ParseClientPlatform(kUvUa);
  ASSERT_TRUE(uv);
  EXPECT_EQ(uv->Key(), "cp312-linux-aarch64-musl1.2");
}

TEST(PlatformTest, HostileOrForeignUserAgentsAreUnknownNotErrors) {
  const std::string valid(kPipUa);
  std::vector<std::string> hostile = {
      "",
      "curl/8.0",
      "pip/24.0",
      "pip/24.0 ",
      "pip/24.0 {",
      "pip/24.0 []",
      "pip/24.0 null",
      valid.substr(0, valid.size() / 2),               // truncated JSON
      "Mozilla/5.0 " + valid.substr(valid.find('{')),  // not pip or uv
      "pip/24.0 " + std::string(20000, '['),           // deep nesting, over the bound
      "pip/24.0 " + std::string(4000, '[') + std::string(4000, ']'),  // deep, within the bound
      R"(pip/1 {"implementation":{"name":"CPython"},"python":"3","cpu":"x86_64","system":{"name":"Linux"}})",
      R"(pip/1 {"implementation":{"name":"CPython"},"python":"3.x","cpu":"x86_64","system":{"name":"Linux"}})",
      R"(pip/1 {"implementation":{"name":"CPython"},"python":"3.11","cpu":"x86/../64","system":{"name":"Linux"}})",
      R"(pip/1 {"implementation":{"name":"CPython"},"python":"3.11","cpu":7,"system":{"name":"Linux"}})",
      R"(pip/1 {"implementation":{"name":"Jython"},"python":"3.11","cpu":"x86_64","system":{"name":"Linux"}})",
      R"(pip/1 {"implementation":"CPython","python":"3.11","cpu":"x86_64","system":{"name":"Linux"}})",
      R"(pip/1 {"implementation":{"name":"CPython"},"python":"99999999999999999999.1","cpu":"x86_64","system":{"name":"Linux"}})",
      valid + std::string(kMaxUserAgentBytes, ' '),  // too long
  };
  for (const std::string& ua : hostile) {
    EXPECT_FALSE(ParseClientPlatform(ua)) << ua.substr(0, 200);
  }
  // A bad libc leaves the libc unknown but the rest is read.
  auto p = ParseClientPlatform(
      R"(pip/1 {"implementation":{"name":"CPython"},"python":"3.11.1","cpu":"x86_64",)"
      R"("system":{"name":"Linux"},"distro":{"libc":{"lib":"glibc","version":"two"}}})");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->libc, "");
}

TEST(PlatformTest, WheelsFitLikePipChoosesThem) {
  ClientPlatform p = Glibc236();
  for (const char* fits :
       {"x-1-py3-none-any.whl", "x-1-py2.py3-none-any.whl", "x-1-cp311-cp311-linux_x86_64.whl",
        "x-1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "x-1-cp311-cp311-manylinux_2_36_x86_64.whl", "x-1-cp311-cp311-manylinux1_x86_64.whl",
        "x-1-cp38-abi3-manylinux_2_28_x86_64.whl", "x-1-py310-none-any.whl"}) {
    EXPECT_TRUE(WheelFits(W(fits), p)) << fits;
  }
  for (const char* misfit :
       {"x-1-cp312-cp312-linux_x86_64.whl", "x-1-cp311-cp311-linux_aarch64.whl",
        "x-1-cp311-cp311-manylinux_2_38_x86_64.whl", "x-1-cp311-cp311-musllinux_1_1_x86_64.whl",
        "x-1-cp311-cp311-win_amd64.whl", "x-1-pp310-pypy310_pp73-linux_x86_64.whl",
        "x-1-py2-none-any.whl", "x-1-cp312-abi3-linux_x86_64.whl"}) {
    EXPECT_FALSE(WheelFits(W(misfit), p)) << misfit;
  }
  ClientPlatform musl = *ParseClientPlatform(kUvUa);
  EXPECT_TRUE(WheelFits(W("x-1-cp312-cp312-musllinux_1_2_aarch64.whl"), musl));
  EXPECT_FALSE(WheelFits(W("x-1-cp312-cp312-manylinux_2_17_aarch64.whl"), musl));
}

}  // namespace
}  // namespace buildcache::pypi
