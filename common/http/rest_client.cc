#include "common/http/rest_client.h"

// cpprestsdk's U() macro collides with GoogleTest and others; nothing here needs it.
#define _TURN_OFF_PLATFORM_STRING
#include <cpprest/http_client.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pplx/threadpool.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <system_error>

#include "common/base/thread_annotations.h"
#include "common/log/log.h"
#include "common/text/quote.h"

namespace buildcache::http {

namespace {

namespace client = web::http::client;
using std::chrono::milliseconds;

struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

Result<std::string> ReadFile(const std::string& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return ErrnoStatus(errno, std::string(what) + " " + path);
  }
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) {
    return ErrnoStatus(errno, std::string(what) + " " + path);
  }
  return out.str();
}

std::string OpenSslError() {
  unsigned long err = ERR_get_error();  // NOLINT(google-runtime-int): OpenSSL's type
  ERR_clear_error();
  if (err == 0) return "no PEM data found";
  char buf[256];
  ERR_error_string_n(err, buf, sizeof(buf));
  return buf;
}

// Every certificate in a PEM bundle (at least one).
Result<std::vector<X509Ptr>> ParseCertificates(const std::string& pem, std::string_view what) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  std::vector<X509Ptr> certs;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    certs.emplace_back(cert);
  }
  ERR_clear_error();  // the loop ends with a "no start line" error at the end of the data
  if (certs.empty()) {
    return InvalidArgument(std::string(what) + ": no PEM certificate found");
  }
  return certs;
}

Result<PkeyPtr> ParseKey(const std::string& pem, std::string_view what) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
  if (key == nullptr) {
    return InvalidArgument(std::string(what) + ": not a PEM private key (" + OpenSslError() + ")");
  }
  return PkeyPtr(key);
}

// The PEM material of one source: inline data, else the file's current contents.
Result<std::string> LoadPem(const std::string& data, const std::string& file,
                            std::string_view what) {
  if (!data.empty()) return data;
  return ReadFile(file, what);
}

// What a TLS connection is set up with. Files are read again for every new connection.
struct TlsMaterial {
  std::string ca_pem, ca_file;
  std::string cert_pem, cert_file;
  std::string key_pem, key_file;

  bool has_ca() const { return !ca_pem.empty() || !ca_file.empty(); }
  bool has_cert() const { return !cert_pem.empty() || !cert_file.empty(); }

  // Loads everything and checks that it fits together; used at creation to fail early.
  Status Check() const {
    if (has_ca()) {
      BC_ASSIGN_OR_RETURN(std::string pem, LoadPem(ca_pem, ca_file, "CA certificate"));
      BC_ASSIGN_OR_RETURN(auto certs, ParseCertificates(pem, "CA certificate"));
    }
    bool has_key = !key_pem.empty() || !key_file.empty();
    if (has_cert() != has_key) {
      return InvalidArgument("a client certificate needs a private key, and a key a certificate");
    }
    if (has_cert()) {
      BC_ASSIGN_OR_RETURN(std::string cert_text,
                          LoadPem(cert_pem, cert_file, "client certificate"));
      BC_ASSIGN_OR_RETURN(std::string key_text, LoadPem(key_pem, key_file, "client key"));
      BC_ASSIGN_OR_RETURN(auto certs, ParseCertificates(cert_text, "client certificate"));
      BC_ASSIGN_OR_RETURN(PkeyPtr key, ParseKey(key_text, "client key"));
      if (X509_check_private_key(certs.front().get(), key.get()) != 1) {
        ERR_clear_error();
        return InvalidArgument("the client key does not match the client certificate");
      }
    }
    return Status::Ok();
  }

  // Runs inside cpprestsdk for each new connection; throwing is how it reports failure there.
  void Apply(boost::asio::ssl::context& context) const {
    SSL_CTX* ctx = context.native_handle();
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (has_ca()) {
      auto pem = LoadPem(ca_pem, ca_file, "CA certificate");
      if (!pem.ok()) throw std::runtime_error(pem.status().ToString());
      auto certs = ParseCertificates(*pem, "CA certificate");
      if (!certs.ok()) throw std::runtime_error(certs.status().ToString());
      // Replace the store: only the configured CAs are trusted, not the system's.
      X509_STORE* store = X509_STORE_new();
      for (const X509Ptr& cert : *certs) X509_STORE_add_cert(store, cert.get());
      SSL_CTX_set_cert_store(ctx, store);
    }
    if (has_cert()) {
      auto cert_text = LoadPem(cert_pem, cert_file, "client certificate");
      auto key_text = LoadPem(key_pem, key_file, "client key");
      if (!cert_text.ok()) throw std::runtime_error(cert_text.status().ToString());
      if (!key_text.ok()) throw std::runtime_error(key_text.status().ToString());
      context.use_certificate_chain(boost::asio::buffer(*cert_text));
      context.use_private_key(boost::asio::buffer(*key_text), boost::asio::ssl::context::pem);
    }
  }
};

bool IsUnreserved(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// Identity of a file's current contents, to notice a rotated token without reading it each time.
struct FileStamp {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = -1;
  int64_t mtime_ns = 0;
  bool operator==(const FileStamp&) const = default;
};

std::string TrimSpace(std::string s) {
  auto not_space = [](unsigned char c) { return !std::isspace(c); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

}  // namespace

std::string_view RestResponse::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (IEquals(k, name)) return v;
  }
  return {};
}

bool SetRestClientIoThreads(size_t threads) {
  try {
    crossplat::threadpool::initialize_with_threads(threads);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

std::string UrlEncode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (IsUnreserved(c)) {
      out.push_back(c);
    } else {
      out.push_back('%');
      buildcache::text::AppendHexByte(out, static_cast<unsigned char>(c), /*upper=*/true);
    }
  }
  return out;
}

bool LineSplitter::Feed(std::string_view data, const LineHandler& on_line, bool* too_long) {
  *too_long = false;
  while (!data.empty()) {
    size_t nl = data.find('\n');
    if (nl == std::string_view::npos) {
      if (partial_.size() + data.size() > max_) {
        *too_long = true;
        return false;
      }
      partial_.append(data);
      return true;
    }
    std::string_view piece = data.substr(0, nl);
    data.remove_prefix(nl + 1);
    if (partial_.size() + piece.size() > max_) {
      *too_long = true;
      return false;
    }
    std::string_view line;
    if (partial_.empty()) {
      line = piece;
    } else {
      partial_.append(piece);
      line = partial_;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    bool more = on_line(line);
    partial_.clear();
    if (!more) return false;
  }
  return true;
}

bool LineSplitter::Finish(const LineHandler& on_line) {
  if (partial_.empty()) return true;
  std::string line = std::move(partial_);
  partial_.clear();
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return on_line(line);
}

struct RestClient::Impl {
  RestClientOptions options;
  std::string base;  // options.base_url without a trailing slash
  std::shared_ptr<const TlsMaterial> tls;

  Mutex mu;
  // By timeout in ms.
  std::map<int64_t, std::shared_ptr<client::http_client>> clients GUARDED_BY(mu);
  std::string token GUARDED_BY(mu);
  FileStamp token_stamp GUARDED_BY(mu);

  // One cpprestsdk client per timeout value, since the timeout is part of its configuration.
  std::shared_ptr<client::http_client> ClientFor(milliseconds timeout) {
    if (timeout.count() <= 0) timeout = options.timeout;
    MutexLock lock(mu);
    auto& slot = clients[timeout.count()];
    if (!slot) {
      client::http_client_config config;
      config.set_timeout(timeout);
      config.set_validate_certificates(true);
      std::shared_ptr<const TlsMaterial> material = tls;
      config.set_ssl_context_callback(
          [material](boost::asio::ssl::context& ctx) { material->Apply(ctx); });
      slot = std::make_shared<client::http_client>(web::uri(base), config);
    }
    return slot;
  }

  // The bearer token to send now ("" for none); re-reads the token file when it has changed.
  std::string Token() {
    MutexLock lock(mu);
    if (options.bearer_token_file.empty()) return options.bearer_token;
    struct stat st {};
    if (stat(options.bearer_token_file.c_str(), &st) != 0) {
      log::Warn("bearer token file unreadable; using the last token",
                {{"path", options.bearer_token_file}, {"error", std::strerror(errno)}});
      return token;
    }
    FileStamp stamp{st.st_dev, st.st_ino, st.st_size,
                    int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec};
    if (stamp == token_stamp && !token.empty()) return token;
    auto text = ReadFile(options.bearer_token_file, "bearer token file");
    if (!text.ok()) {
      log::Warn("bearer token file unreadable; using the last token",
                {{"path", options.bearer_token_file}, {"error", text.status().message()}});
      return token;
    }
    std::string fresh = TrimSpace(std::move(*text));
    if (!token.empty() && fresh != token) {
      log::Info("bearer token reloaded", {{"path", options.bearer_token_file}});
    }
    token = std::move(fresh);
    token_stamp = stamp;
    return token;
  }

  web::http::http_request Build(const RestRequest& request) {
    web::http::http_request req(request.method);
    req.set_request_uri(web::uri(request.target.empty() ? "/" : request.target));
    std::string content_type;
    bool has_user_agent = false;
    for (const auto& [name, value] : request.headers) {
      if (IEquals(name, "Content-Type")) {
        content_type = value;
        continue;
      }
      if (IEquals(name, "User-Agent")) has_user_agent = true;
      req.headers().add(name, value);
    }
    if (!has_user_agent && !options.user_agent.empty()) {
      req.headers().add("User-Agent", options.user_agent);
    }
    std::string bearer = Token();
    if (!bearer.empty()) req.headers().add("Authorization", "Bearer " + bearer);
    if (!request.body.empty() || !content_type.empty()) {
      if (content_type.empty()) content_type = "application/octet-stream";
      req.headers().add("Content-Type", content_type);
      req.set_body(std::string(request.body), content_type);
    }
    return req;
  }

  std::string Describe(const RestRequest& request) const {
    return request.method + " " + base + request.target;
  }

  Status Failure(const RestRequest& request, const std::exception& e, std::error_code code,
                 const std::stop_token& stop) const {
    std::string what = Describe(request) + ": " + e.what();
    if (stop.stop_requested()) return Cancelled(Describe(request) + ": cancelled");
    if (code == std::errc::timed_out) return DeadlineExceeded(what + " (timed out)");
    return Unavailable(what);
  }

  // Sends request; when on_chunk is set and the status is 2xx, streams the body to it, else reads
  // the body into the response.
  Result<RestResponse> Run(const RestRequest& request, const ChunkHandler* on_chunk,
                           std::stop_token stop) {
    if (stop.stop_requested()) return Cancelled(Describe(request) + ": cancelled");
    pplx::cancellation_token_source cancel;
    // Closing the connection is how cpprestsdk abandons a request, in any phase.
    std::stop_callback on_stop(stop, [&cancel] { cancel.cancel(); });
    try {
      std::shared_ptr<client::http_client> http = ClientFor(request.timeout);
      web::http::http_response response = http->request(Build(request), cancel.get_token()).get();
      RestResponse out;
      out.status = response.status_code();
      for (const auto& [name, value] : response.headers()) out.headers.emplace_back(name, value);
      bool stream = on_chunk != nullptr && out.status >= 200 && out.status < 300;

      auto buf = response.body().streambuf();
      using traits = concurrency::streams::streambuf<uint8_t>::traits;
      std::string chunk;
      while (true) {
        // Wait for one byte, then take whatever else has already arrived.
        auto first = buf.bumpc().get();
        if (first == traits::eof()) break;
        chunk.assign(1, static_cast<char>(first));
        size_t more = buf.in_avail();
        if (more > 0) {
          chunk.resize(1 + more);
          size_t got = buf.getn(reinterpret_cast<uint8_t*>(chunk.data() + 1), more).get();
          chunk.resize(1 + got);
        }
        if (!stream) {
          out.body += chunk;
        } else if (!(*on_chunk)(chunk)) {
          cancel.cancel();  // the caller is done: drop the connection rather than drain it
          break;
        }
      }
      return out;
    } catch (const web::http::http_exception& e) {
      return Failure(request, e, e.error_code(), stop);
    } catch (const pplx::task_canceled& e) {
      return Failure(request, e, std::make_error_code(std::errc::operation_canceled), stop);
    } catch (const std::system_error& e) {
      return Failure(request, e, e.code(), stop);
    } catch (const web::uri_exception& e) {
      return InvalidArgument(Describe(request) + ": bad request target: " + e.what());
    } catch (const std::exception& e) {
      return Failure(request, e, {}, stop);
    }
  }
};

RestClient::RestClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RestClient::~RestClient() = default;

Result<std::unique_ptr<RestClient>> RestClient::Create(RestClientOptions options) {
  auto impl = std::make_unique<Impl>();
  std::string base = options.base_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  bool https = base.rfind("https://", 0) == 0;
  bool http = base.rfind("http://", 0) == 0;
  if (!https && !http) {
    return InvalidArgument("base URL must start with https:// (or http://): \"" + options.base_url +
                           "\"");
  }
  try {
    web::uri parsed(base);
    if (parsed.host().empty()) {
      return InvalidArgument("base URL has no host: \"" + options.base_url + "\"");
    }
    if (!parsed.query().empty() || !parsed.fragment().empty()) {
      return InvalidArgument("base URL must not have a query or fragment: \"" + options.base_url +
                             "\"");
    }
  } catch (const std::exception& e) {
    return InvalidArgument("base URL \"" + options.base_url + "\" is malformed: " + e.what());
  }

  auto tls = std::make_shared<TlsMaterial>();
  tls->ca_pem = options.ca_pem;
  tls->ca_file = options.ca_file;
  tls->cert_pem = options.client_cert_pem;
  tls->cert_file = options.client_cert_file;
  tls->key_pem = options.client_key_pem;
  tls->key_file = options.client_key_file;
  bool has_credentials =
      tls->has_cert() || !options.bearer_token.empty() || !options.bearer_token_file.empty();
  if (http && has_credentials) {
    return InvalidArgument("credentials are only sent over https, not to \"" + options.base_url +
                           "\"");
  }
  BC_RETURN_IF_ERROR(tls->Check());
  if (!options.bearer_token_file.empty()) {
    BC_ASSIGN_OR_RETURN(std::string token,
                        ReadFile(options.bearer_token_file, "bearer token file"));
    (void)token;
  }
  if (options.timeout.count() <= 0) options.timeout = std::chrono::seconds(30);

  impl->options = std::move(options);
  impl->base = std::move(base);
  impl->tls = std::move(tls);
  return std::unique_ptr<RestClient>(new RestClient(std::move(impl)));
}

const std::string& RestClient::base_url() const { return impl_->base; }

Result<RestResponse> RestClient::Do(const RestRequest& request, std::stop_token stop) {
  return impl_->Run(request, nullptr, std::move(stop));
}

Result<RestResponse> RestClient::Stream(const RestRequest& request, const ChunkHandler& on_chunk,
                                        std::stop_token stop) {
  return impl_->Run(request, &on_chunk, std::move(stop));
}

Result<RestResponse> RestClient::StreamLines(const RestRequest& request, const LineHandler& on_line,
                                             std::stop_token stop, size_t max_line_bytes) {
  LineSplitter splitter(max_line_bytes);
  bool too_long = false;
  bool stopped = false;
  ChunkHandler on_chunk = [&](std::string_view chunk) {
    if (!splitter.Feed(chunk, on_line, &too_long)) {
      stopped = true;
      return false;
    }
    return true;
  };
  BC_ASSIGN_OR_RETURN(RestResponse response, impl_->Run(request, &on_chunk, std::move(stop)));
  if (too_long) {
    return TooLarge(impl_->Describe(request) + ": a line of the response exceeds " +
                    std::to_string(max_line_bytes) + " bytes");
  }
  if (!stopped) splitter.Finish(on_line);
  return response;
}

}  // namespace buildcache::http
