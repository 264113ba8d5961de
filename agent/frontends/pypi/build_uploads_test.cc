#include "agent/frontends/pypi/build_uploads.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/http/client.h"
#include "common/http/router.h"
#include "common/log/log.h"
#include "common/text/base64.h"

namespace buildcache::pypi {
namespace {

namespace fsys = std::filesystem;

constexpr std::string_view kSdistBytes = "sdist-bytes";

std::string ReadFile(const fsys::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class BuildUploadsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/build_uploads_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    // Everything the code under test logs goes to a file the tests grep for tokens.
    log_path_ = dir_ / "agent.log";
    log_fd_ = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    log::SetOutputFd(log_fd_);
    log::SetLevel(log::Level::kDebug);
    builder_.name = "py311";
    builder_.image = "example.org/python:3.11";
    uploads_ = std::make_unique<BuildUploads>(
        BuildUploadsOptions{.prefix = "/pypi", .max_wheel_bytes = 1000, .max_log_bytes = 500});
    router_.Add("", "/pypi",
                uploads_->Wrap(
                    [](http::Request&, http::Response& resp) {
                      resp.SetStatus(299);  // "went through caller identity"
                      (void)resp.Send("gated");
                    },
                    [](http::Request& req, http::Response& resp) {
                      resp.SetStatus(200);
                      (void)resp.Send("index " + std::string(req.method()));
                    }));
    auto server = http::Server::Start({}, router_.AsHandler());
    ASSERT_TRUE(server.ok());
    server_ = std::move(server).value();
  }
  void TearDown() override {
    server_.reset();
    log::SetOutputFd(2);
    close(log_fd_);
    fsys::remove_all(dir_);
  }

  // A running build `id` with its directories; returns its token.
  std::string Begin(const std::string& id) {
    BuildTask t;
    t.id = id;
    t.sdist = {.project = "demo",
               .version = "1.0",
               .filename = "demo-1.0.tar.gz",
               .sha256 = std::string(64, 'a'),
               .store_key = ""};
    t.builder = &builder_;
    t.scratch = dir_ / id;
    t.sdist_path = t.scratch / "demo-1.0.tar.gz";
    t.out_dir = t.scratch / "out";
    t.log = t.scratch / "build.log";
    t.deadline = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    fsys::create_directories(t.out_dir);
    std::ofstream(t.sdist_path, std::ios::binary) << kSdistBytes;
    std::ofstream(t.log).flush();
    tasks_[id] = t;
    auto token = uploads_->Begin(tasks_[id]);
    EXPECT_TRUE(token.ok()) << token.status().ToString();
    tokens_.push_back(token.ok() ? *token : "");
    return token.ok() ? *token : "";
  }

  http::ClientResponse Call(std::string_view method, std::string_view target,
                            const std::string& token, std::string_view body = {},
                            http::HeaderList headers = {}) {
    if (!token.empty()) headers.emplace_back("Authorization", "Bearer " + token);
    http::Client client("127.0.0.1", server_->port());
    auto r = client.Fetch(method, target, headers, body);
    EXPECT_TRUE(r.ok()) << target << ": " << r.status().ToString();
    return r.ok() ? *r : http::ClientResponse{};
  }
  http::ClientResponse AsIndexReader(std::string_view method, std::string_view target,
                                     const std::string& token, std::string_view body = {}) {
    return Call(method, target, "", body,
                {{"Authorization", "Basic " + text::Base64Encode("wheelbuild:" + token)}});
  }

  // No token of any build appears in what was logged.
  void ExpectNoTokenLogged() {
    const std::string logged = ReadFile(log_path_);
    for (const std::string& t : tokens_) {
      ASSERT_FALSE(t.empty());
      EXPECT_EQ(logged.find(t), std::string::npos) << "a token was logged:\n" << logged;
      for (const auto& [id, task] : tasks_) {
        EXPECT_EQ(ReadFile(task.log).find(t), std::string::npos) << "a token in a build log";
      }
    }
  }

  fsys::path dir_;
  fsys::path log_path_;
  int log_fd_ = -1;
  BuilderSpec builder_;
  std::map<std::string, BuildTask> tasks_;
  std::vector<std::string> tokens_;
  std::unique_ptr<BuildUploads> uploads_;
  http::Router router_;
  std::unique_ptr<http::Server> server_;
};

constexpr const char* kA = "00000000000000aa";
constexpr const char* kB = "00000000000000bb";

TEST_F(BuildUploadsTest, TokensAre256RandomBitsInBase64Url) {
  std::string a = Begin(kA);
  std::string b = Begin(kB);
  EXPECT_EQ(a.size(), 43u);
  EXPECT_NE(a, b);
  EXPECT_EQ(a.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
            std::string::npos);
  EXPECT_FALSE(uploads_->Begin(tasks_[kA]).ok()) << "a running id is registered twice";
}

TEST_F(BuildUploadsTest, ScriptAndSdistNeedThisBuildsToken) {
  const std::string a = Begin(kA);
  const std::string b = Begin(kB);
  const std::string script = std::string("/pypi/builds/") + kA + "/script";
  EXPECT_EQ(Call("GET", script, "").status, 401) << "no token";
  EXPECT_EQ(Call("GET", script, "x" + a.substr(1)).status, 401) << "wrong token";
  EXPECT_EQ(Call("GET", script, b).status, 401) << "another build's token";
  EXPECT_EQ(Call("GET", script, "", {}, {{"Authorization", "Basic " + a}}).status, 401);
  auto ok = Call("GET", script, a);
  EXPECT_EQ(ok.status, 200);
  EXPECT_NE(ok.body.find(std::string(64, 'a')), std::string::npos) << "the digest is embedded";
  EXPECT_EQ(ok.body.find(a), std::string::npos) << "the script carries no token";
  auto sdist = Call("GET", std::string("/pypi/builds/") + kA + "/sdist", a);
  EXPECT_EQ(sdist.status, 200);
  EXPECT_EQ(sdist.body, kSdistBytes);
  EXPECT_EQ(sdist.header("X-Buildcache-Sha256"), std::string(64, 'a'));
  EXPECT_EQ(Call("GET", std::string("/pypi/builds/") + kB + "/sdist", a).status, 401);
  ExpectNoTokenLogged();
}

TEST_F(BuildUploadsTest, UnknownIdsAre404AndEndedBuilds410) {
  const std::string a = Begin(kA);
  for (const char* path : {"/pypi/builds/0000000000000000/script", "/pypi/builds/not-an-id/script",
                           "/pypi/builds/../script"}) {
    EXPECT_EQ(Call("GET", path, a).status, 404) << path;
  }
  uploads_->End(kA);
  const std::string base = std::string("/pypi/builds/") + kA;
  EXPECT_EQ(Call("GET", base + "/script", a).status, 410);
  EXPECT_EQ(Call("GET", base + "/sdist", a).status, 410);
  EXPECT_EQ(Call("PUT", base + "/wheel/demo-1.0-py3-none-any.whl", a, "zip").status, 410);
  EXPECT_EQ(Call("PUT", base + "/log", a, "late").status, 410) << "replay after the end";
  EXPECT_TRUE(fsys::is_empty(tasks_[kA].out_dir));
  EXPECT_FALSE(uploads_->IsRunningBuildToken(a));
}

TEST_F(BuildUploadsTest, OneWheelPerBuildBoundedInSize) {
  const std::string a = Begin(kA);
  const std::string base = std::string("/pypi/builds/") + kA;
  EXPECT_EQ(
      Call("PUT", base + "/wheel/demo-1.0-py3-none-any.whl", a, std::string(1001, 'z')).status,
      413);
  EXPECT_TRUE(fsys::is_empty(tasks_[kA].out_dir)) << "nothing kept of an oversize wheel";
  const std::string b = Begin(kB);
  const std::string base_b = std::string("/pypi/builds/") + kB;
  EXPECT_EQ(Call("PUT", base_b + "/wheel/demo-1.0-py3-none-any.whl", b, "first").status, 201);
  EXPECT_EQ(Call("PUT", base_b + "/wheel/demo-1.0-py3-none-any.whl", b, "second").status, 409);
  EXPECT_EQ(Call("PUT", base_b + "/wheel/demo-1.0-cp311-none-any.whl", b, "other").status, 409);
  EXPECT_EQ(ReadFile(tasks_[kB].out_dir / "demo-1.0-py3-none-any.whl"), "first");
  EXPECT_EQ(Call("GET", base_b + "/wheel/demo-1.0-py3-none-any.whl", b).status, 405);
  ExpectNoTokenLogged();
}

TEST_F(BuildUploadsTest, WheelNamesThatAreNoPlainWheelFileNameAreRefused) {
  const std::string a = Begin(kA);
  const std::string base = std::string("/pypi/builds/") + kA + "/wheel/";
  for (const char* name : {"../evil-1.0-py3-none-any.whl", "..", "sub/demo-1.0-py3-none-any.whl",
                           "..%2Fdemo-1.0-py3-none-any.whl", "demo-1.0.tar.gz",
                           ".demo-1.0-py3-none-any.whl", "demo.whl", ""}) {
    EXPECT_EQ(Call("PUT", base + name, a, "zip").status, 400) << name;
  }
  EXPECT_TRUE(fsys::is_empty(tasks_[kA].out_dir));
  EXPECT_FALSE(fsys::exists(dir_ / "evil-1.0-py3-none-any.whl"));
  // The refusals did not use up the build's one wheel.
  EXPECT_EQ(Call("PUT", base + "demo-1.0-py3-none-any.whl", a, "zip").status, 201);
}

TEST_F(BuildUploadsTest, TheLogIsTakenOnceAndEndsTheWait) {
  const std::string a = Begin(kA);
  const std::string base = std::string("/pypi/builds/") + kA;
  auto before =
      uploads_->Wait(kA, std::chrono::steady_clock::now() + std::chrono::milliseconds(50));
  EXPECT_TRUE(before.known);
  EXPECT_FALSE(before.log);
  std::thread script([&] {
    EXPECT_EQ(Call("PUT", base + "/wheel/demo-1.0-py3-none-any.whl", a, "zip").status, 201);
    EXPECT_EQ(Call("PUT", base + "/log", a, "compiled it\n").status, 201);
  });
  auto done = uploads_->Wait(kA, std::chrono::steady_clock::now() + std::chrono::seconds(30));
  script.join();
  EXPECT_TRUE(done.log);
  EXPECT_TRUE(done.wheel);
  EXPECT_EQ(Call("PUT", base + "/log", a, "again").status, 409);
  EXPECT_EQ(ReadFile(tasks_[kA].log), "compiled it\n");
  const std::string b = Begin(kB);
  EXPECT_EQ(
      Call("PUT", std::string("/pypi/builds/") + kB + "/log", b, std::string(501, 'l')).status,
      413);
  EXPECT_TRUE(uploads_->Wait(kB, std::chrono::steady_clock::now()).log)
      << "a refused log still ends the script's part";
  ExpectNoTokenLogged();
}

TEST_F(BuildUploadsTest, ARunningBuildsTokenReadsTheIndexAndWritesNothing) {
  const std::string a = Begin(kA);
  auto read = AsIndexReader("GET", "/pypi/simple/demo/", a);
  EXPECT_EQ(read.status, 200);
  EXPECT_EQ(read.body, "index GET") << "it bypasses caller identity";
  EXPECT_EQ(AsIndexReader("POST", "/pypi/", a, "upload").status, 403);
  EXPECT_EQ(AsIndexReader("PUT", "/pypi/simple/demo/", a, "x").status, 403);
  EXPECT_EQ(AsIndexReader("GET", "/pypi/simple/demo/", "not-a-token").status, 401);
  EXPECT_EQ(Call("GET", "/pypi/simple/demo/", "").status, 299) << "others go through the gate";
  EXPECT_EQ(Call("GET", std::string("/pypi/builds/") + kA + "/log", "").status, 299)
      << "reading a build's log stays a caller's request";
  uploads_->End(kA);
  EXPECT_EQ(AsIndexReader("GET", "/pypi/simple/demo/", a).status, 401) << "only while it runs";
  ExpectNoTokenLogged();
}

}  // namespace
}  // namespace buildcache::pypi
