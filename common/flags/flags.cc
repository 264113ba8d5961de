#include "common/flags/flags.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

namespace buildcache::flags {

Status FlagError(std::string_view flag, std::string_view message) {
  return InvalidArgument(std::string(flag) + ": " + std::string(message));
}

namespace {

const Spec* Find(std::span<const Spec> table, std::string_view name) {
  for (const Spec& spec : table) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

bool IsFlag(std::string_view arg) { return arg.size() > 1 && arg.front() == '-'; }

}  // namespace

Result<std::vector<Arg>> Tokenize(int argc, const char* const* argv, std::span<const Spec> table,
                                  const TokenizeOptions& options) {
  std::vector<Arg> out;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (!IsFlag(arg)) {
      if (!options.positional) {
        return InvalidArgument("unexpected argument \"" + std::string(arg) + "\"" +
                               std::string(options.hint));
      }
      out.push_back(Arg{nullptr, std::string(arg), true});
      continue;
    }
    std::string_view name = arg;
    bool inline_value = false;
    if (size_t eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      inline_value = true;
    }
    const Spec* spec = Find(table, name);
    if (spec == nullptr) {
      return InvalidArgument("unknown flag " + std::string(name) + std::string(options.hint));
    }
    Arg parsed{spec, "", inline_value};
    if (inline_value) parsed.value = arg.substr(name.size() + 1);
    switch (spec->arity) {
      case Arity::kNone:
        if (inline_value) return FlagError(name, "takes no value");
        break;
      case Arity::kOptional:
        break;
      case Arity::kRequired:
        if (!inline_value) {
          if (i + 1 >= argc || (!options.value_may_start_with_dashes &&
                                std::string_view(argv[i + 1]).starts_with("--"))) {
            return FlagError(name, "needs a value");
          }
          parsed.value = argv[++i];
          parsed.has_value = true;
        }
        if (parsed.value.empty() && !options.empty_value) return FlagError(name, "needs a value");
        break;
    }
    out.push_back(std::move(parsed));
  }
  return out;
}

Result<int> ParseInt(std::string_view flag, std::string_view text, int min, int max) {
  std::string s(text);
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno != 0 || v < min || v > max) {
    if (max == 1000000) return FlagError(flag, "an integer >= " + std::to_string(min));
    return FlagError(flag,
                     "an integer between " + std::to_string(min) + " and " + std::to_string(max));
  }
  return static_cast<int>(v);
}

Result<bool> ParseBool(std::string_view flag, std::string_view text) {
  if (text == "true") return true;
  if (text == "false") return false;
  return FlagError(flag, "true or false");
}

std::vector<std::string> SplitList(std::string_view text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = std::min(text.find(',', start), text.size());
    std::string_view item = text.substr(start, end - start);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!item.empty()) out.emplace_back(item);
    start = end + 1;
  }
  return out;
}

}  // namespace buildcache::flags
