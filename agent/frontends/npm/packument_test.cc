#include "agent/frontends/npm/packument.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

namespace buildcache::npm {
namespace {

using Json = nlohmann::json;

const char* const kUrl = "http://upstream.test:4873/@scope%2fdemo";

PackageName Name(const char* name) { return ParsePackageName(name).value(); }

Json Version(const std::string& tarball, const std::string& integrity = "sha512-AAAA") {
  return {{"name", "@scope/demo"},
          {"dist", {{"tarball", tarball}, {"integrity", integrity}, {"shasum", "ab"}}},
          {"dependencies", {{"x", "^1"}}}};
}

TEST(NegotiateFormTest, FollowsNpmAcceptHeaders) {
  EXPECT_EQ(NegotiateForm(""), Form::kFull);
  EXPECT_EQ(NegotiateForm("*/*"), Form::kFull);
  EXPECT_EQ(NegotiateForm("application/json"), Form::kFull);
  EXPECT_EQ(NegotiateForm("application/vnd.npm.install-v1+json"), Form::kAbbreviated);
  EXPECT_EQ(NegotiateForm("application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, "
                          "*/*"),
            Form::kAbbreviated);
  EXPECT_EQ(NegotiateForm("Application/Vnd.Npm.Install-V1+Json"), Form::kAbbreviated);
  EXPECT_EQ(NegotiateForm("application/vnd.npm.install-v1+json;q=0.5, application/json"),
            Form::kFull);
  EXPECT_EQ(NegotiateForm("application/vnd.npm.install-v1+json;q=0"), Form::kFull);
  EXPECT_EQ(NegotiateForm("application/vnd.npm.install-v1+json;q=oops"), Form::kFull);
}

TEST(ReadPackumentTest, TarballUrlsAreRewrittenByParsing) {
  Json doc = {{"name", "@scope/demo"},
              {"dist-tags", {{"latest", "2.0.0"}}},
              {"description", "mentions http://upstream.test:4873/@scope/demo/-/demo-1.0.0.tgz"},
              {"versions",
               {{"1.0.0", Version("http://upstream.test:4873/@scope/demo/-/demo-1.0.0.tgz")},
                {"2.0.0", Version("/@scope/demo/-/demo-2.0.0.tgz", "sha512-BBBB")},
                {"3.0.0", Version("../files/demo-3.0.0.tgz?token=abc")}}}};
  auto p =
      ReadPackument(doc.dump(), kUrl, Name("@scope/demo"), std::string("http://127.0.0.1:9/npm/"));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  Json out = Json::parse(p->body);
  EXPECT_EQ(out["versions"]["1.0.0"]["dist"]["tarball"],
            "http://127.0.0.1:9/npm/@scope/demo/-/demo-1.0.0.tgz");
  EXPECT_EQ(out["versions"]["2.0.0"]["dist"]["tarball"],
            "http://127.0.0.1:9/npm/@scope/demo/-/demo-2.0.0.tgz");
  EXPECT_EQ(out["versions"]["3.0.0"]["dist"]["tarball"],
            "http://127.0.0.1:9/npm/@scope/demo/-/demo-3.0.0.tgz");
  // Only dist.tarball changes; text that merely looks like a URL stays.
  EXPECT_EQ(out["description"], doc["description"]);
  EXPECT_EQ(out["versions"]["1.0.0"]["dist"]["integrity"], "sha512-AAAA");
  EXPECT_EQ(out["versions"]["1.0.0"]["dependencies"], doc["versions"]["1.0.0"]["dependencies"]);
  EXPECT_EQ(out["dist-tags"], doc["dist-tags"]);

  ASSERT_EQ(p->tarballs.size(), 3u);
  EXPECT_EQ(p->tarballs.at("demo-1.0.0.tgz").url,
            "http://upstream.test:4873/@scope/demo/-/demo-1.0.0.tgz");
  EXPECT_EQ(p->tarballs.at("demo-2.0.0.tgz").url,
            "http://upstream.test:4873/@scope/demo/-/demo-2.0.0.tgz");
  EXPECT_EQ(p->tarballs.at("demo-2.0.0.tgz").integrity, "sha512-BBBB");
  EXPECT_EQ(p->tarballs.at("demo-3.0.0.tgz").url,
            "http://upstream.test:4873/files/demo-3.0.0.tgz?token=abc");
  EXPECT_EQ(p->tarballs.at("demo-1.0.0.tgz").shasum, "ab");
}

TEST(ReadPackumentTest, UnservableVersionsAreLeftOut) {
  Json doc = {{"name", "demo"},
              {"versions",
               {{"1.0.0", Version("http://upstream.test/demo/-/demo-1.0.0.tgz")},
                {"1.1.0", Version("ftp://upstream.test/demo/-/demo-1.1.0.tgz")},
                {"1.2.0", Version("http://upstream.test/demo/-/bad%20name.tgz")},
                {"1.3.0", Version("http://upstream.test/other/-/demo-1.0.0.tgz")},
                {"1.4.0", {{"name", "demo"}, {"dist", {{"shasum", "ab"}}}}}}}};
  auto p = ReadPackument(doc.dump(), "http://upstream.test/demo", Name("demo"),
                         std::string("http://agent/npm/"));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  Json out = Json::parse(p->body);
  EXPECT_TRUE(out["versions"].contains("1.0.0"));
  EXPECT_FALSE(out["versions"].contains("1.1.0"));  // not http(s)
  EXPECT_FALSE(out["versions"].contains("1.2.0"));  // file name the agent does not serve
  EXPECT_FALSE(out["versions"].contains("1.3.0"));  // the same file name, another URL
  EXPECT_TRUE(out["versions"].contains("1.4.0"));   // no tarball at all: kept as it is
  EXPECT_EQ(p->dropped, 3u);
  EXPECT_EQ(p->versions, 2u);
  EXPECT_EQ(p->tarballs.size(), 1u);
  EXPECT_EQ(out["versions"]["1.0.0"]["dist"]["tarball"], "http://agent/npm/demo/-/demo-1.0.0.tgz");
}

TEST(ReadPackumentTest, IndexOnlyDoesNotSerialize) {
  Json doc = {{"versions", {{"1.0.0", Version("http://u.test/demo/-/demo-1.0.0.tgz")}}}};
  auto p = ReadPackument(doc.dump(), "http://u.test/demo", Name("demo"), std::nullopt);
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->body.empty());
  EXPECT_EQ(p->tarballs.count("demo-1.0.0.tgz"), 1u);
}

TEST(ReadPackumentTest, UnpublishedPackageWithoutVersionsIsServed) {
  auto p = ReadPackument(R"({"name":"gone","time":{"unpublished":{"time":"2020-01-01"}}})",
                         "http://u.test/gone", Name("gone"), std::string("http://a/npm/"));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(Json::parse(p->body)["name"], "gone");
  EXPECT_TRUE(p->tarballs.empty());
}

TEST(ReadPackumentTest, MalformedDocumentsAreRejected) {
  const std::optional<std::string> base = std::string("http://a/npm/");
  for (const std::string& body :
       {std::string("not json"), std::string("[1,2]"), std::string("\"s\""), std::string("{"),
        std::string(100000, '[') + std::string(100000, ']'),
        "{\"a\":" + std::string(70, '[') + std::string(70, ']') + "}"}) {
    EXPECT_FALSE(ReadPackument(body, "http://u.test/x", Name("x"), base).ok()) << body.size();
  }
  // Brackets inside strings do not count as nesting.
  EXPECT_TRUE(ReadPackument("{\"readme\":\"" + std::string(1000, '[') + "\\\"\"}",
                            "http://u.test/x", Name("x"), base)
                  .ok());
}

}  // namespace
}  // namespace buildcache::npm
