#include "agent/frontends/npm/packument_stream.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace buildcache::npm {
namespace {

using Json = nlohmann::json;

const char* const kUrl = "http://upstream.test:4873/@scope%2fdemo";
const std::string kBase = "http://127.0.0.1:9/npm/";

PackageName Name(const char* name) { return ParsePackageName(name).value(); }

Json Version(const std::string& tarball, const std::string& integrity = "sha512-AAAA") {
  return {{"name", "@scope/demo"},
          {"dist", {{"tarball", tarball}, {"integrity", integrity}, {"shasum", "ab"}}},
          {"dependencies", {{"x", "^1"}}}};
}

// A packument exercising every rule: relative URLs, a query, a version without dist, a scalar
// version, a clash of file names (left out), an unservable file name (left out), escapes.
std::string Sample() {
  return R"({ "name" : "@scope/demo", "dist-tags": {"latest": "2.0.0"},
    "description": "mentions \"versions\" and http://upstream.test:4873/x/-/x-1.tgz \u00e9",
    "versions": {
      "1.0.0": )" +
         Version("http://upstream.test:4873/@scope/demo/-/demo-1.0.0.tgz").dump(2) + R"(,
      "2.0.0": )" +
         Version("/@scope/demo/-/demo-2.0.0.tgz", "sha512-BBBB").dump() + R"( ,
      "3.0.0": )" +
         Version("../files/demo-3.0.0.tgz?token=abc").dump() + R"(,
      "4.0.0": {"name": "@scope/demo", "dist": {"shasum": "cd"}},
      "5.0.0": null,
      "6.0.0": )" +
         Version("/other/-/demo-1.0.0.tgz").dump() + R"(,
      "7.0.0": )" +
         Version("/@scope/demo/-/.hidden.tgz").dump() + R"(,
      "8.0.0": {"dist": {"tarball": "/@scope/demo/-/demo-8.0.0.tgz", "arr": [], "o": {}},
                "n": [1, -2.5e3, true, false, null, [[]]]},
      "9.0.0": {"d\u0069st": {"tarball": "/@scope/demo/-/demo-9.0.0.tgz"}, "x": 0.5},
      "10.0.0": {"dist": {"tarball": "/@scope/demo/-/old.tgz", "deps": {"tarball": 1},
                          "tarball": "/@scope/demo/-/demo-10.0.0.tgz", "integrity": "sha1-x"}}
    },
    "time": {"1.0.0": "2020-01-01"}, "readme": "# demo"
  })";
}

// Renders by feeding `text` in pieces of `piece` bytes.
Result<std::string> Render(const std::string& text, size_t piece, TarballIndex* tarballs = nullptr,
                           size_t* dropped = nullptr) {
  PackumentTemplate out;
  TemplateSink sink(&out);
  PackumentRewriter rewriter(upstream::ParseUrl(kUrl).value(), Name("@scope/demo"), &sink);
  for (size_t at = 0; at < text.size(); at += piece) {
    BC_RETURN_IF_ERROR(rewriter.Feed(std::string_view(text).substr(at, piece)));
  }
  BC_RETURN_IF_ERROR(rewriter.Finish());
  if (tarballs) *tarballs = rewriter.tarballs();
  if (dropped) *dropped = rewriter.dropped();
  std::string body;
  size_t at = 0;
  for (size_t offset : out.bases) {
    body += out.text.substr(at, offset - at) + kBase;
    at = offset;
  }
  body += out.text.substr(at);
  EXPECT_EQ(body.size(), out.Length(kBase.size()));
  return body;
}

TEST(PackumentRewriterTest, GivesTheSameDocumentAsAFullParseInPiecesOfAnySize) {
  const std::string text = Sample();
  auto whole = ReadPackument(text, kUrl, Name("@scope/demo"), kBase);
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  for (size_t piece : {size_t{1}, size_t{2}, size_t{7}, size_t{64}, text.size()}) {
    TarballIndex tarballs;
    size_t dropped = 0;
    auto streamed = Render(text, piece, &tarballs, &dropped);
    ASSERT_TRUE(streamed.ok()) << piece << ": " << streamed.status().ToString();
    EXPECT_EQ(Json::parse(*streamed), Json::parse(whole->body)) << piece;
    EXPECT_EQ(dropped, whole->dropped);
    ASSERT_EQ(tarballs.size(), whole->tarballs.size());
    for (const auto& [file, dist] : whole->tarballs) {
      ASSERT_TRUE(tarballs.contains(file)) << file;
      EXPECT_EQ(tarballs[file].url, dist.url);
      EXPECT_EQ(tarballs[file].integrity, dist.integrity);
    }
  }
  EXPECT_EQ(whole->dropped, 2u);
}

TEST(PackumentRewriterTest, TextOutsideTarballUrlsIsPassedOnAsSent) {
  auto out = Render(Sample(), 5);
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(out->starts_with(R"({ "name" : "@scope/demo", "dist-tags": {"latest": "2.0.0"},)"));
  EXPECT_TRUE(out->ends_with(R"("time": {"1.0.0": "2020-01-01"}, "readme": "# demo"
  })"));
  EXPECT_NE(out->find(R"(\"versions\" and http://upstream.test:4873/x/-/x-1.tgz \u00e9)"),
            std::string::npos);
}

TEST(PackumentRewriterTest, IndexOnlyModeRendersNothing) {
  PackumentRewriter rewriter(upstream::ParseUrl(kUrl).value(), Name("@scope/demo"), nullptr);
  ASSERT_TRUE(rewriter.Feed(Sample()).ok());
  ASSERT_TRUE(rewriter.Finish().ok());
  EXPECT_EQ(rewriter.tarballs().size(), 6u);
}

TEST(PackumentRewriterTest, MalformedOrAmbiguousDocumentsAreRefused) {
  const std::string v = Version("/@scope/demo/-/demo-1.0.0.tgz").dump();
  for (const std::string& bad : std::vector<std::string>{
           std::string("[]"),
           std::string("\"x\""),
           std::string("{\"a\": 1"),
           std::string("{\"a\" 1}"),
           std::string("{\"a\": 1,}"),
           std::string("{\"a\": [1,]}"),
           std::string("{\"a\": 1} x"),
           std::string("{\"a\": 01}"),
           std::string("{\"a\": tru}"),
           std::string("{\"a\": 1.}"),
           std::string("{\"a\": \"\x01\"}"),
           std::string("{\"a\": {]}"),
           std::string("{\"versions\": {}, \"versions\": {}}"),
           std::string("{\"vers\\u0069ons\": {}}"),
           "{\"versions\": {\"1.0.0\": " + v + ", \"1.0.0\": " + v + "}}",
           std::string("{\"versions\": {\"1.0.0\": {\"dist\": nope}}}"),
           "{\"a\": " + std::string(100, '[') + std::string(100, ']') + "}",
       }) {
    EXPECT_FALSE(Render(bad, 3).ok()) << bad;
    EXPECT_FALSE(Render(bad, bad.size()).ok()) << bad;
  }
}

}  // namespace
}  // namespace buildcache::npm
