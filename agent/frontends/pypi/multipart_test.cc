#include "agent/frontends/pypi/multipart.h"

#include <gtest/gtest.h>

#include <vector>

namespace buildcache::pypi {
namespace {

struct Part {
  PartHeader header;
  std::string data;
  bool ended = false;
};

// Parses body fed in pieces of `step` bytes; returns the first error (from Feed or Finish).
Status ParseAll(std::string_view boundary, std::string_view body, size_t step,
                std::vector<Part>* parts) {
  MultipartCallbacks cb;
  cb.on_part = [parts](const PartHeader& h) {
    parts->push_back({h, "", false});
    return Status::Ok();
  };
  cb.on_data = [parts](std::string_view d) {
    parts->back().data.append(d);
    return Status::Ok();
  };
  cb.on_part_end = [parts]() {
    parts->back().ended = true;
    return Status::Ok();
  };
  MultipartParser parser(std::string(boundary), cb);
  for (size_t i = 0; i < body.size(); i += step) {
    BC_RETURN_IF_ERROR(parser.Feed(body.substr(i, step)));
  }
  return parser.Finish();
}

// The body of a twine-like upload, with a file whose content contains near-boundaries.
std::string FileContent() {
  // Prefixes of the delimiter "\r\n--bound", and the boundary without its line break.
  std::string s = "PK\x03\x04 binary \r\n--boun";
  s += std::string("\0\r\n\r\n", 5);
  s += "x--bound-ary-ish\r\n-- tail\r\n--bou\r\n-\r";
  return s;
}

std::string Body() {
  return "preamble is ignored\r\n"
         "--bound\r\n"
         "Content-Disposition: form-data; name=\":action\"\r\n\r\n"
         "file_upload\r\n"
         "--bound\r\n"
         "Content-Disposition: form-data; name=\"empty\"\r\n\r\n"
         "\r\n"
         "--bound  \r\n"
         "content-disposition: form-data; name=\"content\"; filename=\"a;b \\\"q\\\".whl\"\r\n"
         "Content-Type: application/octet-stream\r\n\r\n" +
         FileContent() +
         "\r\n"
         "--bound--\r\n"
         "epilogue --bound\r\n";
}

TEST(MultipartTest, ParsesFieldsAndFilesFedInAnyPieces) {
  for (size_t step : {1u, 2u, 3u, 5u, 7u, 13u, 64u, 100000u}) {
    std::vector<Part> parts;
    Status s = ParseAll("bound", Body(), step, &parts);
    ASSERT_TRUE(s.ok()) << "step " << step << ": " << s.ToString();
    ASSERT_EQ(parts.size(), 3u) << "step " << step;
    EXPECT_EQ(parts[0].header.name, ":action");
    EXPECT_FALSE(parts[0].header.has_filename);
    EXPECT_EQ(parts[0].data, "file_upload");
    EXPECT_EQ(parts[1].header.name, "empty");
    EXPECT_EQ(parts[1].data, "");
    EXPECT_EQ(parts[2].header.name, "content");
    EXPECT_TRUE(parts[2].header.has_filename);
    EXPECT_EQ(parts[2].header.filename, "a;b \"q\".whl");
    EXPECT_EQ(parts[2].header.content_type, "application/octet-stream");
    EXPECT_EQ(parts[2].data, FileContent()) << "step " << step;
    for (const Part& p : parts) EXPECT_TRUE(p.ended);
  }
}

TEST(MultipartTest, ExtendedFilenameWins) {
  std::string body =
      "--b\r\nContent-Disposition: form-data; name=\"content\"; filename=\"x.whl\"; "
      "filename*=UTF-8''caf%C3%A9.whl\r\n\r\ndata\r\n--b--";
  std::vector<Part> parts;
  ASSERT_TRUE(ParseAll("b", body, 4, &parts).ok());
  EXPECT_EQ(parts[0].header.filename, "caf\xc3\xa9.whl");
}

TEST(MultipartTest, RejectsMalformedBodies) {
  std::vector<Part> parts;
  // Never closed.
  EXPECT_EQ(
      ParseAll("b", "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nvalue", 3, &parts)
          .code(),
      StatusCode::kInvalidArgument);
  // No boundary at all.
  EXPECT_FALSE(ParseAll("b", "just some bytes", 4, &parts).ok());
  // Empty body.
  EXPECT_FALSE(ParseAll("b", "", 4, &parts).ok());
  // A part without Content-Disposition.
  EXPECT_FALSE(ParseAll("b", "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--", 4, &parts).ok());
  // Not form-data.
  EXPECT_FALSE(ParseAll("b", "--b\r\nContent-Disposition: attachment; name=\"x\"\r\n\r\nx\r\n--b--",
                        4, &parts)
                   .ok());
  // Garbage after a boundary.
  EXPECT_FALSE(ParseAll("b",
                        "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nx\r\n--bX\r\n"
                        "Content-Disposition: form-data; name=\"y\"\r\n\r\ny\r\n--b--",
                        100, &parts)
                   .ok());
  // A header line without a colon.
  EXPECT_FALSE(ParseAll("b", "--b\r\nnonsense\r\n\r\nx\r\n--b--", 4, &parts).ok());
  // A header block that never ends is bounded.
  std::string huge =
      "--b\r\nContent-Disposition: form-data; name=\"x\"\r\nX-Pad: " + std::string(20000, 'p');
  EXPECT_FALSE(ParseAll("b", huge, 1000, &parts).ok());
}

TEST(MultipartTest, CallbackErrorsStopTheParse) {
  MultipartCallbacks cb;
  cb.on_part = [](const PartHeader&) { return InvalidArgument("no thanks"); };
  cb.on_data = [](std::string_view) { return Status::Ok(); };
  cb.on_part_end = [] { return Status::Ok(); };
  MultipartParser parser("b", cb);
  Status s = parser.Feed("--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nv\r\n--b--");
  EXPECT_EQ(s, InvalidArgument("no thanks"));
  EXPECT_FALSE(parser.Feed("more").ok());
  EXPECT_FALSE(parser.Finish().ok());
}

TEST(MultipartTest, BoundaryFromContentType) {
  EXPECT_EQ(*MultipartBoundary("multipart/form-data; boundary=abc123"), "abc123");
  EXPECT_EQ(*MultipartBoundary("Multipart/Form-Data;boundary=\"a b:c\"; charset=utf-8"), "a b:c");
  EXPECT_FALSE(MultipartBoundary("application/x-www-form-urlencoded").ok());
  EXPECT_FALSE(MultipartBoundary("multipart/form-data").ok());
  EXPECT_FALSE(MultipartBoundary("multipart/form-data; boundary=" + std::string(71, 'x')).ok());
  EXPECT_FALSE(MultipartBoundary("").ok());
}

}  // namespace
}  // namespace buildcache::pypi
