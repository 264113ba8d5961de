#include "agent/frontends/pypi/multipart.h"

#include <utility>

#include "agent/frontends/pypi/names.h"

namespace buildcache::pypi {
namespace {

constexpr size_t kMaxHeaderBlock = size_t{16} * 1024;
constexpr size_t kMaxBoundary = 70;
// Transport padding allowed between a boundary and its line end.
constexpr size_t kMaxBoundaryLine = 256;

std::string LowerAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Splits `value` into "; "-separated parameters (quoted strings may contain ';') and calls
// fn(name, value) for each; the first item (the type or disposition) is returned.
template <typename Fn>
std::string_view ForEachParam(std::string_view value, Fn fn) {
  size_t semi = value.find(';');
  std::string_view first = Trim(value.substr(0, semi));
  size_t i = semi == std::string_view::npos ? value.size() : semi + 1;
  while (i < value.size()) {
    while (i < value.size() && (value[i] == ' ' || value[i] == '\t' || value[i] == ';')) ++i;
    size_t eq = value.find('=', i);
    if (eq == std::string_view::npos) break;
    std::string name = LowerAscii(Trim(value.substr(i, eq - i)));
    i = eq + 1;
    while (i < value.size() && (value[i] == ' ' || value[i] == '\t')) ++i;
    std::string v;
    if (i < value.size() && value[i] == '"') {
      ++i;
      while (i < value.size() && value[i] != '"') {
        if (value[i] == '\\' && i + 1 < value.size()) ++i;
        v.push_back(value[i++]);
      }
      ++i;  // the closing quote
    } else {
      size_t end = value.find(';', i);
      if (end == std::string_view::npos) end = value.size();
      v = std::string(Trim(value.substr(i, end - i)));
      i = end;
    }
    fn(name, std::move(v));
    size_t next = value.find(';', i);
    i = next == std::string_view::npos ? value.size() : next + 1;
  }
  return first;
}

}  // namespace

Result<std::string> MultipartBoundary(std::string_view content_type) {
  std::string boundary;
  std::string_view type = ForEachParam(content_type, [&](const std::string& name, std::string v) {
    if (name == "boundary") boundary = std::move(v);
  });
  if (LowerAscii(type) != "multipart/form-data") {
    return InvalidArgument("Content-Type must be multipart/form-data");
  }
  if (boundary.empty() || boundary.size() > kMaxBoundary) {
    return InvalidArgument("multipart boundary missing or longer than 70 characters");
  }
  return boundary;
}

MultipartParser::MultipartParser(std::string boundary, MultipartCallbacks callbacks)
    : delimiter_("\r\n--" + std::move(boundary)), callbacks_(std::move(callbacks)) {
  // The first boundary may open the body without a preceding line break.
  buf_ = "\r\n";
}

Status MultipartParser::Fail(Status status) {
  state_ = State::kFailed;
  buf_.clear();
  return status;
}

Status MultipartParser::Feed(std::string_view data) {
  if (state_ == State::kFailed) return FailedPrecondition("multipart parser already failed");
  if (state_ == State::kDone) return Status::Ok();  // the epilogue is ignored
  buf_.append(data);
  Status s = Process();
  if (!s.ok()) return Fail(std::move(s));
  return s;
}

Status MultipartParser::Finish() {
  if (state_ == State::kFailed) return FailedPrecondition("multipart parser already failed");
  if (state_ != State::kDone) return Fail(InvalidArgument("multipart body ends before its end"));
  return Status::Ok();
}

Status MultipartParser::Process() {
  for (;;) {
    switch (state_) {
      case State::kPreamble:
      case State::kBody: {
        size_t pos = buf_.find(delimiter_);
        size_t emit = pos;
        if (pos == std::string::npos) {
          // Keep a tail that could be the start of the delimiter.
          emit = buf_.size() >= delimiter_.size() ? buf_.size() - (delimiter_.size() - 1) : 0;
        }
        if (state_ == State::kBody && emit > 0) {
          BC_RETURN_IF_ERROR(callbacks_.on_data(std::string_view(buf_).substr(0, emit)));
        }
        if (pos == std::string::npos) {
          buf_.erase(0, emit);
          return Status::Ok();
        }
        if (state_ == State::kBody) BC_RETURN_IF_ERROR(callbacks_.on_part_end());
        buf_.erase(0, pos + delimiter_.size());
        state_ = State::kAfterBoundary;
        break;
      }
      case State::kAfterBoundary: {
        if (buf_.size() < 2) return Status::Ok();
        if (buf_.starts_with("--")) {
          state_ = State::kDone;
          buf_.clear();
          return Status::Ok();
        }
        size_t eol = buf_.find("\r\n");
        if (eol == std::string::npos) {
          if (buf_.size() > kMaxBoundaryLine) {
            return InvalidArgument("malformed multipart boundary");
          }
          return Status::Ok();
        }
        for (size_t i = 0; i < eol; ++i) {
          if (buf_[i] != ' ' && buf_[i] != '\t') {
            return InvalidArgument("malformed multipart boundary line");
          }
        }
        buf_.erase(0, eol + 2);
        state_ = State::kHeaders;
        break;
      }
      case State::kHeaders: {
        size_t end = buf_.starts_with("\r\n") ? 0 : buf_.find("\r\n\r\n");
        if (end == std::string::npos) {
          if (buf_.size() > kMaxHeaderBlock) return InvalidArgument("multipart headers too large");
          return Status::Ok();
        }
        if (end > kMaxHeaderBlock) return InvalidArgument("multipart headers too large");
        BC_RETURN_IF_ERROR(ParseHeaders(std::string_view(buf_).substr(0, end)));
        buf_.erase(0, end == 0 ? 2 : end + 4);
        // The part body starts right after the blank line; the delimiter search needs the CRLF
        // that precedes a boundary, which the body itself supplies.
        state_ = State::kBody;
        break;
      }
      case State::kDone:
        buf_.clear();
        return Status::Ok();
      case State::kFailed:
        return FailedPrecondition("multipart parser already failed");
    }
  }
}

Status MultipartParser::ParseHeaders(std::string_view block) {
  PartHeader part;
  bool has_disposition = false;
  size_t start = 0;
  while (start < block.size()) {
    size_t eol = block.find("\r\n", start);
    std::string_view line = block.substr(start, eol == std::string_view::npos ? eol : eol - start);
    start = eol == std::string_view::npos ? block.size() : eol + 2;
    if (line.empty()) continue;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return InvalidArgument("malformed multipart header");
    std::string name = LowerAscii(Trim(line.substr(0, colon)));
    std::string_view value = Trim(line.substr(colon + 1));
    if (name == "content-disposition") {
      std::string filename_ext;
      std::string_view type = ForEachParam(value, [&](const std::string& n, std::string v) {
        if (n == "name") {
          part.name = std::move(v);
        } else if (n == "filename") {
          part.filename = std::move(v);
          part.has_filename = true;
        } else if (n == "filename*") {
          filename_ext = std::move(v);
        }
      });
      if (LowerAscii(type) != "form-data") {
        return InvalidArgument("multipart part is not form-data");
      }
      // RFC 5987 ext-value: charset'language'percent-encoded; preferred over filename.
      if (size_t q = filename_ext.find('\'', filename_ext.find('\'') + 1);
          !filename_ext.empty() && q != std::string::npos) {
        auto decoded = PercentDecode(std::string_view(filename_ext).substr(q + 1));
        if (decoded.ok()) {
          part.filename = *decoded;
          part.has_filename = true;
        }
      }
      has_disposition = true;
    } else if (name == "content-type") {
      part.content_type = std::string(value);
    }
  }
  if (!has_disposition || part.name.empty()) {
    return InvalidArgument("multipart part without a form-data name");
  }
  return callbacks_.on_part(part);
}

}  // namespace buildcache::pypi
