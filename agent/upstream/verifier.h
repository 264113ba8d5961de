#pragma once

// Internal to the upstream layer: incremental verification of a body against the digests an
// ecosystem's index gives.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agent/upstream/upstream.h"
#include "common/status/status.h"
#include "common/text/quote.h"

namespace buildcache::upstream {

std::string_view AlgorithmName(ExpectedDigest::Algorithm algorithm);
size_t DigestLength(ExpectedDigest::Algorithm algorithm);

// Hashes a stream with every algorithm named in `expected` and compares at the end. Not
// thread-safe.
class Verifier {
 public:
  // skip_sha256: the store checks SHA-256 itself (WriteOptions::expected_digest), so it is not
  // computed twice; sha256 entries are then only checked for agreeing with each other. An
  // expected digest whose length does not fit its algorithm fails Finish.
  Verifier(std::vector<ExpectedDigest> expected, bool skip_sha256);
  ~Verifier();
  Verifier(const Verifier&) = delete;
  Verifier& operator=(const Verifier&) = delete;

  void Update(std::string_view data);
  // OK when every (non-skipped) expected digest matched; kDataLoss naming the algorithm, the
  // expected and the actual hex digest otherwise. Call once.
  Status Finish();
  // After Finish: the digests this verifier computed over the stream (one per hashed algorithm;
  // skipped sha256 entries are not among them), whether or not they matched.
  const std::vector<ExpectedDigest>& Computed() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Lower-case hex of raw digests (one definition, in common/text).
using text::ToHex;

// Hashes `reader`'s whole content with each algorithm (raw digests, in the order given).
Result<std::vector<ExpectedDigest>> HashBlob(store::BlobReader& reader,
                                             const std::vector<ExpectedDigest::Algorithm>& algos);

}  // namespace buildcache::upstream
