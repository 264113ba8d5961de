#include "agent/frontends/pypi/pypi_frontend.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "agent/frontends/goproxy/testing/test_zip.h"
#include "agent/frontends/pypi/testing/test_wheels.h"
#include "agent/store/memory_store.h"
#include "common/http/client.h"
#include "common/http/router.h"
#include "common/text/markup.h"

namespace buildcache::pypi {
namespace {

using Json = nlohmann::json;

std::string Sha(std::string_view data) { return store::Digest::Of(data).Hex(); }

const std::string kSdist = "sdist bytes of demo 1.0";
const std::string kWheel = "PK\x03\x04 wheel bytes of demo 2.0";
const std::string kMetadata = "Metadata-Version: 2.1\nName: demo\nVersion: 2.0\n";
const std::string kBadFile = "bytes that do not match the index";
const std::string kNoHashFile = "bytes without a hash";
const std::string kWheel5 = "PK\x03\x04 wheel bytes of demo 5.0";
const std::string kSdist7 = "sdist bytes of demo 7.0";

// A tiny simple index on loopback: project "demo" as PEP 691 JSON (or PEP 503 HTML when
// html_only), and its files. Counts the requests it gets.
class FixtureUpstream {
 public:
  FixtureUpstream() {
    auto server = http::Server::Start(
        {}, [this](http::Request& req, http::Response& resp) { Serve(req, resp); });
    EXPECT_TRUE(server.ok());
    server_ = std::move(server).value();
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }
  std::string simple_url() const { return url() + "/simple/"; }

  std::atomic<bool> html_only{false};
  // Adds demo-7.0.tar.gz to the project page (an upstream release).
  std::atomic<bool> with_release_7{false};
  std::atomic<int> page_requests{0};
  std::atomic<int> file_requests{0};
  std::string last_accept() {
    std::lock_guard lock(mu_);
    return last_accept_;
  }

 private:
  struct File {
    std::string name;
    std::string url;
    std::string body;
    std::string sha256;  // "" = none in the index
    std::string requires_python;
    std::optional<std::string> yanked;
    std::string metadata_sha256;  // "" = no metadata; "-" = metadata without a hash
  };

  std::vector<File> Files() const {
    std::vector<File> files = {
        {"demo-1.0.tar.gz", "../../packages/demo-1.0.tar.gz", kSdist, Sha(kSdist), ">=3.8,<4",
         std::nullopt, ""},
        {"demo-2.0-py3-none-any.whl", url() + "/packages/demo-2.0-py3-none-any.whl", kWheel,
         Sha(kWheel), "", "broken \"build\"", Sha(kMetadata)},
        {"demo-3.0.tar.gz", "/packages/demo-3.0.tar.gz", kBadFile, Sha("something else"), "",
         std::nullopt, ""},
        {"demo-4.0.tar.gz", "/packages/demo-4.0.tar.gz", kNoHashFile, "", "", std::nullopt, ""},
        {"demo-5.0-py3-none-any.whl", "/packages/demo-5.0-py3-none-any.whl", kWheel5, Sha(kWheel5),
         "", std::nullopt, "-"},
    };
    if (with_release_7) {
      files.push_back(
          {"demo-7.0.tar.gz", "/packages/demo-7.0.tar.gz", kSdist7, Sha(kSdist7), "", {}, ""});
    }
    return files;
  }

  void Serve(http::Request& req, http::Response& resp) {
    std::string_view path = req.path();
    if (path == "/simple/demo/") {
      ++page_requests;
      {
        std::lock_guard lock(mu_);
        last_accept_ = std::string(req.header("Accept"));
      }
      bool json = !html_only && req.header("Accept").find("v1+json") != std::string_view::npos;
      resp.SetStatus(200);
      resp.SetHeader("Content-Type", json ? "application/vnd.pypi.simple.v1+json" : "text/html");
      (void)resp.Send(json ? JsonPage() : HtmlPage());
      return;
    }
    if (path.starts_with("/simple/")) {
      ++page_requests;
      resp.SetStatus(404);
      (void)resp.Send("not found");
      return;
    }
    for (const File& f : Files()) {
      if (path == "/packages/" + f.name) {
        ++file_requests;
        resp.SetStatus(200);
        (void)resp.Send(f.body);
        return;
      }
      if (path == "/packages/" + f.name + ".metadata") {
        ++file_requests;
        resp.SetStatus(200);
        (void)resp.Send(kMetadata);
        return;
      }
    }
    resp.SetStatus(404);
    (void)resp.Send("not found");
  }

  std::string JsonPage() const {
    Json files = Json::array();
    for (const File& f : Files()) {
      Json jf = {{"filename", f.name}, {"url", f.url}, {"hashes", Json::object()}};
      if (!f.sha256.empty()) jf["hashes"]["sha256"] = f.sha256;
      if (!f.requires_python.empty()) jf["requires-python"] = f.requires_python;
      jf["yanked"] = f.yanked ? Json(*f.yanked) : Json(false);
      if (f.metadata_sha256 == "-") {
        jf["core-metadata"] = true;
      } else if (!f.metadata_sha256.empty()) {
        jf["core-metadata"] = {{"sha256", f.metadata_sha256}};
      }
      jf["size"] = f.body.size();
      files.push_back(jf);
    }
    Json doc = {{"meta", {{"api-version", "1.1"}}},
                {"name", "demo"},
                {"versions", {"1.0", "2.0", "3.0", "4.0", "5.0"}},
                {"files", files}};
    return doc.dump();
  }

  std::string HtmlPage() const {
    std::string out = "<html><body><h1>Links for demo</h1>\n";
    for (const File& f : Files()) {
      out += "<a href=\"" + f.url;
      if (!f.sha256.empty()) out += "#sha256=" + f.sha256;
      out += "\"";
      if (!f.requires_python.empty()) {
        out += " data-requires-python=\"" + text::EscapeMarkup(f.requires_python) + "\"";
      }
      if (f.yanked) out += " data-yanked=\"" + text::EscapeMarkup(*f.yanked) + "\"";
      if (f.metadata_sha256 == "-") {
        out += " data-dist-info-metadata=\"true\"";
      } else if (!f.metadata_sha256.empty()) {
        out += " data-dist-info-metadata=\"sha256=" + f.metadata_sha256 + "\"";
      }
      out += ">" + f.name + "</a><br/>\n";
    }
    return out + "</body></html>\n";
  }

  std::unique_ptr<http::Server> server_;
  std::mutex mu_;
  std::string last_accept_;
};

// A twine-style upload form.
struct Upload {
  std::map<std::string, std::string> fields = {
      {":action", "file_upload"}, {"protocol_version", "1"},   {"name", "demo"},
      {"version", "6.0"},         {"filetype", "bdist_wheel"}, {"pyversion", "cp311"}};
  std::string filename = "demo-6.0-cp311-cp311-linux_x86_64.whl";
  std::string content = "PK\x03\x04 a wheel built in the cluster";
  bool with_content = true;

  static constexpr std::string_view kBoundary = "f0rmB0undary";
  std::string ContentType() const {
    return "multipart/form-data; boundary=" + std::string(kBoundary);
  }
  std::string Body() const {
    std::string b;
    for (const auto& [k, v] : fields) {
      b += "--" + std::string(kBoundary) + "\r\nContent-Disposition: form-data; name=\"" + k +
           "\"\r\n\r\n" + v + "\r\n";
    }
    if (with_content) {
      b += "--" + std::string(kBoundary) +
           "\r\nContent-Disposition: form-data; name=\"content\"; filename=\"" + filename +
           "\"\r\nContent-Type: application/octet-stream\r\n\r\n" + content + "\r\n";
    }
    return b + "--" + std::string(kBoundary) + "--\r\n";
  }
};

class PypiFrontendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = std::make_unique<store::MemoryStore>();
    Start(upstream_.simple_url());
  }

  void Start(const std::string& upstream_url) {
    server_.reset();
    frontend_.reset();
    metadata_.reset();
    artifacts_.reset();
    upstream::FetcherOptions fetcher_options;
    fetcher_options.attempts = 1;
    fetcher_ = upstream::NewHttpFetcher(fetcher_options);
    artifacts_ =
        std::make_unique<upstream::ArtifactCache>(*store_, *fetcher_, upstream::UpstreamObserver{});
    metadata_ =
        std::make_unique<upstream::MetadataCache>(*store_, *fetcher_, upstream::UpstreamObserver{});
    PypiOptions options;
    options.upstream = upstream_url;
    options.metadata_ttl = metadata_ttl_;
    options.wheel_house = wheel_house_;
    options.builds = builds_;
    options.fetch.connect_timeout = std::chrono::seconds(2);
    options.fetch.read_timeout = std::chrono::seconds(5);
    frontend_ = std::make_unique<PypiFrontend>(*store_, *artifacts_, *metadata_, options);
    router_ = std::make_unique<http::Router>();
    frontend_->AddRoutes(*router_);
    auto server = http::Server::Start({}, router_->AsHandler());
    ASSERT_TRUE(server.ok());
    server_ = std::move(server).value();
    client_ = std::make_unique<http::Client>("127.0.0.1", server_->port());
  }

  void TearDown() override {
    server_.reset();
    client_.reset();
  }

  http::ClientResponse Get(std::string_view target, const http::HeaderList& headers = {}) {
    auto r = client_->Fetch("GET", target, headers);
    EXPECT_TRUE(r.ok()) << target << ": " << r.status().ToString();
    return r.ok() ? *r : http::ClientResponse{};
  }
  Json GetJson(std::string_view target) {
    auto r = Get(target, {{"Accept", "application/vnd.pypi.simple.v1+json"}});
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("Content-Type"), "application/vnd.pypi.simple.v1+json");
    return Json::parse(r.body, nullptr, false);
  }
  http::ClientResponse Post(const Upload& u) {
    auto r = client_->Fetch(
        "POST", "/pypi/",
        {{"Content-Type", u.ContentType()}, {"Authorization", "Basic X190b2tlbl9fOng="}}, u.Body());
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : http::ClientResponse{};
  }
  static const Json* FileNamed(const Json& page, std::string_view name) {
    for (const Json& f : page["files"]) {
      if (f["filename"] == name) return &f;
    }
    return nullptr;
  }

  FixtureUpstream upstream_;
  std::chrono::seconds metadata_ttl_{600};
  bool wheel_house_ = true;
  std::optional<WheelBuildOptions> builds_;
  std::unique_ptr<store::MemoryStore> store_;
  std::unique_ptr<upstream::Fetcher> fetcher_;
  std::unique_ptr<upstream::ArtifactCache> artifacts_;
  std::unique_ptr<upstream::MetadataCache> metadata_;
  std::unique_ptr<PypiFrontend> frontend_;
  std::unique_ptr<http::Router> router_;
  std::unique_ptr<http::Server> server_;
  std::unique_ptr<http::Client> client_;
};

TEST_F(PypiFrontendTest, JsonPageIsRewrittenToRelativeUrlsAndCached) {
  auto first = Get("/pypi/simple/demo/", {{"Accept", "application/vnd.pypi.simple.v1+json"}});
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(first.header("X-Buildcache-Source"), "upstream");
  EXPECT_EQ(first.header("Vary"), "Accept");
  EXPECT_NE(upstream_.last_accept().find("application/vnd.pypi.simple.v1+json"), std::string::npos);
  Json page = Json::parse(first.body);
  EXPECT_EQ(page["name"], "demo");
  EXPECT_EQ(page["meta"]["api-version"], "1.1");
  EXPECT_EQ(page["versions"].size(), 5u);
  ASSERT_EQ(page["files"].size(), 5u);
  const Json* sdist = FileNamed(page, "demo-1.0.tar.gz");
  ASSERT_NE(sdist, nullptr);
  EXPECT_EQ((*sdist)["url"], "../../files/demo/demo-1.0.tar.gz");
  EXPECT_EQ((*sdist)["hashes"]["sha256"], Sha(kSdist));
  EXPECT_EQ((*sdist)["requires-python"], ">=3.8,<4");
  EXPECT_EQ((*sdist)["yanked"], false);
  EXPECT_EQ((*sdist)["size"], kSdist.size());
  const Json* wheel = FileNamed(page, "demo-2.0-py3-none-any.whl");
  ASSERT_NE(wheel, nullptr);
  EXPECT_EQ((*wheel)["url"], "../../files/demo/demo-2.0-py3-none-any.whl");
  EXPECT_EQ((*wheel)["yanked"], "broken \"build\"");
  EXPECT_EQ((*wheel)["core-metadata"]["sha256"], Sha(kMetadata));
  EXPECT_EQ((*wheel)["dist-info-metadata"]["sha256"], Sha(kMetadata));
  // Metadata without a hash cannot be verified, so it is not advertised.
  EXPECT_FALSE(FileNamed(page, "demo-5.0-py3-none-any.whl")->contains("core-metadata"));
  EXPECT_EQ(first.body.find("127.0.0.1"), std::string::npos) << "no host names in pages";

  auto second = Get("/pypi/simple/demo/", {{"Accept", "application/vnd.pypi.simple.v1+json"}});
  EXPECT_EQ(second.status, 200);
  EXPECT_EQ(second.header("X-Buildcache-Source"), "local");
  EXPECT_EQ(second.body, first.body);
  EXPECT_EQ(upstream_.page_requests, 1);
}

TEST_F(PypiFrontendTest, HtmlByDefaultWithEscapedAttributes) {
  auto r = Get("/pypi/simple/demo/");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("Content-Type"), "text/html; charset=utf-8");
  EXPECT_NE(r.body.find("<a href=\"../../files/demo/demo-1.0.tar.gz#sha256=" + Sha(kSdist) +
                        "\" data-requires-python=\"&gt;=3.8,&lt;4\">demo-1.0.tar.gz</a>"),
            std::string::npos)
      << r.body;
  EXPECT_NE(r.body.find("data-core-metadata=\"sha256=" + Sha(kMetadata) + "\""), std::string::npos);
  EXPECT_NE(r.body.find("data-dist-info-metadata=\"sha256=" + Sha(kMetadata) + "\""),
            std::string::npos);
  EXPECT_NE(r.body.find("data-yanked=\"broken &quot;build&quot;\""), std::string::npos);
  EXPECT_EQ(r.body.find("127.0.0.1"), std::string::npos);

  auto v1 = Get("/pypi/simple/demo/", {{"Accept", "application/vnd.pypi.simple.v1+html"}});
  EXPECT_EQ(v1.header("Content-Type"), "application/vnd.pypi.simple.v1+html");
  EXPECT_EQ(v1.body, r.body);
  auto pip = Get("/pypi/simple/demo/", {{"Accept",
                                         "application/vnd.pypi.simple.v1+json, "
                                         "application/vnd.pypi.simple.v1+html; q=0.1, "
                                         "text/html; q=0.01"}});
  EXPECT_EQ(pip.header("Content-Type"), "application/vnd.pypi.simple.v1+json");
  auto prefer_html = Get("/pypi/simple/demo/", {{"Accept",
                                                 "application/vnd.pypi.simple.v1+json;q=0.5, "
                                                 "text/html"}});
  EXPECT_EQ(prefer_html.header("Content-Type"), "text/html; charset=utf-8");
}

TEST_F(PypiFrontendTest, HtmlOnlyUpstreamIsParsed) {
  upstream_.html_only = true;
  Json page = GetJson("/pypi/simple/demo/");
  ASSERT_EQ(page["files"].size(), 5u);
  EXPECT_EQ(page["meta"]["api-version"], "1.0");  // no sizes or versions in HTML
  const Json* sdist = FileNamed(page, "demo-1.0.tar.gz");
  EXPECT_EQ((*sdist)["requires-python"], ">=3.8,<4");
  EXPECT_EQ((*sdist)["hashes"]["sha256"], Sha(kSdist));
  const Json* wheel = FileNamed(page, "demo-2.0-py3-none-any.whl");
  EXPECT_EQ((*wheel)["yanked"], "broken \"build\"");
  EXPECT_EQ((*wheel)["core-metadata"]["sha256"], Sha(kMetadata));
  // And the files resolve through the HTML page's (relative and absolute) URLs.
  auto file = Get("/pypi/files/demo/demo-1.0.tar.gz");
  EXPECT_EQ(file.status, 200);
  EXPECT_EQ(file.body, kSdist);
  EXPECT_EQ(Get("/pypi/files/demo/demo-2.0-py3-none-any.whl").body, kWheel);
}

TEST_F(PypiFrontendTest, NonNormalizedNamesRedirect) {
  for (auto [from, to] :
       {std::pair{"/pypi/simple/Demo/", "/pypi/simple/demo/"},
        std::pair{"/pypi/simple/demo", "/pypi/simple/demo/"},
        std::pair{"/pypi/simple/Zope.Interface", "/pypi/simple/zope-interface/"},
        std::pair{"/pypi/simple/typing__extensions/", "/pypi/simple/typing-extensions/"},
        std::pair{"/pypi/simple", "/pypi/simple/"}}) {
    auto r = Get(from);
    EXPECT_EQ(r.status, 301) << from;
    EXPECT_EQ(r.header("Location"), to) << from;
  }
  EXPECT_EQ(upstream_.page_requests, 0);
}

TEST_F(PypiFrontendTest, BadNamesAreRejectedWithoutAskingUpstream) {
  for (const char* target :
       {"/pypi/simple/..%2f/", "/pypi/simple/a%20b/", "/pypi/simple/-x/", "/pypi/simple/%zz/",
        "/pypi/simple/caf%C3%A9/", "/pypi/files/demo/..%2fetc%2fpasswd", "/pypi/files/demo/.hidden",
        "/pypi/files/de%2fmo/x.whl", "/pypi/files/..%2f/x.whl", "/pypi/files/demo/a%3Fb.whl",
        "/pypi/wheelhouse/demo/%2e%2e", "/pypi/files/demo/%"}) {
    EXPECT_EQ(Get(target).status, 400) << target;
  }
  for (const char* target : {"/pypi/files/demo/a/b.whl", "/pypi/files/demo", "/pypi/nothing",
                             "/pypi/simple/demo/extra", "/pypi/simple/"}) {
    EXPECT_EQ(Get(target).status, 404) << target;
  }
  EXPECT_EQ(upstream_.page_requests, 0);
  EXPECT_EQ(upstream_.file_requests, 0);
}

TEST_F(PypiFrontendTest, FilesAreVerifiedFetchedOnceAndServedLocally) {
  auto first = Get("/pypi/files/demo/demo-1.0.tar.gz");
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(first.body, kSdist);
  EXPECT_EQ(first.header("X-Buildcache-Source"), "upstream");
  auto second = Get("/pypi/files/demo/demo-1.0.tar.gz");
  EXPECT_EQ(second.status, 200);
  EXPECT_EQ(second.body, kSdist);
  EXPECT_EQ(second.header("X-Buildcache-Source"), "local");
  EXPECT_EQ(upstream_.file_requests, 1);
  EXPECT_TRUE(store_->HasDigest(*store::Digest::FromHex(Sha(kSdist))));

  auto head = client_->Fetch("HEAD", "/pypi/files/demo/demo-1.0.tar.gz");
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("Content-Length"), std::to_string(kSdist.size()));
}

TEST_F(PypiFrontendTest, CoreMetadataIsServedVerified) {
  auto r = Get("/pypi/files/demo/demo-2.0-py3-none-any.whl.metadata");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, kMetadata);
  // Unverifiable metadata is not served (it is not advertised either).
  EXPECT_EQ(Get("/pypi/files/demo/demo-5.0-py3-none-any.whl.metadata").status, 404);
  EXPECT_EQ(Get("/pypi/files/demo/demo-1.0.tar.gz.metadata").status, 404);
}

TEST_F(PypiFrontendTest, HashMismatchIsNotServedOrStored) {
  auto r = client_->Fetch("GET", "/pypi/files/demo/demo-3.0.tar.gz");
  // Either a 502 before the body started or an aborted transfer: never the complete wrong bytes.
  if (r.ok()) {
    EXPECT_EQ(r->status, 502) << r->body;
  }
  EXPECT_FALSE(store_->HasDigest(*store::Digest::FromHex(Sha(kBadFile))));
  EXPECT_FALSE(store_->Stat("pypi/files/demo/demo-3.0.tar.gz").ok());
}

TEST_F(PypiFrontendTest, FilesWithoutAHashAreRefused) {
  auto r = Get("/pypi/files/demo/demo-4.0.tar.gz");
  EXPECT_EQ(r.status, 502);
  EXPECT_NE(r.body.find("cannot be verified"), std::string::npos) << r.body;
  EXPECT_EQ(upstream_.file_requests, 0);
}

TEST_F(PypiFrontendTest, UnknownFilesAndProjectsAre404) {
  EXPECT_EQ(Get("/pypi/files/demo/demo-9.9.tar.gz").status, 404);
  EXPECT_EQ(Get("/pypi/simple/nosuchproject/").status, 404);
  EXPECT_EQ(Get("/pypi/files/nosuchproject/nosuchproject-1.0.tar.gz").status, 404);
  EXPECT_EQ(upstream_.file_requests, 0);
}

TEST_F(PypiFrontendTest, UpstreamDownWithNothingCachedIs502) {
  std::string dead;
  {
    FixtureUpstream gone;
    dead = gone.simple_url();
  }
  Start(dead);
  EXPECT_EQ(Get("/pypi/simple/demo/").status, 502);
  EXPECT_EQ(Get("/pypi/files/demo/demo-1.0.tar.gz").status, 502);
}

TEST_F(PypiFrontendTest, ConditionalRequestsAndHead) {
  auto r = Get("/pypi/simple/demo/");
  ASSERT_EQ(r.status, 200);
  std::string etag(r.header("ETag"));
  ASSERT_FALSE(etag.empty());
  EXPECT_EQ(Get("/pypi/simple/demo/", {{"If-None-Match", etag}}).status, 304);
  auto json = Get("/pypi/simple/demo/",
                  {{"Accept", "application/vnd.pypi.simple.v1+json"}, {"If-None-Match", etag}});
  EXPECT_EQ(json.status, 200) << "another representation has another tag";
  auto head = client_->Fetch("HEAD", "/pypi/simple/demo/");
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->status, 200);
  EXPECT_TRUE(head->body.empty());
  auto post = client_->Fetch("POST", "/pypi/simple/demo/", {}, "x");
  ASSERT_TRUE(post.ok());
  EXPECT_EQ(post->status, 405);
  auto put = client_->Fetch("PUT", "/pypi/", {}, "x");
  ASSERT_TRUE(put.ok());
  EXPECT_EQ(put->status, 405);
}

TEST_F(PypiFrontendTest, UploadedWheelIsMergedIntoBothFormats) {
  Upload u;
  u.fields["sha256_digest"] = Sha(u.content);
  u.fields["requires_python"] = ">=3.11";
  auto r = Post(u);
  ASSERT_EQ(r.status, 200) << r.body;

  Json page = GetJson("/pypi/simple/demo/");
  ASSERT_EQ(page["files"].size(), 6u);
  const Json* w = FileNamed(page, u.filename);
  ASSERT_NE(w, nullptr);
  EXPECT_EQ((*w)["url"], "../../wheelhouse/demo/" + u.filename);
  EXPECT_EQ((*w)["hashes"]["sha256"], Sha(u.content));
  EXPECT_EQ((*w)["requires-python"], ">=3.11");
  EXPECT_EQ((*w)["size"], u.content.size());
  EXPECT_EQ(page["meta"]["api-version"], "1.1");
  EXPECT_NE(std::find(page["versions"].begin(), page["versions"].end(), "6.0"),
            page["versions"].end());

  auto html = Get("/pypi/simple/demo/");
  EXPECT_NE(html.body.find("<a href=\"../../wheelhouse/demo/" + u.filename +
                           "#sha256=" + Sha(u.content) + "\" data-requires-python=\"&gt;=3.11\">"),
            std::string::npos)
      << html.body;

  auto file = Get("/pypi/wheelhouse/demo/" + u.filename);
  ASSERT_EQ(file.status, 200);
  EXPECT_EQ(file.body, u.content);
  EXPECT_EQ(file.header("X-Buildcache-Source"), "local");
  EXPECT_EQ(Get("/pypi/wheelhouse/demo/demo-7.0-py3-none-any.whl").status, 404);
}

TEST_F(PypiFrontendTest, UploadIsIdempotentAndKeepsTheFirstWheel) {
  Upload u;
  EXPECT_EQ(Post(u).status, 200);
  EXPECT_EQ(Post(u).status, 200);
  // A different wheel under a listed name (an attacker was first, or a rebuild) is a conflict the
  // uploader must see: 409, and the first copy stays.
  Upload other = u;
  other.content += " rebuilt";
  auto r = Post(other);
  EXPECT_EQ(r.status, 409);
  EXPECT_NE(r.body.find("File already exists"), std::string::npos);
  EXPECT_EQ(Get("/pypi/wheelhouse/demo/" + u.filename).body, u.content);
  EXPECT_EQ(FileNamed(GetJson("/pypi/simple/demo/"), u.filename)->at("hashes")["sha256"],
            Sha(u.content));
}

// The attack: a pod uploads a wheel for a release the upstream has, with a build tag (or another
// spelling of the same version) so that pip would prefer it under an exact pin. The upload is
// refused and nothing is stored; the upstream's files are what clients see.
TEST_F(PypiFrontendTest, UploadForAnUpstreamVersionIsRefusedAndStoresNothing) {
  GetJson("/pypi/simple/demo/");  // the page is cached: only uploads would add blobs
  const uint64_t blobs = store_->Stats().blobs;
  for (std::string version : {"1.0", "1.0.0", "01.0", "1.0+evil", "v1.0"}) {
    Upload u;
    u.fields["version"] = version;
    u.filename = "demo-" + version + "-1-py3-none-any.whl";
    u.content = "PK\x03\x04 evil " + version;
    auto r = Post(u);
    EXPECT_EQ(r.status, 403) << version << ": " << r.body;
    EXPECT_NE(r.body.find("is on the upstream index"), std::string::npos) << r.body;
  }
  EXPECT_EQ(store_->Stats().blobs, blobs);
  EXPECT_TRUE(frontend_->wheel_house().Files("demo").empty());
  auto html = Get("/pypi/simple/demo/");
  EXPECT_EQ(html.body.find("evil"), std::string::npos);
  EXPECT_EQ(html.body.find("wheelhouse"), std::string::npos);
}

// The upstream publishes a version after a pod uploaded a wheel for it: from then on the
// upstream's release is listed and the uploaded wheel is not.
TEST_F(PypiFrontendTest, UploadedWheelIsUnlistedOnceTheUpstreamHasItsVersion) {
  metadata_ttl_ = std::chrono::seconds(0);  // every request revalidates upstream
  Start(upstream_.simple_url());
  Upload u;
  u.fields["version"] = "7.0";
  u.filename = "demo-7.0-1-py3-none-any.whl";
  ASSERT_EQ(Post(u).status, 200);
  Upload other;  // a version the upstream still lacks stays listed
  ASSERT_EQ(Post(other).status, 200);
  EXPECT_NE(FileNamed(GetJson("/pypi/simple/demo/"), u.filename), nullptr);

  upstream_.with_release_7 = true;
  for (bool json : {true, false}) {
    auto r = Get("/pypi/simple/demo/",
                 {{"Accept", json ? "application/vnd.pypi.simple.v1+json" : "text/html"}});
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.body.find(u.filename), std::string::npos) << r.body;
    EXPECT_NE(r.body.find("demo-7.0.tar.gz"), std::string::npos);
    EXPECT_NE(r.body.find("../../wheelhouse/demo/" + other.filename), std::string::npos);
  }
  EXPECT_EQ(Get("/pypi/wheelhouse/demo/" + u.filename).status, 404);  // nor served by its URL
  EXPECT_EQ(Get("/pypi/wheelhouse/demo/" + other.filename).status, 200);
}

TEST_F(PypiFrontendTest, WheelHouseOffRefusesUploadsAndListsNothing) {
  Upload before;  // stored while the wheel house was on
  ASSERT_EQ(Post(before).status, 200);
  wheel_house_ = false;
  Start(upstream_.simple_url());
  const uint64_t blobs = store_->Stats().blobs;
  Upload u;
  u.filename = "demo-7.0-py3-none-any.whl";
  auto r = Post(u);
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_NE(r.body.find("wheel house is disabled"), std::string::npos) << r.body;
  EXPECT_EQ(store_->Stats().blobs, blobs);
  Json page = GetJson("/pypi/simple/demo/");
  EXPECT_EQ(page["files"].size(), 5u);
  EXPECT_EQ(FileNamed(page, before.filename), nullptr);
  EXPECT_EQ(Get("/pypi/wheelhouse/demo/" + before.filename).status, 404);
}

TEST_F(PypiFrontendTest, MalformedUploadsAre400AndStoreNothing) {
  GetJson("/pypi/simple/demo/");  // uploads consult the upstream page: cache it first
  const uint64_t blobs = store_->Stats().blobs;
  std::vector<std::pair<std::string, Upload>> cases;
  {
    Upload u;
    u.fields["sha256_digest"] = std::string(64, '0');
    cases.emplace_back("wrong digest", u);
  }
  {
    Upload u;
    u.fields["sha256_digest"] = "abc";
    cases.emplace_back("malformed digest", u);
  }
  {
    Upload u;
    u.filename = "demo-6.0.tar.gz";
    u.fields["filetype"] = "sdist";
    cases.emplace_back("sdist", u);
  }
  {
    Upload u;
    u.filename = "../demo-6.0-py3-none-any.whl";
    cases.emplace_back("path in file name", u);
  }
  {
    Upload u;
    u.fields["name"] = "other";
    cases.emplace_back("name mismatch", u);
  }
  {
    Upload u;
    u.fields.erase("name");
    cases.emplace_back("no name", u);
  }
  {
    Upload u;
    u.fields.erase("version");
    cases.emplace_back("no version", u);
  }
  {
    Upload u;
    u.fields[":action"] = "submit";
    cases.emplace_back("register action", u);
  }
  {
    Upload u;
    u.with_content = false;
    cases.emplace_back("no content", u);
  }
  {
    Upload u;
    u.content = "not a zip";
    cases.emplace_back("not a zip", u);
  }
  for (const auto& [what, u] : cases) {
    auto r = Post(u);
    EXPECT_EQ(r.status, 400) << what << ": " << r.body;
  }

  Upload u;
  std::string body = u.Body();
  auto truncated = client_->Fetch("POST", "/pypi/", {{"Content-Type", u.ContentType()}},
                                  body.substr(0, body.size() - 10));
  ASSERT_TRUE(truncated.ok());
  EXPECT_EQ(truncated->status, 400);
  auto not_multipart =
      client_->Fetch("POST", "/pypi/legacy/", {{"Content-Type", "application/octet-stream"}}, body);
  ASSERT_TRUE(not_multipart.ok());
  EXPECT_EQ(not_multipart->status, 400);

  EXPECT_EQ(store_->Stats().blobs, blobs);
  EXPECT_TRUE(frontend_->wheel_house().Files("demo").empty());
}

TEST_F(PypiFrontendTest, WheelHouseOnlyProjectAndRestart) {
  Upload u;
  u.fields["name"] = "Private_Pkg";
  u.filename = "private_pkg-1.0-py3-none-any.whl";
  ASSERT_EQ(Post(u).status, 200);

  // The upstream does not know the project; the wheel house alone makes the page.
  Json page = GetJson("/pypi/simple/private-pkg/");
  ASSERT_EQ(page["files"].size(), 1u);
  EXPECT_EQ(page["files"][0]["filename"], u.filename);
  EXPECT_EQ(page["versions"], Json::array({"1.0"}));

  // A new front end on the same store (an agent restart) still lists it.
  Start(upstream_.simple_url());
  page = GetJson("/pypi/simple/private-pkg/");
  ASSERT_EQ(page["files"].size(), 1u);
  EXPECT_EQ(Get("/pypi/wheelhouse/private-pkg/" + u.filename).body, u.content);
}

TEST_F(PypiFrontendTest, UpstreamFileOfTheSameNameWins) {
  Upload u;
  u.filename = "demo-2.0-py3-none-any.whl";
  u.fields["version"] = "2.0";
  ASSERT_EQ(Post(u).status, 403);  // a version the upstream has: refused (and never listed)
  Json page = GetJson("/pypi/simple/demo/");
  EXPECT_EQ(page["files"].size(), 5u);
  const Json* w = FileNamed(page, u.filename);
  EXPECT_EQ((*w)["url"], "../../files/demo/demo-2.0-py3-none-any.whl");
  EXPECT_EQ((*w)["hashes"]["sha256"], Sha(kWheel));
}

// Pages are parsed and rendered once per upstream document: what was derived from an older
// document must never be served once the upstream page changed.
TEST_F(PypiFrontendTest, ChangedUpstreamPageIsParsedAndRenderedAgain) {
  metadata_ttl_ = std::chrono::seconds(0);  // every request revalidates upstream
  Start(upstream_.simple_url());
  Json before = GetJson("/pypi/simple/demo/");
  ASSERT_EQ(before["files"].size(), 5u);
  auto html_before = Get("/pypi/simple/demo/");
  EXPECT_EQ(Get("/pypi/files/demo/demo-7.0.tar.gz").status, 404);

  upstream_.with_release_7 = true;
  Json after = GetJson("/pypi/simple/demo/");
  EXPECT_EQ(after["files"].size(), 6u);
  EXPECT_NE(FileNamed(after, "demo-7.0.tar.gz"), nullptr);
  auto html_after = Get("/pypi/simple/demo/");
  EXPECT_NE(html_after.body.find("demo-7.0.tar.gz"), std::string::npos) << html_after.body;
  EXPECT_NE(html_after.header("ETag"), html_before.header("ETag"));
  auto file = Get("/pypi/files/demo/demo-7.0.tar.gz");
  ASSERT_EQ(file.status, 200) << file.body;
  EXPECT_EQ(file.body, kSdist7);
}

// A page rendered before an upload must not hide the uploaded wheel afterwards.
TEST_F(PypiFrontendTest, UploadAfterAServedPageChangesThePage) {
  Json before = GetJson("/pypi/simple/demo/");
  ASSERT_EQ(before["files"].size(), 5u);
  const std::string etag_before(Get("/pypi/simple/demo/").header("ETag"));
  Upload u;
  ASSERT_EQ(Post(u).status, 200);
  Json after = GetJson("/pypi/simple/demo/");
  EXPECT_EQ(after["files"].size(), 6u);
  EXPECT_NE(FileNamed(after, u.filename), nullptr);
  auto html = Get("/pypi/simple/demo/");
  EXPECT_NE(html.header("ETag"), etag_before);
  EXPECT_NE(html.body.find(u.filename), std::string::npos);
  // The old ETag no longer matches: a client revalidating gets the new page, not a 304.
  auto revalidated = Get("/pypi/simple/demo/", {{"If-None-Match", etag_before}});
  EXPECT_EQ(revalidated.status, 200);
}

// ---- wheels the agent built -------------------------------------------------------------------

// A built wheel of demo `version` with its provenance, as the wheel builder stores it.
WheelEntry CommitBuiltWheel(WheelHouse& house, const std::string& version,
                            const std::string& sdist_sha256) {
  auto pending = house.Begin("demo-" + version + "-cp311-cp311-linux_x86_64.whl");
  EXPECT_TRUE(pending.ok());
  EXPECT_TRUE((*pending)->Write("PK\x03\x04 built " + version).ok());
  WheelEntry provenance;
  provenance.built_from = sdist_sha256;
  provenance.builder = "py311";
  provenance.tools = "CPython 3.11.2";
  auto entry = house.CommitBuilt(std::move(*pending), provenance);
  EXPECT_TRUE(entry.ok()) << entry.status().ToString();
  return entry.ok() ? *entry : WheelEntry{};
}

TEST_F(PypiFrontendTest, BuiltWheelIsListedBesideItsUpstreamSdistWhileTheSdistIsListed) {
  metadata_ttl_ = std::chrono::seconds(0);
  Start(upstream_.simple_url());
  // Built from the upstream's demo 1.0 sdist: listed for 1.0, which the upstream has.
  WheelEntry built = CommitBuiltWheel(frontend_->wheel_house(), "1.0", Sha(kSdist));
  // Built from the demo 7.0 sdist, which the upstream does not list (yet).
  WheelEntry early = CommitBuiltWheel(frontend_->wheel_house(), "7.0", Sha(kSdist7));
  Json page = GetJson("/pypi/simple/demo/");
  ASSERT_NE(FileNamed(page, built.filename), nullptr) << page.dump();
  EXPECT_EQ((*FileNamed(page, built.filename))["hashes"]["sha256"], built.sha256);
  EXPECT_EQ(FileNamed(page, early.filename), nullptr);
  EXPECT_EQ(Get("/pypi/wheelhouse/demo/" + built.filename).status, 200);
  EXPECT_EQ(Get("/pypi/wheelhouse/demo/" + early.filename).status, 404);
  // Once the upstream lists that sdist, its wheel is listed and served too.
  upstream_.with_release_7 = true;
  EXPECT_NE(FileNamed(GetJson("/pypi/simple/demo/"), early.filename), nullptr);
  EXPECT_EQ(Get("/pypi/wheelhouse/demo/" + early.filename).status, 200);
  // Provenance is kept in the wheel-house index.
  auto listed = frontend_->wheel_house().Find("demo", built.filename);
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->built_from, Sha(kSdist));
  EXPECT_EQ(listed->builder, "py311");
}

// A fake builder for the demo 1.0 sdist (cp311 linux x86_64 glibc 2.36) in a temporary
// directory: "python -m pip wheel ... -w OUT SDIST" copies a prepared wheel and counts its runs.
class FakeBuilder {
 public:
  FakeBuilder() {
    char tmpl[] = "/tmp/pypi_frontend_build.XXXXXX";
    dir = mkdtemp(tmpl);
    wheel = dir / "demo-1.0-cp311-cp311-linux_x86_64.whl";
    std::string dist = "demo-1.0.dist-info/";
    std::ofstream(wheel, std::ios::binary)
        << goproxy::testing::BuildZip({{dist + "METADATA", "Name: demo\nVersion: 1.0\n", true},
                                       {dist + "WHEEL", "Tag: cp311-cp311-linux_x86_64\n", true}});
    std::ofstream(dir / "python") << "#!/bin/sh\necho run >> " << (dir / "runs").string()
                                  << "\nwhile [ $# -gt 2 ]; do shift; done\ncp " << wheel.string()
                                  << " \"$1/\"\n";
    std::filesystem::permissions(dir / "python", std::filesystem::perms::owner_all);
    BuilderSpec spec;
    spec.name = "py311";
    spec.python = (dir / "python").string();
    spec.platform = testing::Cp311Glibc236();
    options.builders = {spec};
    options.work_dir = dir / "work";
    options.sandbox = Sandbox::kNone;
  }
  ~FakeBuilder() { std::filesystem::remove_all(dir); }
  int Runs() const {
    std::ifstream runs(dir / "runs");
    int n = 0;
    for (std::string line; std::getline(runs, line);) ++n;
    return n;
  }

  std::filesystem::path dir;
  std::filesystem::path wheel;
  WheelBuildOptions options;
};

const std::string kPipUserAgent =
    R"(pip/24.0 {"cpu":"x86_64","distro":{"libc":{"lib":"glibc","version":"2.36"}},)"
    R"("implementation":{"name":"CPython","version":"3.11.7"},"python":"3.11.7",)"
    R"("system":{"name":"Linux","release":"6.1"}})";

TEST_F(PypiFrontendTest, SdistDownloadByAKnownPlatformStartsOneBuild) {
  FakeBuilder builder;
  builds_ = builder.options;
  Start(upstream_.simple_url());

  // A client that says nothing about its platform starts no build.
  ASSERT_EQ(Get("/pypi/files/demo/demo-1.0.tar.gz").status, 200);
  // A pip client does; the second download joins or finds the build.
  for (int i = 0; i < 2; ++i) {
    auto r = Get("/pypi/files/demo/demo-1.0.tar.gz", {{"User-Agent", kPipUserAgent}});
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.body, kSdist);  // the client still gets the sdist it chose
  }
  Json builds_page = Json::parse(Get("/pypi/builds/").body, nullptr, false);
  ASSERT_EQ(builds_page["builds"].size(), 1u) << builds_page.dump();
  ASSERT_TRUE(frontend_->wheel_builder()->WaitIdle(std::chrono::seconds(60)));
  const std::string built = builder.wheel.filename().string();
  EXPECT_NE(FileNamed(GetJson("/pypi/simple/demo/"), built), nullptr);
  std::string id = Json::parse(Get("/pypi/builds/").body)["builds"][0]["id"];
  auto log = Get("/pypi/builds/" + id + "/log");
  EXPECT_NE(log.body.find("[buildcache] stored " + built), std::string::npos) << log.body;
  // The wheel fits: the next pip download of the sdist starts nothing.
  ASSERT_EQ(Get("/pypi/files/demo/demo-1.0.tar.gz", {{"User-Agent", kPipUserAgent}}).status, 200);
  // The build decision is taken after the response is sent: stopping the server waits for that
  // handler, and only then is a build it might have started wrongly visible to WaitIdle.
  server_.reset();
  ASSERT_TRUE(frontend_->wheel_builder()->WaitIdle(std::chrono::seconds(60)));
  EXPECT_EQ(builder.Runs(), 1);
  frontend_.reset();  // joins the build workers before their directory goes
}

// A peer offering a build names the sdist by digest; the owner builds only what its own index
// lists with that digest. Forged digests, unlisted files and malformed names build nothing and
// fetch nothing.
TEST_F(PypiFrontendTest, PeerBuildOfAnUnlistedDigestIsRefusedAndBuildsNothing) {
  FakeBuilder builder;
  builds_ = builder.options;
  Start(upstream_.simple_url());
  auto forged = frontend_->BuildForPeer("demo", "demo-1.0.tar.gz", Sha("forged"), kPipUserAgent);
  EXPECT_EQ(forged.status().code(), StatusCode::kNotFound) << forged.status().ToString();
  auto unlisted = frontend_->BuildForPeer("demo", "demo-9.9.tar.gz", Sha(kSdist), kPipUserAgent);
  EXPECT_EQ(unlisted.status().code(), StatusCode::kNotFound);
  // The index lists a wrong digest for demo 3.0: naming the bytes it really has does not help.
  auto wrong = frontend_->BuildForPeer("demo", "demo-3.0.tar.gz", Sha(kBadFile), kPipUserAgent);
  EXPECT_EQ(wrong.status().code(), StatusCode::kNotFound);
  for (auto [project, file] :
       {std::pair{"Demo", "demo-1.0.tar.gz"}, std::pair{"demo", "../demo-1.0.tar.gz"},
        std::pair{"demo", "demo-2.0-py3-none-any.whl"}, std::pair{"demo", "other-1.0.tar.gz"}}) {
    EXPECT_EQ(frontend_->BuildForPeer(project, file, Sha(kSdist), kPipUserAgent).status().code(),
              StatusCode::kInvalidArgument)
        << project << " " << file;
  }
  EXPECT_EQ(
      frontend_->BuildForPeer("demo", "demo-1.0.tar.gz", "xyz", kPipUserAgent).status().code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(
      frontend_->BuildForPeer("demo", "demo-1.0.tar.gz", Sha(kSdist), "curl/8").status().code(),
      StatusCode::kInvalidArgument);
  EXPECT_TRUE(frontend_->wheel_builder()->Builds().empty());
  EXPECT_EQ(upstream_.file_requests.load(), 0);
  EXPECT_FALSE(store_->Stat("pypi/files/demo/demo-1.0.tar.gz").ok());
  frontend_.reset();
}

TEST_F(PypiFrontendTest, PeerBuildOfAListedSdistFetchesItBuildsOnceThenAnswersBuilt) {
  FakeBuilder builder;
  builds_ = builder.options;
  Start(upstream_.simple_url());
  auto first = frontend_->BuildForPeer("demo", "demo-1.0.tar.gz", Sha(kSdist), kPipUserAgent);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->decision, "started");
  EXPECT_EQ(first->id.size(), 16u);
  ASSERT_TRUE(store_->Stat("pypi/files/demo/demo-1.0.tar.gz").ok());  // fetched and verified
  ASSERT_TRUE(frontend_->wheel_builder()->WaitIdle(std::chrono::seconds(60)));
  auto again = frontend_->BuildForPeer("demo", "demo-1.0.tar.gz", Sha(kSdist), kPipUserAgent);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->decision, "built");
  EXPECT_EQ(again->wheel, builder.wheel.filename().string());
  EXPECT_EQ(builder.Runs(), 1);
  frontend_.reset();
}

// Building wheels needs no open uploads: with builds and the wheel house off, a built wheel is
// listed and served, and an upload is still refused (a tenant cannot publish beside the builds).
TEST_F(PypiFrontendTest, WithBuildsAndTheWheelHouseOffBuiltWheelsAreListedAndUploadsRefused) {
  FakeBuilder builder;
  builds_ = builder.options;
  wheel_house_ = false;
  Start(upstream_.simple_url());
  auto started = frontend_->BuildForPeer("demo", "demo-1.0.tar.gz", Sha(kSdist), kPipUserAgent);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  EXPECT_EQ(started->decision, "started");
  ASSERT_TRUE(frontend_->wheel_builder()->WaitIdle(std::chrono::seconds(60)));
  const std::string built = builder.wheel.filename().string();
  Json page = GetJson("/pypi/simple/demo/");
  EXPECT_NE(FileNamed(page, built), nullptr) << page.dump();
  EXPECT_EQ(Get("/pypi/wheelhouse/demo/" + built).status, 200);
  const uint64_t blobs = store_->Stats().blobs;
  Upload u;
  u.filename = "demo-7.0-py3-none-any.whl";
  auto r = Post(u);
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(store_->Stats().blobs, blobs);
  EXPECT_EQ(FileNamed(GetJson("/pypi/simple/demo/"), u.filename), nullptr);
  frontend_.reset();
}

// With an owner elsewhere, an sdist download offers the build to it and builds nothing here;
// when the owner cannot be asked, or has no builder for the platform, this agent builds.
TEST_F(PypiFrontendTest, OfferedBuildRunsAtTheOwnerAndHereOnlyWhenTheOwnerCannot) {
  FakeBuilder builder;
  builds_ = builder.options;
  std::mutex mu;
  std::vector<std::string> offered;
  Result<OwnerAnswer> answer = OwnerAnswer{.owner = "10.0.0.2:8081", .decision = "started"};
  auto start = [&] {
    server_.reset();
    frontend_.reset();
    PypiOptions options;
    options.upstream = upstream_.simple_url();
    options.builds = builds_;
    options.offer_build = [&](const SdistRef& sdist, const std::string& user_agent) {
      std::lock_guard lock(mu);
      offered.push_back(sdist.sha256 + " " + user_agent);
      return answer;
    };
    frontend_ = std::make_unique<PypiFrontend>(*store_, *artifacts_, *metadata_, options);
    router_ = std::make_unique<http::Router>();
    frontend_->AddRoutes(*router_);
    server_ = std::move(http::Server::Start({}, router_->AsHandler())).value();
    client_ = std::make_unique<http::Client>("127.0.0.1", server_->port());
  };
  start();
  ASSERT_EQ(Get("/pypi/files/demo/demo-1.0.tar.gz", {{"User-Agent", kPipUserAgent}}).status, 200);
  server_.reset();  // the handler that schedules has returned
  ASSERT_TRUE(frontend_->build_scheduler()->WaitIdle(std::chrono::seconds(60)));
  {
    std::lock_guard lock(mu);
    ASSERT_EQ(offered.size(), 1u);
    EXPECT_EQ(offered[0], Sha(kSdist) + " " + kPipUserAgent);
  }
  EXPECT_TRUE(frontend_->wheel_builder()->Builds().empty());

  for (Result<OwnerAnswer> fallback :
       {Result<OwnerAnswer>(Unavailable("owner down")),
        Result<OwnerAnswer>(OwnerAnswer{.owner = "10.0.0.2:8081", .decision = "no_builder"})}) {
    answer = fallback;
    start();
    // Forget the wheel built in the previous round.
    (void)store_->Delete(frontend_->wheel_house().IndexKey("demo"));
    (void)store_->Delete(
        frontend_->wheel_house().FileKey("demo", builder.wheel.filename().string()));
    ASSERT_EQ(Get("/pypi/files/demo/demo-1.0.tar.gz", {{"User-Agent", kPipUserAgent}}).status, 200);
    server_.reset();
    ASSERT_TRUE(frontend_->build_scheduler()->WaitIdle(std::chrono::seconds(60)));
    ASSERT_TRUE(frontend_->wheel_builder()->WaitIdle(std::chrono::seconds(60)));
    EXPECT_EQ(frontend_->wheel_builder()->Builds().size(), 1u);
  }
  EXPECT_EQ(builder.Runs(), 2);
  frontend_.reset();
}

}  // namespace
}  // namespace buildcache::pypi
