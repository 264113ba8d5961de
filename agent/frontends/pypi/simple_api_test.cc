#include "agent/frontends/pypi/simple_api.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace buildcache::pypi {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kBase = "https://idx.test/simple/demo/";
const std::string kSha(64, 'a');
const std::string kMetaSha(64, 'b');

TEST(SimpleApiTest, ParsesJsonPage) {
  std::string body = R"({
    "meta": {"api-version": "1.1"},
    "name": "Demo",
    "versions": ["1.0", "2.0"],
    "files": [
      {"filename": "demo-1.0.tar.gz", "url": "../../packages/demo-1.0.tar.gz",
       "hashes": {"sha256": ")" +
                     kSha + R"("}, "requires-python": ">=3.8",
       "yanked": "broken build", "size": 123, "upload-time": "2024-01-01T00:00:00.000000Z"},
      {"filename": "demo-2.0-py3-none-any.whl", "url": "https://cdn.test/demo-2.0-py3-none-any.whl",
       "hashes": {"SHA256": ")" +
                     std::string(64, 'C') + R"("},
       "core-metadata": {"sha256": ")" +
                     kMetaSha + R"("}, "yanked": false, "size": 45},
      {"filename": "demo-0.1.zip", "url": "x", "hashes": {}, "dist-info-metadata": true,
       "yanked": true, "requires-python": null},
      {"filename": "bad-url.whl", "url": "ftp://nope/x", "hashes": {}}
    ]})";
  auto page = ParseJsonPage(body, kBase);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  EXPECT_EQ(page->name, "Demo");
  EXPECT_EQ(page->api_version, "1.1");
  EXPECT_EQ(page->versions, (std::vector<std::string>{"1.0", "2.0"}));
  ASSERT_EQ(page->files.size(), 3u);
  const DistFile& a = page->files[0];
  EXPECT_EQ(a.url, "https://idx.test/packages/demo-1.0.tar.gz");
  EXPECT_EQ(a.hashes.at("sha256"), kSha);
  EXPECT_EQ(a.requires_python, ">=3.8");
  EXPECT_EQ(a.yanked, "broken build");
  EXPECT_EQ(a.size, 123u);
  EXPECT_EQ(a.upload_time, "2024-01-01T00:00:00.000000Z");
  EXPECT_FALSE(a.core_metadata);
  const DistFile& b = page->files[1];
  EXPECT_EQ(b.hashes.at("sha256"), std::string(64, 'c'));
  EXPECT_TRUE(b.core_metadata);
  EXPECT_EQ(b.core_metadata_hashes.at("sha256"), kMetaSha);
  EXPECT_FALSE(b.yanked.has_value());
  const DistFile& c = page->files[2];
  EXPECT_EQ(c.url, "https://idx.test/simple/demo/x");
  EXPECT_TRUE(c.core_metadata);
  EXPECT_TRUE(c.core_metadata_hashes.empty());
  EXPECT_EQ(c.yanked, "");
  EXPECT_EQ(c.requires_python, "");
}

TEST(SimpleApiTest, RejectsMalformedJson) {
  EXPECT_FALSE(ParseJsonPage("{", kBase).ok());
  EXPECT_FALSE(ParseJsonPage("[]", kBase).ok());
  EXPECT_FALSE(ParseJsonPage(R"({"name": "x"})", kBase).ok());
  EXPECT_FALSE(ParseJsonPage(R"({"meta": {"api-version": "2.0"}, "files": []})", kBase).ok());
  // Wrong types inside are skipped, not fatal.
  auto page = ParseJsonPage(R"({"files": [1, {"filename": 2, "url": "x"}]})", kBase);
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->files.empty());
}

TEST(SimpleApiTest, ParsesHtmlPage) {
  std::string body =
      R"(<!DOCTYPE html>
<html><head><meta name="pypi:repository-version" content="1.0"><title>Links for demo</title></head>
<body><h1>Links for demo</h1>
<!-- <a href="commented-out-1.0.tar.gz">no</a> -->
<A HREF="../../packages/demo-1.0.tar.gz#sha256=)" +
      kSha +
      R"(" data-requires-python="&gt;=3.8,&lt;4" data-yanked="">demo-1.0.tar.gz</A><br/>
<a href='demo-2.0-py3-none-any.whl#sha256=)" +
      kSha + R"(' data-dist-info-metadata="sha256=)" + kMetaSha +
      R"(" data-yanked="bad &quot;thing&quot; &#39;x&#x27; &amp; more">demo-2.0-py3-none-any.whl</a>
<a href="demo%2B1-3.0.tar.gz" data-core-metadata="true">demo+1-3.0.tar.gz</a>
<a>no href</a>
</body></html>)";
  auto page = ParseHtmlPage(body, kBase);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  ASSERT_EQ(page->files.size(), 3u);
  const DistFile& a = page->files[0];
  EXPECT_EQ(a.filename, "demo-1.0.tar.gz");
  EXPECT_EQ(a.url, "https://idx.test/packages/demo-1.0.tar.gz");
  EXPECT_EQ(a.hashes.at("sha256"), kSha);
  EXPECT_EQ(a.requires_python, ">=3.8,<4");
  EXPECT_EQ(a.yanked, "");
  const DistFile& b = page->files[1];
  EXPECT_EQ(b.url, "https://idx.test/simple/demo/demo-2.0-py3-none-any.whl");
  EXPECT_TRUE(b.core_metadata);
  EXPECT_EQ(b.core_metadata_hashes.at("sha256"), kMetaSha);
  EXPECT_EQ(b.yanked, "bad \"thing\" 'x' & more");
  const DistFile& c = page->files[2];
  EXPECT_EQ(c.filename, "demo+1-3.0.tar.gz");
  EXPECT_TRUE(c.core_metadata);
  EXPECT_TRUE(c.hashes.empty());
  EXPECT_FALSE(c.yanked.has_value());
}

TEST(SimpleApiTest, HtmlHonoursBaseHref) {
  auto page =
      ParseHtmlPage(R"(<base href="https://cdn.test/dl/"><a href="x-1.0.tar.gz">x</a>)", kBase);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->files.size(), 1u);
  EXPECT_EQ(page->files[0].url, "https://cdn.test/dl/x-1.0.tar.gz");
}

TEST(SimpleApiTest, ParseByContentType) {
  std::string json = R"({"meta":{"api-version":"1.0"},"name":"d","files":[]})";
  EXPECT_TRUE(ParseProjectPage(json, "application/vnd.pypi.simple.v1+json", kBase).ok());
  EXPECT_TRUE(ParseProjectPage(json, "application/json; charset=utf-8", kBase).ok());
  auto html = ParseProjectPage("<a href=\"a-1.tar.gz\">a</a>", "text/html", kBase);
  ASSERT_TRUE(html.ok());
  EXPECT_EQ(html->files.size(), 1u);
}

DistFile SampleFile() {
  DistFile f;
  f.filename = "demo-1.0-py3-none-any.whl";
  f.url = "../../files/demo/demo-1.0-py3-none-any.whl";
  f.hashes["sha256"] = kSha;
  f.requires_python = "<4,>=3.8 \"'&";
  f.yanked = "use <2.0>";
  f.core_metadata = true;
  f.core_metadata_hashes["sha256"] = kMetaSha;
  return f;
}

TEST(SimpleApiTest, RendersEscapedHtml) {
  ProjectPage page;
  page.name = "demo<x>";
  page.files.push_back(SampleFile());
  std::string html = RenderHtml(page);
  EXPECT_NE(html.find("<title>Links for demo&lt;x&gt;</title>"), std::string::npos);
  EXPECT_NE(html.find("href=\"../../files/demo/demo-1.0-py3-none-any.whl#sha256=" + kSha + "\""),
            std::string::npos)
      << html;
  EXPECT_NE(html.find("data-requires-python=\"&lt;4,&gt;=3.8 &quot;&#39;&amp;\""),
            std::string::npos)
      << html;
  EXPECT_NE(html.find("data-dist-info-metadata=\"sha256=" + kMetaSha + "\""), std::string::npos);
  EXPECT_NE(html.find("data-core-metadata=\"sha256=" + kMetaSha + "\""), std::string::npos);
  EXPECT_NE(html.find("data-yanked=\"use &lt;2.0&gt;\""), std::string::npos);
  EXPECT_NE(html.find("content=\"1.0\""), std::string::npos);

  // What we render, we parse back to the same data.
  auto back = ParseHtmlPage(html, "http://agent.test/pypi/simple/demo/");
  ASSERT_TRUE(back.ok());
  ASSERT_EQ(back->files.size(), 1u);
  DistFile expected = SampleFile();
  expected.url = "http://agent.test/pypi/files/demo/demo-1.0-py3-none-any.whl";
  EXPECT_EQ(back->files[0], expected);
}

TEST(SimpleApiTest, RendersJson) {
  ProjectPage page;
  page.name = "demo";
  page.versions = {"1.0"};
  page.files.push_back(SampleFile());
  DistFile plain;
  plain.filename = "demo-1.0.tar.gz";
  plain.url = "../../files/demo/demo-1.0.tar.gz";
  plain.hashes["sha256"] = kSha;
  page.files.push_back(plain);
  Json doc = Json::parse(RenderJson(page));
  EXPECT_EQ(doc["meta"]["api-version"], "1.0");  // not every file has a size
  EXPECT_FALSE(doc.contains("versions"));
  EXPECT_EQ(doc["name"], "demo");
  const Json& f = doc["files"][0];
  EXPECT_EQ(f["url"], "../../files/demo/demo-1.0-py3-none-any.whl");
  EXPECT_EQ(f["hashes"]["sha256"], kSha);
  EXPECT_EQ(f["requires-python"], "<4,>=3.8 \"'&");
  EXPECT_EQ(f["yanked"], "use <2.0>");
  EXPECT_EQ(f["core-metadata"]["sha256"], kMetaSha);
  EXPECT_EQ(f["dist-info-metadata"]["sha256"], kMetaSha);
  EXPECT_EQ(doc["files"][1]["yanked"], false);
  EXPECT_FALSE(doc["files"][1].contains("core-metadata"));

  page.files[0].size = 10;
  page.files[1].size = 20;
  page.files[1].yanked = "";
  doc = Json::parse(RenderJson(page));
  EXPECT_EQ(doc["meta"]["api-version"], "1.1");
  EXPECT_EQ(doc["versions"], Json::array({"1.0"}));
  EXPECT_EQ(doc["files"][1]["size"], 20);
  EXPECT_EQ(doc["files"][1]["yanked"], true);

  auto back = ParseJsonPage(RenderJson(page), "http://agent.test/pypi/simple/demo/");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->files[0].requires_python, SampleFile().requires_python);
  EXPECT_EQ(back->files[1].yanked, "");
}

TEST(SimpleApiTest, NegotiatesFormat) {
  const std::string json = "application/vnd.pypi.simple.v1+json";
  const std::string html1 = "application/vnd.pypi.simple.v1+html";
  EXPECT_EQ(NegotiateFormat(""), Format::kHtml);
  EXPECT_EQ(NegotiateFormat("*/*"), Format::kHtml);
  EXPECT_EQ(NegotiateFormat("text/html"), Format::kHtml);
  EXPECT_EQ(NegotiateFormat(json), Format::kJsonV1);
  EXPECT_EQ(NegotiateFormat(html1), Format::kHtmlV1);
  EXPECT_EQ(NegotiateFormat("application/vnd.pypi.simple.latest+json"), Format::kJsonV1);
  EXPECT_EQ(NegotiateFormat("application/vnd.pypi.simple.latest+html"), Format::kHtmlV1);
  // What pip sends.
  EXPECT_EQ(NegotiateFormat(json + ", " + html1 + "; q=0.1, text/html; q=0.01"), Format::kJsonV1);
  // q-values decide, whatever the order.
  EXPECT_EQ(NegotiateFormat("text/html;q=0.9, " + json + ";q=0.2"), Format::kHtml);
  EXPECT_EQ(NegotiateFormat("text/html;q=0.2, " + json), Format::kJsonV1);
  // Equal q: the more specific range, then the first listed.
  EXPECT_EQ(NegotiateFormat("*/*, " + json), Format::kJsonV1);
  EXPECT_EQ(NegotiateFormat(json + ", text/html"), Format::kJsonV1);
  EXPECT_EQ(NegotiateFormat("text/html, " + json), Format::kHtml);
  // q=0 excludes; the most specific range decides a candidate's q.
  EXPECT_EQ(NegotiateFormat("*/*, text/html;q=0"), Format::kHtmlV1);
  EXPECT_EQ(NegotiateFormat("application/*;q=0.5, " + html1 + ";q=0"), Format::kJsonV1);
  EXPECT_EQ(NegotiateFormat("TEXT/HTML ; Q=0.5 , " + json + " ; q=0.4"), Format::kHtml);
  // Nothing acceptable: the default.
  EXPECT_EQ(NegotiateFormat("application/json"), Format::kHtml);
  EXPECT_EQ(NegotiateFormat("garbage"), Format::kHtml);
  EXPECT_EQ(ContentTypeFor(Format::kJsonV1), json);
  EXPECT_EQ(ContentTypeFor(Format::kHtmlV1), html1);
}

}  // namespace
}  // namespace buildcache::pypi
