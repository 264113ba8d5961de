#include "common/flags/flags.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

namespace buildcache::flags {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr Spec kTable[] = {
    {"--name", Arity::kRequired}, {"-n", Arity::kRequired}, {"--on", Arity::kOptional},
    {"--quiet", Arity::kNone},    {"-q", Arity::kNone},
};

Result<std::vector<Arg>> Tok(std::vector<const char*> args, const TokenizeOptions& options = {}) {
  args.insert(args.begin(), "prog");
  return Tokenize(static_cast<int>(args.size()), args.data(), kTable, options);
}

std::string Error(std::vector<const char*> args, const TokenizeOptions& options = {}) {
  Result<std::vector<Arg>> r = Tok(std::move(args), options);
  EXPECT_FALSE(r.ok());
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  return r.status().message();
}

TEST(TokenizeTest, SeparateAndInlineValues) {
  auto r = Tok({"--name", "a", "--name=b=c", "-n", "x", "-q", "--quiet"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 5u);
  EXPECT_EQ((*r)[0].name(), "--name");
  EXPECT_EQ((*r)[0].value, "a");
  EXPECT_EQ((*r)[1].value, "b=c");
  EXPECT_EQ((*r)[2].name(), "-n");
  EXPECT_EQ((*r)[2].value, "x");
  EXPECT_FALSE((*r)[3].has_value);
  EXPECT_EQ((*r)[4].name(), "--quiet");
}

TEST(TokenizeTest, OptionalValueOnlyInline) {
  auto r = Tok({"--on", "--on=false"}, {.positional = true});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_FALSE((*r)[0].has_value);
  EXPECT_TRUE((*r)[1].has_value);
  EXPECT_EQ((*r)[1].value, "false");
  // The next argument is never an optional flag's value.
  auto next = Tok({"--on", "true"}, {.positional = true});
  ASSERT_TRUE(next.ok());
  ASSERT_EQ(next->size(), 2u);
  EXPECT_EQ((*next)[1].spec, nullptr);
  EXPECT_EQ((*next)[1].value, "true");
}

TEST(TokenizeTest, ClearErrors) {
  EXPECT_EQ(Error({"--nam", "x"}), "unknown flag --nam");
  EXPECT_EQ(Error({"--nam"}, {.hint = " (see --help)"}), "unknown flag --nam (see --help)");
  EXPECT_EQ(Error({"--quiet=yes"}), "--quiet: takes no value");
  EXPECT_EQ(Error({"--name"}), "--name: needs a value");
  EXPECT_EQ(Error({"--name="}), "--name: needs a value");
  EXPECT_EQ(Error({"--name", ""}), "--name: needs a value");
  EXPECT_EQ(Error({"--name", "--quiet"}), "--name: needs a value");
  EXPECT_EQ(Error({"serve"}), "unexpected argument \"serve\"");
  EXPECT_EQ(Error({"-"}), "unexpected argument \"-\"");
}

TEST(TokenizeTest, PermissiveValues) {
  auto r = Tok({"--name", "--quiet", "--name="},
               {.value_may_start_with_dashes = true, .empty_value = true});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].value, "--quiet");
  EXPECT_TRUE((*r)[1].has_value);
  EXPECT_EQ((*r)[1].value, "");
}

TEST(TokenizeTest, PositionalsKeepTheirOrder) {
  auto r = Tok({"status", "-n", "ns", "name", "-"}, {.positional = true});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 4u);
  EXPECT_EQ((*r)[0].value, "status");
  EXPECT_EQ((*r)[1].value, "ns");
  EXPECT_EQ((*r)[2].value, "name");
  EXPECT_EQ((*r)[3].value, "-");
}

TEST(ParseIntTest, RangeAndSyntax) {
  EXPECT_EQ(*ParseInt("--n", "7", 1), 7);
  EXPECT_EQ(*ParseInt("--n", "0", 0), 0);
  EXPECT_EQ(ParseInt("--n", "0", 1).status().message(), "--n: an integer >= 1");
  EXPECT_FALSE(ParseInt("--n", "", 0).ok());
  EXPECT_FALSE(ParseInt("--n", "3x", 0).ok());
  EXPECT_FALSE(ParseInt("--n", "99999999999999999999", 0).ok());
  EXPECT_FALSE(ParseInt("--n", "1000001", 0).ok());
  EXPECT_EQ(ParseInt("--n", "11", 1, 10).status().message(), "--n: an integer between 1 and 10");
}

TEST(ParseBoolTest, OnlyTrueOrFalse) {
  EXPECT_TRUE(*ParseBool("--b", "true"));
  EXPECT_FALSE(*ParseBool("--b", "false"));
  EXPECT_EQ(ParseBool("--b", "yes").status().message(), "--b: true or false");
}

TEST(SplitListTest, DropsEmptyItemsAndSpaces) {
  EXPECT_THAT(SplitList("a, b,,c "), ElementsAre("a", "b", "c"));
  EXPECT_TRUE(SplitList("").empty());
  EXPECT_TRUE(SplitList(" , ").empty());
}

}  // namespace
}  // namespace buildcache::flags
