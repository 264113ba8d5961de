#include "common/log/log.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace buildcache::log {
namespace {

std::string Hex(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0xf]);
  }
  return out;
}

// Captures log output in a temporary file for the lifetime of the object.
class CapturedLog {
 public:
  CapturedLog() {
    char tmpl[] = "/tmp/log_test_XXXXXX";
    fd_ = mkstemp(tmpl);
    path_ = tmpl;
    SetOutputFd(fd_);
  }
  ~CapturedLog() {
    SetOutputFd(2);
    close(fd_);
    unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }
  std::string Contents() const {
    std::ifstream in(path_, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  int fd_ = -1;
  std::string path_;
};

// Parses every line of the file with Python's strict JSON parser and prints, per line, the hex of
// the UTF-8 encoding of field "v" (or "-" when absent). Returns the printed lines; fails the test
// if Python rejects any line.
std::vector<std::string> DecodeWithPython(const std::string& path) {
  std::string out_path = path + ".out";
  std::string cmd =
      "python3 -c '\n"
      "import json, sys\n"
      "for raw in open(sys.argv[1], \"rb\").read().split(b\"\\n\")[:-1]:\n"
      "    text = raw.decode(\"utf-8\")\n"  // raises if the line itself is not UTF-8
      "    obj = json.loads(text)\n"
      "    assert isinstance(obj, dict), obj\n"
      "    assert set([\"ts\", \"level\", \"msg\"]) <= set(obj), obj\n"
      "    v = obj.get(\"v\")\n"
      "    print(\"-\" if v is None else (v.encode(\"utf-8\").hex() if isinstance(v, str) else "
      "repr(v)))\n"
      "' " +
      path + " > " + out_path;
  int rc = std::system(cmd.c_str());
  EXPECT_EQ(rc, 0) << "python3 rejected the log output:\n" << cmd;
  std::ifstream in(out_path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
  }
  unlink(out_path.c_str());
  return lines;
}

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override { SetLevel(Level::kDebug); }
  void TearDown() override { SetLevel(Level::kInfo); }
};

TEST_F(LogTest, LineHasTimestampLevelMessageAndFieldsInOrder) {
  std::string line = Format(Level::kWarn, "blob evicted",
                            {{"digest", "ab12"}, {"bytes", 123}, {"ok", true}, {"ratio", 0.5}});
  std::regex re(
      R"(^\{"ts":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z","level":"warn","msg":"blob evicted",)"
      R"("digest":"ab12","bytes":123,"ok":true,"ratio":0\.5\}$)");
  EXPECT_TRUE(std::regex_match(line, re)) << line;
}

TEST_F(LogTest, NumbersAreWrittenBareAndNonFiniteAsStrings) {
  std::string line = Format(Level::kInfo, "m",
                            {{"i", -5},
                             {"u", std::numeric_limits<uint64_t>::max()},
                             {"d", 1e21},
                             {"small", 0.1},
                             {"nan", std::numeric_limits<double>::quiet_NaN()},
                             {"inf", std::numeric_limits<double>::infinity()},
                             {"b", false}});
  EXPECT_NE(line.find(R"("i":-5,"u":18446744073709551615,"d":1e+21,"small":0.1,)"
                      R"("nan":"NaN","inf":"+Inf","b":false})"),
            std::string::npos)
      << line;
}

TEST_F(LogTest, ControlCharactersAndInvalidUtf8AreEscaped) {
  std::string out;
  AppendJsonString(&out, std::string_view("a\"b\\c\n\r\t\x01\x7f\xff\xc3(\xe2\x80\xa8z\0", 18));
  EXPECT_EQ(out, R"("a\"b\\c\n\r\t\u0001\u007f\u00ff\u00c3(\u2028z\u0000")");
  out.clear();
  AppendJsonString(&out, "h\xc3\xa9llo \xf0\x9f\x98\x80");  // valid UTF-8 passes through
  EXPECT_EQ(out, "\"h\xc3\xa9llo \xf0\x9f\x98\x80\"");
}

TEST_F(LogTest, RejectsOverlongSurrogateAndOutOfRangeSequences) {
  std::string out;
  // Overlong '/', a UTF-16 surrogate, a code point above U+10FFFF, and a truncated sequence.
  AppendJsonString(&out, "\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|\xe2\x82");
  EXPECT_EQ(out, R"("\u00c0\u00af|\u00ed\u00a0\u0080|\u00f4\u0090\u0080\u0080|\u00e2\u0082")");
}

TEST_F(LogTest, HostileFieldValuesStillParseAsJson) {
  CapturedLog captured;
  const std::vector<std::string> valid = {
      "",
      "plain",
      "quote\" backslash\\ slash/",
      "newline\nreturn\r tab\t formfeed\f backspace\b",
      std::string("nul\0byte", 8),
      "\x1b[31mred\x1b[0m",
      "}\",\"level\":\"error\",\"injected\":\"",
      "\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80",
      "\xe2\x80\xa8\xe2\x80\xa9",
      "\x7f",
  };
  const std::vector<std::string> invalid = {
      "\xff\xfe", "\xc0\x80", "\xed\xa0\x80", "\xf8\x88\x80\x80\x80", "trunc\xe2\x82",
  };
  for (const auto& v : valid) {
    Info("hostile", {{"v", v}, {"k\"ey\n", v}});
  }
  for (const auto& v : invalid) {
    Info("hostile", {{"v", v}, {v, "as key"}});
  }
  Info(std::string_view("msg\n\"\xff", 6));

  std::vector<std::string> decoded = DecodeWithPython(captured.path());
  ASSERT_EQ(decoded.size(), valid.size() + invalid.size() + 1);
  for (size_t i = 0; i < valid.size(); ++i) {
    EXPECT_EQ(decoded[i], Hex(valid[i])) << "value " << i << " did not round-trip";
  }
}

TEST_F(LogTest, MessagesBelowTheLevelAreDropped) {
  CapturedLog captured;
  SetLevel(Level::kWarn);
  EXPECT_FALSE(Enabled(Level::kInfo));
  EXPECT_TRUE(Enabled(Level::kError));
  Debug("debug line");
  Info("info line");
  Warn("warn line");
  Error("error line");
  Write(Level::kInfo, "direct info line");
  std::string out = captured.Contents();
  EXPECT_EQ(out.find("debug line"), std::string::npos);
  EXPECT_EQ(out.find("info line"), std::string::npos);
  EXPECT_NE(out.find(R"("level":"warn","msg":"warn line")"), std::string::npos);
  EXPECT_NE(out.find(R"("level":"error","msg":"error line")"), std::string::npos);
  EXPECT_EQ(GetLevel(), Level::kWarn);
}

TEST_F(LogTest, ParsesLevelNamesCaseInsensitively) {
  Level level = Level::kInfo;
  EXPECT_TRUE(ParseLevel("DEBUG", &level));
  EXPECT_EQ(level, Level::kDebug);
  EXPECT_TRUE(ParseLevel("Warning", &level));
  EXPECT_EQ(level, Level::kWarn);
  EXPECT_TRUE(ParseLevel("error", &level));
  EXPECT_EQ(level, Level::kError);
  EXPECT_TRUE(ParseLevel("info", &level));
  EXPECT_EQ(level, Level::kInfo);
  EXPECT_FALSE(ParseLevel("verbose", &level));
  EXPECT_FALSE(ParseLevel("", &level));
  EXPECT_FALSE(ParseLevel("info ", &level));
  EXPECT_EQ(level, Level::kInfo);
  EXPECT_EQ(LevelName(Level::kWarn), "warn");
}

TEST_F(LogTest, ConcurrentWritersNeverInterleaveLines) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  SetOutputFd(fds[1]);
  constexpr int kThreads = 8;
  constexpr int kLines = 500;
  // Longer than PIPE_BUF, so only the logger's own serialisation keeps lines whole.
  const std::string payload(6000, 'x');
  std::string collected;
  std::thread reader([&] {
    char buf[65536];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof(buf))) > 0) {
      collected.append(buf, n);
    }
  });
  std::vector<std::thread> writers;
  writers.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < kLines; ++i) {
        Info("concurrent", {{"thread", t}, {"i", i}, {"p", payload}});
      }
    });
  }
  for (auto& w : writers) {
    w.join();
  }
  SetOutputFd(2);
  close(fds[1]);
  reader.join();
  close(fds[0]);

  std::istringstream in(collected);
  int count = 0;
  const std::string tail = ",\"p\":\"" + payload + "\"}";
  std::regex head(R"(^\{"ts":"[^"]+","level":"info","msg":"concurrent","thread":\d,"i":\d+$)");
  for (std::string line; std::getline(in, line); ++count) {
    ASSERT_GT(line.size(), tail.size());
    ASSERT_EQ(line.substr(line.size() - tail.size()), tail);
    std::string prefix = line.substr(0, line.size() - tail.size());
    ASSERT_TRUE(std::regex_match(prefix, head)) << prefix;
  }
  EXPECT_EQ(count, kThreads * kLines);
}

}  // namespace
}  // namespace buildcache::log
