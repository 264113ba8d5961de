#include "agent/upstream/credential.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "agent/upstream/testing/fixture_upstream.h"
#include "agent/upstream/upstream.h"

namespace buildcache::upstream {
namespace {

namespace fsys = std::filesystem;
using testing::FixtureUpstream;
using testing::Route;

class Dir {
 public:
  Dir() {
    std::string tmpl = ::testing::TempDir() + "/bccred-XXXXXX";
    EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
    path_ = tmpl;
  }
  ~Dir() {
    std::error_code ec;
    fsys::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void Write(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
}

// What the kubelet does to a Secret volume: the files live in a timestamped directory, "..data"
// points at it, and each key is a symlink through "..data"; an update writes a new directory and
// swaps "..data" with a rename.
class SecretVolume {
 public:
  explicit SecretVolume(const Dir& dir) : dir_(dir) {}
  void Publish(const std::map<std::string, std::string>& data) {
    const std::string version = "..v" + std::to_string(++generation_);
    fsys::create_directory(dir_ / version);
    for (const auto& [key, value] : data) Write(dir_ / (version + "/" + key), value);
    fsys::create_directory_symlink(version, dir_ / "..data_tmp");
    fsys::rename(dir_ / "..data_tmp", dir_ / "..data");
    for (const auto& [key, value] : data) {
      std::error_code ec;
      if (!fsys::is_symlink(dir_ / key, ec)) fsys::create_symlink("..data/" + key, dir_ / key);
    }
  }

 private:
  const Dir& dir_;
  int generation_ = 0;
};

struct Got {
  Status status;
  std::string body;
};

Got Fetch(Fetcher& fetcher, const std::string& url, UpstreamCredential& credential) {
  FetchOptions options;
  options.authorization = [&credential](const Url& u) { return credential.AuthorizationFor(u); };
  Got got;
  got.status = fetcher.Get(
      url, options, [](const UpstreamResponse&) { return Status::Ok(); },
      [&](std::string_view data) {
        got.body.append(data);
        return Status::Ok();
      });
  return got;
}

std::shared_ptr<UpstreamCredential> Bearer(const FixtureUpstream& up, const std::string& file) {
  auto made = UpstreamCredential::Make("pypi", up.Url("/simple/"), {.token_file = file});
  EXPECT_TRUE(made.ok()) << made.status().ToString();
  return made.ok() ? *made : nullptr;
}

TEST(UpstreamCredentialTest, BearerTokenGoesToTheUpstreamOriginOnlyNeverAcrossARedirect) {
  FixtureUpstream up;
  FixtureUpstream cdn;  // another port on the same host: another origin
  up.Set("/simple/x/", Route{.body = "index"});
  up.Set("/files/x.whl", Route{.status = 302, .location = cdn.Url("/blob/x.whl")});
  up.Set("/same", Route{.status = 302, .location = "/simple/x/"});
  cdn.Set("/blob/x.whl", Route{.body = "wheel"});
  cdn.Set("/linked", Route{.body = "linked"});
  Dir dir;
  Write(dir / "token", "s3cr3t-token\n");
  auto cred = Bearer(up, dir / "token");
  auto fetcher = NewHttpFetcher();

  Got index = Fetch(*fetcher, up.Url("/simple/x/"), *cred);
  ASSERT_TRUE(index.status.ok()) << index.status.ToString();
  EXPECT_EQ(up.LastHeader("/simple/x/", "Authorization"), "Bearer s3cr3t-token");

  Got wheel = Fetch(*fetcher, up.Url("/files/x.whl"), *cred);
  ASSERT_TRUE(wheel.status.ok()) << wheel.status.ToString();
  EXPECT_EQ(wheel.body, "wheel");
  EXPECT_EQ(up.LastHeader("/files/x.whl", "Authorization"), "Bearer s3cr3t-token");
  EXPECT_EQ(cdn.Requests("/blob/x.whl"), 1);
  EXPECT_EQ(cdn.LastHeader("/blob/x.whl", "Authorization"), "");

  // A link to another origin (a files host an index names) gets nothing either.
  ASSERT_TRUE(Fetch(*fetcher, cdn.Url("/linked"), *cred).status.ok());
  EXPECT_EQ(cdn.LastHeader("/linked", "Authorization"), "");

  // A redirect within the origin keeps it.
  ASSERT_TRUE(Fetch(*fetcher, up.Url("/same"), *cred).status.ok());
  EXPECT_EQ(up.Requests("/simple/x/"), 2);
  EXPECT_EQ(up.LastHeader("/simple/x/", "Authorization"), "Bearer s3cr3t-token");
}

TEST(UpstreamCredentialTest, BasicIsUsernameAndPasswordFromTheirFiles) {
  FixtureUpstream up;
  up.Set("/r", Route{.body = "ok"});
  Dir dir;
  Write(dir / "username", "ci-reader\n");
  Write(dir / "password", "pa ss:word\n");  // inner spaces and ':' belong to the password
  auto cred = UpstreamCredential::Make(
      "maven", up.Url("/"), {.username_file = dir / "username", .password_file = dir / "password"});
  ASSERT_TRUE(cred.ok()) << cred.status().ToString();
  auto fetcher = NewHttpFetcher();
  ASSERT_TRUE(Fetch(*fetcher, up.Url("/r"), **cred).status.ok());
  // base64("ci-reader:pa ss:word")
  EXPECT_EQ(up.LastHeader("/r", "Authorization"), "Basic Y2ktcmVhZGVyOnBhIHNzOndvcmQ=");
}

TEST(UpstreamCredentialTest, ARotatedSecretIsUsedFromTheNextRequest) {
  FixtureUpstream up;
  up.Set("/r", Route{.body = "ok"});
  Dir dir;
  SecretVolume volume(dir);
  volume.Publish({{"token", "first-token"}});
  auto cred = Bearer(up, dir / "token");
  auto fetcher = NewHttpFetcher();
  ASSERT_TRUE(Fetch(*fetcher, up.Url("/r"), *cred).status.ok());
  EXPECT_EQ(up.LastHeader("/r", "Authorization"), "Bearer first-token");
  volume.Publish({{"token", "second-token"}});
  ASSERT_TRUE(Fetch(*fetcher, up.Url("/r"), *cred).status.ok());
  EXPECT_EQ(up.LastHeader("/r", "Authorization"), "Bearer second-token");
}

TEST(UpstreamCredentialTest, AMissingFileStopsTheRequestUntilItAppears) {
  FixtureUpstream up;
  up.Set("/r", Route{.body = "ok"});
  Dir dir;
  auto cred = Bearer(up, dir / "token");
  auto fetcher = NewHttpFetcher();
  Got missing = Fetch(*fetcher, up.Url("/r"), *cred);
  EXPECT_EQ(missing.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(missing.status.message().find(dir / "token"), std::string::npos)
      << missing.status.message();
  EXPECT_EQ(up.Requests("/r"), 0);  // nothing sent without the credential
  Write(dir / "token", "late-token");
  ASSERT_TRUE(Fetch(*fetcher, up.Url("/r"), *cred).status.ok());
  EXPECT_EQ(up.LastHeader("/r", "Authorization"), "Bearer late-token");
}

TEST(UpstreamCredentialTest, BadValuesAreRefusedWithoutQuotingThem) {
  FixtureUpstream up;
  Dir dir;
  Url url = *ParseUrl(up.Url("/r"));
  struct Case {
    std::string content;
    std::string why;
  };
  for (const Case& c : {Case{"tok-1\r\nX-Injected: tok-1", "control character"},
                        Case{"tok-2 tok-2", "without spaces"}, Case{"  \n", "empty"},
                        Case{std::string(70 << 10, 'k'), "64 KiB"}}) {
    Write(dir / "token", c.content);
    auto cred = Bearer(up, dir / "token");
    auto got = cred->AuthorizationFor(url);
    ASSERT_FALSE(got.ok()) << c.why;
    EXPECT_NE(got.status().message().find(c.why), std::string::npos) << got.status().message();
    EXPECT_EQ(got.status().message().find("tok-"), std::string::npos) << got.status().message();
    EXPECT_EQ(got.status().message().find("kkkk"), std::string::npos);
  }
  Write(dir / "username", "user:name");
  Write(dir / "password", "pw-secret");
  auto basic = UpstreamCredential::Make(
      "npm", up.Url("/"), {.username_file = dir / "username", .password_file = dir / "password"});
  ASSERT_TRUE(basic.ok());
  auto got = (*basic)->AuthorizationFor(url);
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("cannot contain ':'"), std::string::npos);
  EXPECT_EQ(got.status().message().find("pw-secret"), std::string::npos);
}

TEST(UpstreamCredentialTest, FileCombinationsAreChecked) {
  for (const CredentialFiles& bad :
       {CredentialFiles{}, CredentialFiles{.token_file = "/t", .username_file = "/u"},
        CredentialFiles{.username_file = "/u"}, CredentialFiles{.password_file = "/p"}}) {
    auto made = UpstreamCredential::Make("pypi", "https://index.example/", bad);
    ASSERT_FALSE(made.ok()) << bad.token_file << bad.username_file << bad.password_file;
    EXPECT_NE(made.status().message().find("pypi.auth: either tokenFile"), std::string::npos);
  }
  EXPECT_FALSE(UpstreamCredential::Make("pypi", "not a url", {.token_file = "/t"}).ok());
  // Cargo's sparse+ prefix names the same origin.
  auto cargo =
      UpstreamCredential::Make("cargo", "sparse+https://index.example:8443/", {.token_file = "/t"});
  ASSERT_TRUE(cargo.ok()) << cargo.status().ToString();
  EXPECT_EQ((*cargo)->origin(), "https://index.example:8443");
}

}  // namespace
}  // namespace buildcache::upstream
