#include "operator/api/wheelbuild.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "operator/api/testing/yaml_json.h"

namespace buildcache::api {
namespace {

using testing::kCrdDir;
using testing::LoadYaml;

Json Sample() { return LoadYaml(kCrdDir + "/samples/wheelbuild.yaml"); }

TEST(WheelBuildTest, SampleParses) {
  Result<WheelBuild> build = WheelBuildFromJson(Sample());
  ASSERT_TRUE(build.ok()) << build.status().ToString();
  EXPECT_EQ(build->name, "ci-0123456789abcdef");
  EXPECT_EQ(build->ns, "ci-system");
  EXPECT_EQ(build->spec.build_cache, "ci");
  EXPECT_EQ(build->spec.builder, "py311");
  EXPECT_EQ(build->spec.build_id, "0123456789abcdef");
  EXPECT_EQ(build->spec.sdist.project, "bitarray");
  EXPECT_EQ(build->spec.sdist.version, "2.9.2");
  EXPECT_EQ(build->spec.sdist.filename, "bitarray-2.9.2.tar.gz");
  EXPECT_EQ(build->spec.agent_url, "http://10.244.1.7:8080");
  EXPECT_EQ(build->spec.deadline_seconds, 900);
  EXPECT_EQ(build->status, WheelBuildStatus{});
}

// Every object the API server must reject (test_wheel_builds_operator.py applies the same files),
// with the message both give.
TEST(WheelBuildTest, EveryInvalidSampleIsRejectedWithTheApiServersMessage) {
  std::vector<std::filesystem::path> files;
  for (const auto& entry :
       std::filesystem::directory_iterator(kCrdDir + "/testdata/wheelbuild-invalid")) {
    if (entry.path().extension() == ".yaml") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  ASSERT_GE(files.size(), 12u);
  for (const auto& file : files) {
    std::vector<std::string> expected;
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("# expect: ", 0) == 0) expected.push_back(line.substr(10));
    }
    ASSERT_FALSE(expected.empty()) << file << " has no # expect: line";
    Result<WheelBuild> build = WheelBuildFromJson(LoadYaml(file.string()));
    ASSERT_FALSE(build.ok()) << file << " was accepted";
    for (const std::string& want : expected) {
      EXPECT_NE(build.status().message().find(want), std::string::npos)
          << file << ": wanted \"" << want << "\" in:\n"
          << build.status().message();
    }
  }
}

// The fields that reach the builder pod's environment cannot carry what a shell, Python or the
// kubelet's $(VAR) expansion would interpret.
TEST(WheelBuildTest, InjectionAttemptsAreRefused) {
  const std::pair<std::vector<std::string>, std::string> attacks[] = {
      {{"spec", "agentURL"}, "http://10.0.0.1:8080/$(BUILDCACHE_BUILD_TOKEN)"},
      {{"spec", "agentURL"}, "http://10.0.0.1:8080\nX: y"},
      {{"spec", "agentURL"}, "http://a@10.0.0.1:8080"},
      {{"spec", "agentURL"}, "http://10.0.0.1:8080'+__import__('os').system('id')+'"},
      {{"spec", "agentURL"}, "file:///etc/passwd"},
      {{"spec", "agentURL"}, "http://10.0.0.1"},
      {{"spec", "uploadToken"}, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA$()"},
      {{"spec", "uploadToken"}, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"},
      {{"spec", "builder"}, "py311\"; rm -rf /"},
      {{"spec", "sdist", "project"}, "x$(id)"},
      {{"spec", "sdist", "project"}, "x\ny"},
      {{"spec", "sdist", "version"}, "1.0'"},
      {{"spec", "sdist", "filename"}, "x-1.0.tar.gz\n"},
      {{"spec", "sdist", "filename"}, "sub/x-1.0.tar.gz"},
      {{"spec", "sdist", "sha256"}, std::string(64, 'g')},
  };
  for (const auto& [path, value] : attacks) {
    Json object = Sample();
    Json* field = &object;
    for (const std::string& key : path) field = &(*field)[key];
    *field = value;
    EXPECT_FALSE(WheelBuildFromJson(object).ok()) << path.back() << " = " << value;
  }
  Json wrong_type = Sample();
  wrong_type["spec"]["deadlineSeconds"] = "900";
  Result<WheelBuild> typed = WheelBuildFromJson(wrong_type);
  ASSERT_FALSE(typed.ok());
  EXPECT_NE(typed.status().message().find("must be of type integer"), std::string::npos);
  EXPECT_FALSE(WheelBuildFromJson(Json::array()).ok());
  EXPECT_FALSE(WheelBuildFromJson(Json::parse(R"({"metadata":{"name":"x"},"spec":[]})")).ok());
}

TEST(WheelBuildTest, StatusRoundTripsAndReadsTolerantly) {
  WheelBuildStatus status{kPhaseFailed, "ci-0123456789abcdef", "builder container OOMKilled",
                          "2026-12-07T03:00:00Z", "2026-12-07T03:01:00Z"};
  Json object = Sample();
  object["status"] = WheelBuildStatusToJson(status)["status"];
  EXPECT_EQ(WheelBuildStatusFromJson(object), status);
  EXPECT_TRUE(status.Finished());
  object["status"] = Json::parse(R"({"phase": 3, "podName": ["x"]})");
  EXPECT_EQ(WheelBuildStatusFromJson(object), WheelBuildStatus{});
  EXPECT_EQ(WheelBuildStatusToJson(WheelBuildStatus{}), Json::parse(R"({"status":{}})"));
}

}  // namespace
}  // namespace buildcache::api
