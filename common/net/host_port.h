// HOST:PORT as a value: parsed once, with clear errors, so no caller splits at a colon by hand.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status/status.h"

namespace buildcache::net {

// A network address as configured or reported: a host (an IPv4 address, an IPv6 address or a DNS
// name) and a port. In text an IPv6 address is written in brackets: "[::1]:8080"; host() holds it
// without them.
class HostPort {
 public:
  // `host` without brackets; not validated (use Parse for text from outside).
  HostPort(std::string host, uint16_t port) : host_(std::move(host)), port_(port) {}

  // Parses "host:port" or "[v6]:port". The port is decimal 0-65535; a host name is letters,
  // digits, '-' and '.' in labels of at most 63 characters (253 in all). InvalidArgument, naming
  // the problem and quoting the text, for anything else: a missing host or port, an IPv6 address
  // without brackets, an invalid IPv6 address, bytes that belong to no host (spaces, control
  // characters, '/', '@'), a port out of range.
  static Result<HostPort> Parse(std::string_view text);
  // Like Parse, and also accepts ":port" (an empty host: every local address).
  static Result<HostPort> ParseListen(std::string_view text);
  // Like Parse, and text without a port ("example.com", "[::1]") gets `default_port`.
  static Result<HostPort> ParseWithDefaultPort(std::string_view text, uint16_t default_port);

  const std::string& host() const { return host_; }
  uint16_t port() const { return port_; }
  bool is_ipv6() const { return host_.find(':') != std::string::npos; }
  // The host as a URL or a HOST:PORT writes it: in brackets when it is an IPv6 address.
  std::string BracketedHost() const;
  // "host:port" or "[v6]:port"; Parse(ToString()) gives this value back.
  std::string ToString() const;

  bool operator==(const HostPort&) const = default;

 private:
  static Result<HostPort> Parse(std::string_view text, bool allow_empty_host,
                                std::optional<uint16_t> default_port);

  std::string host_;
  uint16_t port_;
};

// The host of "host:port" or "[v6]:port" as written (brackets kept), without parsing or
// validating it: for addresses the process itself produced, such as a connection's peer. Text
// with no port, including a bare IPv6 address ("::1"), is returned whole.
std::string_view HostOf(std::string_view host_port);

// The host of "host:port", "[v6]:port", "[v6]", "host" or a bare IPv6 address ("fd00::1"), without
// brackets and without parsing or validating it; "" for an unterminated "[". For addresses the
// process itself produced or already checked (a gRPC peer, a configured member).
std::string_view BareHost(std::string_view address);

// host in brackets when it is an IPv6 address ("[fd00::1]"), else as it is: the form a URL or a
// HOST:PORT writes it in.
std::string BracketHost(std::string_view host);

// `host_port` with its port replaced by `port`: the address a listener configured with port 0
// actually bound. Text that does not parse gets ":port" appended to its host part as written.
std::string WithPort(std::string_view host_port, uint16_t port);

// True when host is a DNS name by the rules Parse applies (letters, digits, '-', '.').
bool IsHostName(std::string_view host);

// A URL as written with the user information of its authority ("https://user:pw@host/p") masked
// ("https://***@host/p"), for logs and messages: credentials never leave through them. Text with
// no "://" or no '@' before the path is returned as it is.
std::string RedactUserinfo(std::string_view url);

}  // namespace buildcache::net
