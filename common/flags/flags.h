#pragma once

// Command-line tokenizing shared by the binaries (buildcache-agent, buildcache-operator,
// kubectl-buildcache): each declares its flags in a table, Tokenize splits argv into flags and
// values, and the binary gives the values meaning. What a value means (an integer, a list, a
// level) is the binary's business; the helpers below cover the common kinds.

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status/status.h"

namespace buildcache::flags {

// How a flag takes its value.
enum class Arity {
  kNone,      // --flag (a value given as --flag=VALUE is an error)
  kRequired,  // --flag VALUE or --flag=VALUE
  kOptional,  // --flag or --flag=VALUE (never the next argument: "--leader-elect --workers 2")
};

struct Spec {
  std::string_view name;  // as typed: "--listen", "-n"
  Arity arity = Arity::kNone;
  int id = 0;  // the binary's own name for the flag (an enum value), for switching on
};

// One element of the command line: a flag from the table, or (when allowed) a positional
// argument, in command-line order.
struct Arg {
  const Spec* spec = nullptr;  // nullptr for a positional argument
  std::string value;           // the value, or the positional argument itself
  bool has_value = false;      // false for kNone, and for kOptional given without "=VALUE"
  std::string_view name() const { return spec != nullptr ? spec->name : std::string_view(); }
};

struct TokenizeOptions {
  // Positional arguments are returned as Args with spec == nullptr; otherwise each is an error
  // ("unexpected argument").
  bool positional = false;
  // "--a --b" with --a kRequired: true takes "--b" as --a's value; false reports "--a: needs a
  // value" (a forgotten value is likelier than a value starting with "--"; --a=--b still works).
  bool value_may_start_with_dashes = false;
  // "--a=" and "--a ''": true gives --a the empty value; false reports "--a: needs a value".
  bool empty_value = false;
  // Appended to the "unknown flag" and "unexpected argument" errors, e.g. " (see --help)".
  std::string_view hint{};
};

// Splits argv[1..argc) by the table. An argument is a flag when it starts with '-' and is not
// "-" alone; "--name=value" splits at the first '='. Errors are kInvalidArgument naming the flag:
// "unknown flag --x", "--x: takes no value", "--x: needs a value", "unexpected argument \"x\"".
Result<std::vector<Arg>> Tokenize(int argc, const char* const* argv, std::span<const Spec> table,
                                  const TokenizeOptions& options = {});

// kInvalidArgument "FLAG: MESSAGE".
Status FlagError(std::string_view flag, std::string_view message);

// A decimal integer in [min, max] (no sign other than '-', no spaces, no suffix); otherwise
// kInvalidArgument "FLAG: an integer >= MIN" (or "... between MIN and MAX" when max is not the
// default).
Result<int> ParseInt(std::string_view flag, std::string_view text, int min, int max = 1000000);

// "true" or "false"; otherwise kInvalidArgument "FLAG: true or false".
Result<bool> ParseBool(std::string_view flag, std::string_view text);

// A comma-separated list without empty items or the spaces around items: "a, b,,c" -> {a, b, c}.
std::vector<std::string> SplitList(std::string_view text);

}  // namespace buildcache::flags
