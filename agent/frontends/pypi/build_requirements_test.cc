#include "agent/frontends/pypi/build_requirements.h"

#include <gtest/gtest.h>

namespace buildcache::pypi {
namespace {

TEST(BuildRequirementsTest, NamesSpecifiersExtrasAndMarkersAreAccepted) {
  for (const char* req :
       {"setuptools", "setuptools>=61.0", "flit_core >=3.2,<4", "hatchling[extra1,extra2]~=1.21",
        "wheel; python_version < \"3.12\"", "Cython!=3.0.0,>=0.29.*",
        "numpy==1.26.4; sys_platform != 'win32'", "scikit-build-core (>=0.4)", "pkg.name_x-y"}) {
    EXPECT_TRUE(CheckBuildRequirement(req).ok()) << req;
  }
}

TEST(BuildRequirementsTest, UrlsPathsOptionsAndArchivesAreRefused) {
  for (const char* req : {"evil @ https://attacker.example/evil-1.0-py3-none-any.whl",
                          "evil@file:///etc/passwd", "./local-dir", "/abs/path", "../up",
                          "-r requirements.txt", "--index-url=http://attacker.example/",
                          "demo-1.0.tar.gz", "x-1.0-py3-none-any.whl", "demo.zip", "", "a b|c",
                          "name\nother", "x>=1 #comment", "x==$(id)", "x==`id`", "evil:80"}) {
    Status s = CheckBuildRequirement(req);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << req;
  }
  EXPECT_FALSE(CheckBuildRequirement(std::string(kMaxBuildRequirementLength + 1, 'a')).ok());
  Status s = CheckBuildRequirement("evil @ https://x/y.whl");
  EXPECT_NE(s.message().find("\"evil @ https://x/y.whl\" refused"), std::string::npos)
      << s.message();
}

TEST(BuildRequirementsTest, ReadOutputIsParsedFromItsLastLine) {
  auto got = ParseBuildRequires("some hook printed this\n{\"requires\": [\"flit_core>=3.2\"]}\n");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, std::vector<std::string>{"flit_core>=3.2"});

  auto fallback = ParseBuildRequires("{\"requires\": null}");
  ASSERT_TRUE(fallback.ok());
  EXPECT_EQ(*fallback, DefaultBuildRequires());

  auto empty = ParseBuildRequires("{\"requires\": []}");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(BuildRequirementsTest, BadReadOutputIsAnError) {
  EXPECT_FALSE(ParseBuildRequires("").ok());
  EXPECT_FALSE(ParseBuildRequires("Traceback (most recent call last):\n  ...\n").ok());
  EXPECT_FALSE(ParseBuildRequires("{\"requires\": \"setuptools\"}").ok());
  EXPECT_FALSE(ParseBuildRequires("{\"requires\": [1]}").ok());
  EXPECT_FALSE(ParseBuildRequires("{\"requires\": [\"x @ https://attacker.example/x.whl\"]}").ok());
  std::string many = "{\"requires\": [";
  for (size_t i = 0; i <= kMaxBuildRequirements; ++i)
    many += (i ? ",\"a" : "\"a") + std::to_string(i) + "\"";
  EXPECT_FALSE(ParseBuildRequires(many + "]}").ok());
}

TEST(BuildRequirementsTest, MissingRequirementsAreReadFromPipsLog) {
  std::string log =
      "Processing ./demo-1.0.tar.gz\n"
      "  Installing build dependencies: finished with status 'done'\n"
      "  ERROR: Could not find a version that satisfies the requirement wheel (from versions: "
      "none)\n"
      "  ERROR: No matching distribution found for wheel\r\n"
      "ERROR: No matching distribution found for cython>=3\n"
      "ERROR: No matching distribution found for wheel\n";
  EXPECT_EQ(MissingRequirements(log), (std::vector<std::string>{"wheel", "cython>=3"}));
  EXPECT_TRUE(MissingRequirements("Successfully built demo\n").empty());
}

}  // namespace
}  // namespace buildcache::pypi
