#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gocacheprog/agent_client.h"
#include "gocacheprog/cache_program.h"
#include "gocacheprog/protocol.h"
#include "gocacheprog/sha256.h"
#include "gocacheprog/token_file.h"

namespace buildcache::gocacheprog {
namespace {

TEST(GoCacheProgSha256, KnownVectors) {
  EXPECT_EQ(Hex(Sha256::Of("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Hex(Sha256::Of("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Hex(Sha256::Of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 h;
  std::string million(1000000, 'a');
  for (size_t i = 0; i < million.size(); i += 777) {
    h.Update(std::string_view(million).substr(i, 777));
  }
  EXPECT_EQ(Hex(h.Finish()), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(GoCacheProgProtocol, Base64RoundTripsAndRejectsGarbage) {
  for (std::string s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    auto back = Base64Decode(Base64Encode(s));
    ASSERT_TRUE(back.ok()) << s;
    EXPECT_EQ(*back, s);
  }
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_FALSE(Base64Decode("Zm9").ok());
  EXPECT_FALSE(Base64Decode("Zm=v").ok());
  EXPECT_FALSE(Base64Decode("Zm9v!A==").ok());
}

TEST(GoCacheProgProtocol, ParsesTheGoCommandsRequests) {
  std::string action(32, '\x01');
  std::string output(32, '\xfe');
  auto req = ParseRequest("{\"ID\":7,\"Command\":\"put\",\"ActionID\":\"" + Base64Encode(action) +
                          "\",\"OutputID\":\"" + Base64Encode(output) +
                          "\",\"BodySize\":12,\"Extra\":{\"a\":[1,2.5,null,true]}}");
  ASSERT_TRUE(req.ok()) << req.status().ToString();
  EXPECT_EQ(req->id, 7);
  EXPECT_EQ(req->command, "put");
  EXPECT_EQ(req->action_id, action);
  EXPECT_EQ(req->output_id, output);
  EXPECT_EQ(req->body_size, 12);

  EXPECT_FALSE(ParseRequest("{\"ID\":1,").ok());
  EXPECT_FALSE(ParseRequest("{\"ID\":\"x\"}").ok());
  EXPECT_FALSE(ParseRequest("{\"ID\":1,\"BodySize\":-5}").ok());
  EXPECT_FALSE(ParseRequest("{\"ID\":1} trailing").ok());
  EXPECT_FALSE(ParseRequest(std::string(100, '[')).ok());
  auto body = ParseBodyLine("\"" + Base64Encode("hello") + "\"");
  ASSERT_TRUE(body.ok());
  EXPECT_EQ(*body, "hello");
}

TEST(GoCacheProgProtocol, EncodesResponsesAsGoDecodesThem) {
  Response r;
  r.id = 3;
  r.output_id = std::string(32, '\0');
  r.size = 5;
  r.time_unix_nanos = int64_t{1700000000} * 1000000000 + 42;
  r.disk_path = "/d/o/\"x\"";
  EXPECT_EQ(EncodeResponse(r),
            "{\"ID\":3,\"OutputID\":\"" + Base64Encode(r.output_id) +
                "\",\"Size\":5,\"Time\":\"2023-11-14T22:13:20.000000042Z\",\"DiskPath\":"
                "\"/d/o/\\\"x\\\"\"}\n");
  Response hello;
  hello.known_commands = true;
  EXPECT_EQ(EncodeResponse(hello), "{\"ID\":0,\"KnownCommands\":[\"get\",\"put\",\"close\"]}\n");
}

TEST(GoCacheProgEntry, RoundTripsAndRejectsMalformed) {
  ActionEntry e{std::string(32, '\x7f'), 1234, 99};
  auto back = ParseEntry(EncodeEntry(e));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->output_id, e.output_id);
  EXPECT_EQ(back->size, 1234);
  EXPECT_EQ(back->time_unix_nanos, 99);
  EXPECT_FALSE(ParseEntry("v1 abcd 1 2\n"));
  EXPECT_FALSE(ParseEntry("v2 " + std::string(64, 'a') + " 1 2\n"));
  EXPECT_FALSE(ParseEntry("v1 " + std::string(64, 'a') + " -1 2\n"));
  EXPECT_FALSE(ParseEntry("v1 " + std::string(64, 'g') + " 1 2\n"));
}

TEST(GoCacheProgAgentUrl, AcceptsAddressesAndNamesResolvedLater) {
  EXPECT_TRUE(ParseAgentUrl("http://127.0.0.1:8080").ok());
  EXPECT_TRUE(ParseAgentUrl("http://[::1]:8080/").ok());
  EXPECT_TRUE(ParseAgentUrl("http://localhost:1").ok());
  auto named = ParseAgentUrl("http://buildcache-ci.ci-system.svc:8080");
  ASSERT_TRUE(named.ok()) << named.status().ToString();
  EXPECT_EQ(named->name, "buildcache-ci.ci-system.svc");
  EXPECT_EQ(named->port, 8080);
  EXPECT_EQ(named->addr_len, 0u);  // not resolved at parse time
  EXPECT_EQ(ParseAgentUrl("http://127.0.0.1:8080")->name, "");
  EXPECT_FALSE(ParseAgentUrl("http://bad_name.svc:8080").ok());
  EXPECT_FALSE(ParseAgentUrl("http://-lead.svc:8080").ok());
  EXPECT_FALSE(ParseAgentUrl("http://a..b:8080").ok());
  EXPECT_FALSE(ParseAgentUrl("https://127.0.0.1:8080").ok());
  EXPECT_FALSE(ParseAgentUrl("http://127.0.0.1").ok());
  EXPECT_FALSE(ParseAgentUrl("http://127.0.0.1:70000").ok());
  EXPECT_FALSE(ParseAgentUrl("http://127.0.0.1:80/cache").ok());
}

TEST(GoCacheProgToken, ReadsTrimmedTokenAndRefusesHeaderInjection) {
  // Per process: parallel runs of this binary must not share the files.
  auto dir =
      std::filesystem::path(testing::TempDir()) / ("gocacheprog_token_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir / name) << text;
    return (dir / name).string();
  };
  EXPECT_EQ(ReadToken(write("ok", "  abc.def-ghi\n")).value(), "abc.def-ghi");
  EXPECT_EQ(ReadToken(write("empty", " \n")).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(ReadToken(write("inject", "abc\r\nX-Evil: 1\n")).ok());
  EXPECT_FALSE(ReadToken(write("space", "abc def")).ok());
  EXPECT_EQ(ReadToken((dir / "absent").string()).status().code(), StatusCode::kUnavailable);
  std::filesystem::remove_all(dir);
}

TEST(GoCacheProgToken, ARotatedTokenFileIsReadAgainAndOnlyThen) {
  auto dir = std::filesystem::path(testing::TempDir()) /
             ("gocacheprog_rotate_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  // The kubelet's layout: token -> ..data/token, ..data -> a timestamped directory, swapped.
  auto publish = [&](const std::string& version, const std::string& token) {
    std::filesystem::create_directories(dir / version);
    std::ofstream(dir / version / "token") << token;
    std::filesystem::create_directory_symlink(version, dir / "..data_tmp");
    std::filesystem::rename(dir / "..data_tmp", dir / "..data");
  };
  publish("v1", "first-token\n");
  std::filesystem::create_symlink("..data/token", dir / "token");
  TokenFile file((dir / "token").string());
  EXPECT_EQ(file.Current().value(), "first-token");
  for (int i = 0; i < 10; ++i) EXPECT_EQ(file.Current().value(), "first-token");
  EXPECT_EQ(file.reads(), 1u);  // unchanged: a stat per request, no read
  publish("v2", "second-token\n");
  EXPECT_EQ(file.Current().value(), "second-token");
  EXPECT_EQ(file.reads(), 2u);
  // A token file that turns bad is an error, not the old token kept or nothing sent.
  publish("v3", "bad token\n");
  EXPECT_FALSE(file.Current().ok());
  std::filesystem::remove_all(dir);
}

TEST(GoCacheProgOptions, TheWebhooksTokenFileIsTheFallback) {
  const char* argv[] = {"prog", "--dir=/c"};
  setenv("BUILDCACHE_TOKEN_FILE", "/var/run/secrets/buildcache.io/token", 1);
  unsetenv("BUILDCACHE_GOCACHEPROG_TOKEN_FILE");
  auto o = ParseOptions(2, const_cast<char**>(argv));
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->token_file, "/var/run/secrets/buildcache.io/token");
  setenv("BUILDCACHE_GOCACHEPROG_TOKEN_FILE", "/own/token", 1);
  EXPECT_EQ(ParseOptions(2, const_cast<char**>(argv))->token_file, "/own/token");
  const char* none[] = {"prog", "--dir=/c", "--token-file="};
  EXPECT_EQ(ParseOptions(3, const_cast<char**>(none))->token_file, "");
  unsetenv("BUILDCACHE_GOCACHEPROG_TOKEN_FILE");
  unsetenv("BUILDCACHE_TOKEN_FILE");
}

TEST(GoCacheProgOptions, TokenFileAndInstallFlags) {
  const char* argv[] = {"prog", "--token-file=/var/run/token", "--install=/opt/bin", "--dir=/c"};
  auto o = ParseOptions(4, const_cast<char**>(argv));
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->token_file, "/var/run/token");
  EXPECT_EQ(o->install_dir, "/opt/bin");
  const char* bad[] = {"prog", "--install=relative"};
  EXPECT_FALSE(ParseOptions(2, const_cast<char**>(bad)).ok());
}

// Local-only operation: a put is answered with a DiskPath holding the body; a get of the same
// action is then a hit; an unknown action is a miss; close ends the run.
TEST(GoCacheProgCacheProgram, LocalPutThenGet) {
  auto dir =
      std::filesystem::temp_directory_path() / ("gocacheprog_test_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  Options o;
  o.dir = dir.string();
  std::ostringstream log;
  CacheProgram program(o, log);
  std::string action(32, 'A');
  std::string body = "compiled bytes";
  std::string output = Sha256::Of(body);
  std::string in = "{\"ID\":1,\"Command\":\"put\",\"ActionID\":\"" + Base64Encode(action) +
                   "\",\"OutputID\":\"" + Base64Encode(output) +
                   "\",\"BodySize\":" + std::to_string(body.size()) + "}\n\"" + Base64Encode(body) +
                   "\"\n" + "{\"ID\":2,\"Command\":\"get\",\"ActionID\":\"" + Base64Encode(action) +
                   "\"}\n" + "{\"ID\":3,\"Command\":\"get\",\"ActionID\":\"" +
                   Base64Encode(std::string(32, 'B')) + "\"}\n{\"ID\":4,\"Command\":\"close\"}\n";
  std::istringstream input(in);
  std::ostringstream out;
  ASSERT_EQ(program.Run(input, out), 0) << log.str();
  std::string path = (dir / "o" / Hex(output)).string();
  std::string text = out.str();
  EXPECT_NE(text.find("{\"ID\":1,\"DiskPath\":\"" + path + "\"}"), std::string::npos) << text;
  EXPECT_NE(text.find("{\"ID\":2,\"OutputID\":\"" + Base64Encode(output) + "\",\"Size\":14"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("{\"ID\":3,\"Miss\":true}"), std::string::npos) << text;
  EXPECT_NE(text.find("{\"ID\":4}"), std::string::npos) << text;
  Stats s = program.stats();
  EXPECT_EQ(s.local_hits, 1u);
  EXPECT_EQ(s.misses, 1u);
  std::filesystem::remove_all(dir);
}

// std::cerr is tied to std::cout: a worker's log line would flush the reply stream outside the
// reply lock and race another worker's reply (the go command then saw a reply twice and stopped
// with "sent response for unknown request ID"). Run must untie its log and input streams.
TEST(GoCacheProgCacheProgram, LogAndInputAreUntiedFromTheReplies) {
  auto dir =
      std::filesystem::temp_directory_path() / ("gocacheprog_tie_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  Options o;
  o.dir = dir.string();
  std::ostringstream out;
  std::ostringstream log;
  log.tie(&out);
  std::istringstream input("{\"ID\":1,\"Command\":\"close\"}\n");
  input.tie(&out);
  CacheProgram program(o, log);
  ASSERT_EQ(program.Run(input, out), 0) << log.str();
  EXPECT_EQ(log.tie(), nullptr);
  EXPECT_EQ(input.tie(), nullptr);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace buildcache::gocacheprog
