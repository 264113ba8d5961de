// The agent's side of a build in a pod, with the test playing the operator and the builder pod:
// a WheelBuilder whose image builder runs through PodRunner over the in-memory API server, and
// the build endpoints on a real HTTP server.
#include "agent/frontends/pypi/pod_runner.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>
#include <vector>

#include "agent/frontends/pypi/testing/test_wheels.h"
#include "agent/frontends/pypi/wheel_builder.h"
#include "agent/store/memory_store.h"
#include "common/base/thread_annotations.h"
#include "common/http/client.h"
#include "common/http/router.h"
#include "common/kube/testing/memory_kube_client.h"

namespace buildcache::pypi {
namespace {

namespace fsys = std::filesystem;
using kube::Json;

using testing::Cp311Glibc236;
using testing::kSdistBytes;
using testing::kWait;
using testing::WheelBytes;

// The in-memory API server, remembering every WheelBuild created (a build may create and delete
// its WheelBuild before a test polling the list sees it).
class RecordingKube : public kube::testing::MemoryKubeClient {
 public:
  Result<Json> Create(const kube::Resource& r, const Json& object) override {
    Result<Json> stored = MemoryKubeClient::Create(r, object);
    if (stored.ok()) {
      MutexLock lock(created_mu_);
      created_.push_back(*stored);
    }
    return stored;
  }
  std::optional<Json> Created(size_t i) {
    MutexLock lock(created_mu_);
    return i < created_.size() ? std::optional<Json>(created_[i]) : std::nullopt;
  }

 private:
  Mutex created_mu_;
  std::vector<Json> created_ GUARDED_BY(created_mu_);
};

class PodRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pod_runner_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    Result<SdistRef> sdist = testing::PutDemoSdist(store_);
    ASSERT_TRUE(sdist.ok()) << sdist.status().ToString();
    sdist_ = *sdist;
    router_.Add("", "/pypi",
                uploads_.Wrap(
                    [](http::Request&, http::Response& resp) {
                      resp.SetStatus(404);
                      (void)resp.Send("");
                    },
                    [](http::Request&, http::Response& resp) {
                      resp.SetStatus(404);
                      (void)resp.Send("");
                    }));
    auto server = http::Server::Start({}, router_.AsHandler());
    ASSERT_TRUE(server.ok());
    server_ = std::move(server).value();
  }
  void TearDown() override {
    builder_.reset();
    server_.reset();
    fsys::remove_all(dir_);
  }

  void Start(std::chrono::milliseconds deadline = kWait,
             std::chrono::milliseconds grace = std::chrono::seconds(60)) {
    BuilderSpec spec;
    spec.name = "py311";
    spec.image = "example.org/ci/python:3.11";
    spec.platform = Cp311Glibc236();
    spec.tools = "image example.org/ci/python:3.11";
    PodRunnerOptions ro;
    ro.ns = "ci";
    ro.build_cache = "bc";
    ro.agent_url = "http://127.0.0.1:" + std::to_string(server_->port());
    ro.node = "node-1";
    ro.grace = grace;
    ro.poll = std::chrono::milliseconds(20);
    WheelBuildOptions o;
    o.builders = {spec};
    o.work_dir = dir_ / "work";
    o.deadline = deadline;
    o.pod_runner = std::make_shared<PodRunner>(kube_, uploads_, ro);
    builder_ = std::make_unique<WheelBuilder>(store_, house_, o);
  }

  // Waits for the WheelBuild the agent creates (the operator's informer, played here).
  Json AwaitWheelBuild() {
    auto until = std::chrono::steady_clock::now() + kWait;
    while (std::chrono::steady_clock::now() < until) {
      if (std::optional<Json> wb = kube_.Created(awaited_)) {
        ++awaited_;
        return *wb;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "no WheelBuild appeared";
    return Json::object();
  }

  // The builder pod's requests, with the environment the operator gives it.
  http::ClientResponse Pod(const Json& wb, std::string_view method, const std::string& what,
                           std::string_view body = {}) {
    const Json& spec = wb["spec"];
    const std::string token = spec.value("uploadToken", "");
    http::Client client("127.0.0.1", server_->port());
    auto r = client.Fetch(method, "/pypi/builds/" + spec.value("buildId", "") + "/" + what,
                          {{"Authorization", "Bearer " + token}}, body);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : http::ClientResponse{};
  }

  // Plays a pod that uploads `wheel_name` with `bytes` and a log.
  void PodUploads(const std::string& wheel_name, const std::string& bytes,
                  std::optional<Json> seen = std::nullopt) {
    Json wb = seen ? *seen : AwaitWheelBuild();
    EXPECT_EQ(Pod(wb, "GET", "script").status, 200);
    EXPECT_EQ(Pod(wb, "GET", "sdist").body, kSdistBytes);
    EXPECT_EQ(Pod(wb, "PUT", "wheel/" + wheel_name, bytes).status, 201);
    EXPECT_EQ(Pod(wb, "PUT", "log", "pip wheel output\n").status, 201);
  }

  BuildRecord OnlyRecord() {
    auto records = builder_->Builds();
    EXPECT_EQ(records.size(), 1u);
    return records.empty() ? BuildRecord{} : records[0];
  }

  fsys::path dir_;
  store::MemoryStore store_;
  WheelHouse house_{store_};
  SdistRef sdist_;
  RecordingKube kube_;
  size_t awaited_ = 0;  // WheelBuilds AwaitWheelBuild returned
  BuildUploads uploads_{BuildUploadsOptions{.prefix = "/pypi", .max_wheel_bytes = 1 << 20}};
  http::Router router_;
  std::unique_ptr<http::Server> server_;
  std::unique_ptr<WheelBuilder> builder_;
};

TEST_F(PodRunnerTest, PodBuildCreatesAWheelBuildAndListsTheUploadedWheelWithProvenance) {
  Start();
  std::string id;
  ASSERT_EQ(builder_->Request(sdist_, Cp311Glibc236(), &id), BuildDecision::kStarted);
  Json wb = AwaitWheelBuild();
  // What the operator reads: the contract's fields and nothing to run but the builder's name.
  EXPECT_EQ(wb["apiVersion"], "buildcache.io/v1alpha1");
  EXPECT_EQ(wb["kind"], "WheelBuild");
  EXPECT_EQ(wb["metadata"]["name"], "bc-" + id);
  EXPECT_EQ(wb["metadata"]["namespace"], "ci");
  EXPECT_EQ(wb["metadata"]["labels"]["buildcache.io/buildcache"], "bc");
  EXPECT_EQ(wb["metadata"]["labels"]["buildcache.io/node"], "node-1");
  const Json& spec = wb["spec"];
  EXPECT_EQ(spec["buildCache"], "bc");
  EXPECT_EQ(spec["builder"], "py311");
  EXPECT_EQ(spec["buildId"], id);
  EXPECT_EQ(spec["sdist"]["project"], "demo");
  EXPECT_EQ(spec["sdist"]["version"], "1.0");
  EXPECT_EQ(spec["sdist"]["filename"], "demo-1.0.tar.gz");
  EXPECT_EQ(spec["sdist"]["sha256"], sdist_.sha256);
  EXPECT_EQ(spec["agentURL"], "http://127.0.0.1:" + std::to_string(server_->port()));
  EXPECT_EQ(spec["uploadToken"].get<std::string>().size(), 43u);
  EXPECT_GE(spec["deadlineSeconds"].get<int64_t>(), 60);
  EXPECT_LE(spec["deadlineSeconds"].get<int64_t>(), 7200);
  EXPECT_FALSE(spec.contains("image")) << "the operator takes the image from the BuildCache";

  PodUploads("demo-1.0-py3-none-any.whl", WheelBytes("demo", "1.0"), wb);
  ASSERT_TRUE(builder_->WaitIdle(kWait));
  BuildRecord r = OnlyRecord();
  EXPECT_EQ(r.state, BuildRecord::State::kSucceeded) << r.error;
  auto files = house_.Files("demo");
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0].filename, "demo-1.0-py3-none-any.whl");
  EXPECT_EQ(files[0].built_from, sdist_.sha256);
  EXPECT_EQ(files[0].builder, "py311 (example.org/ci/python:3.11)");
  auto log_text = builder_->Log(id);
  ASSERT_TRUE(log_text.ok());
  EXPECT_NE(log_text->find("pip wheel output"), std::string::npos) << *log_text;
  EXPECT_EQ(log_text->find(spec["uploadToken"].get<std::string>()), std::string::npos);
  EXPECT_TRUE(kube_.List(kWheelBuilds, "ci")->at("items").empty()) << "deleted after the build";
  // The finished build's token is spent.
  EXPECT_EQ(Pod(wb, "GET", "script").status, 410);
  EXPECT_EQ(Pod(wb, "PUT", "log", "replay").status, 410);
}

TEST_F(PodRunnerTest, AWheelOfAnotherProjectVersionOrPlatformFailsTheBuildAndNothingIsListed) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"evil-1.0-py3-none-any.whl", WheelBytes("evil", "1.0")},
      {"demo-2.0-py3-none-any.whl", WheelBytes("demo", "2.0")},
      {"demo-1.0-cp312-cp312-linux_x86_64.whl",
       WheelBytes("demo", "1.0", "cp312-cp312-linux_x86_64")},
      {"demo-1.0-cp311-cp311-win_amd64.whl", WheelBytes("demo", "1.0", "cp311-cp311-win_amd64")},
  };
  for (const auto& [name, bytes] : bad) {
    builder_.reset();
    Start();
    // A fresh builder: no remembered failure stands in the way.
    std::string id;
    ASSERT_EQ(builder_->Request(sdist_, Cp311Glibc236(), &id), BuildDecision::kStarted) << name;
    PodUploads(name, bytes);
    ASSERT_TRUE(builder_->WaitIdle(kWait));
    BuildRecord r = OnlyRecord();
    EXPECT_EQ(r.state, BuildRecord::State::kFailed) << name;
    EXPECT_FALSE(r.error.empty());
    EXPECT_TRUE(house_.Files("demo").empty()) << name;
    EXPECT_TRUE(house_.Files("evil").empty()) << name;
    fsys::remove_all(dir_ / "work");
  }
}

TEST_F(PodRunnerTest, AFailedWheelBuildFailsTheBuildWithItsMessage) {
  Start();
  std::string id;
  ASSERT_EQ(builder_->Request(sdist_, Cp311Glibc236(), &id), BuildDecision::kStarted);
  Json wb = AwaitWheelBuild();
  // The operator: the image could not be pulled.
  Json failed = wb;
  failed["status"] = {{"phase", "Failed"},
                      {"message", "ErrImagePull: example.org/ci/python:3.11 not found"}};
  kube_.Put(kube::testing::MemoryKubeClient::Key(kWheelBuilds, "ci", "bc-" + id), failed);
  ASSERT_TRUE(builder_->WaitIdle(kWait));
  BuildRecord r = OnlyRecord();
  EXPECT_EQ(r.state, BuildRecord::State::kFailed);
  EXPECT_NE(r.error.find("ErrImagePull: example.org/ci/python:3.11 not found"), std::string::npos)
      << r.error;
  auto log_text = builder_->Log(id);
  ASSERT_TRUE(log_text.ok());
  EXPECT_NE(log_text->find("ErrImagePull"), std::string::npos) << *log_text;
  EXPECT_TRUE(kube_.List(kWheelBuilds, "ci")->at("items").empty());
  EXPECT_EQ(builder_->Request(sdist_, Cp311Glibc236()), BuildDecision::kFailedRecently);
}

TEST_F(PodRunnerTest, AnApiErrorCreatingTheWheelBuildFailsTheBuildWithTheServersMessage) {
  kube_.fail_with = kube::ApiErrorStatus(
      404,
      R"({"kind":"Status","reason":"NotFound","code":404,"message":"the server could not find the requested resource"})",
      "create");
  Start();
  ASSERT_EQ(builder_->Request(sdist_, Cp311Glibc236()), BuildDecision::kStarted);
  ASSERT_TRUE(builder_->WaitIdle(kWait));
  BuildRecord r = OnlyRecord();
  EXPECT_EQ(r.state, BuildRecord::State::kFailed);
  EXPECT_NE(r.error.find("creating WheelBuild ci/bc-"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("could not find the requested resource"), std::string::npos) << r.error;
  EXPECT_EQ(builder_->Request(sdist_, Cp311Glibc236()), BuildDecision::kFailedRecently);
}

TEST_F(PodRunnerTest, APodThatNeverReportsFailsAtTheDeadlineAndItsTokenStopsWorking) {
  Start(std::chrono::milliseconds(200), std::chrono::milliseconds(200));
  ASSERT_EQ(builder_->Request(sdist_, Cp311Glibc236()), BuildDecision::kStarted);
  Json wb = AwaitWheelBuild();
  ASSERT_TRUE(builder_->WaitIdle(kWait));
  BuildRecord r = OnlyRecord();
  EXPECT_EQ(r.state, BuildRecord::State::kFailed);
  EXPECT_NE(r.error.find("deadline"), std::string::npos) << r.error;
  EXPECT_EQ(Pod(wb, "PUT", "wheel/demo-1.0-py3-none-any.whl", WheelBytes("demo", "1.0")).status,
            410);
  EXPECT_TRUE(house_.Files("demo").empty());
  EXPECT_TRUE(kube_.List(kWheelBuilds, "ci")->at("items").empty());
}

}  // namespace
}  // namespace buildcache::pypi
