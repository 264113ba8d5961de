// DirectoryCache's writes into the tree: Pull (a peer's entry made a file here) and EnforceQuota
// (least recently used files removed), serialised with each other by pull_mu_.
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "agent/dircache/beneath.h"
#include "agent/dircache/directory_cache.h"
#include "common/log/log.h"

namespace buildcache::dircache {
namespace {

// Copies a stored blob into fd: a reflink where the file system shares blocks (no second copy
// of the bytes on disk), else an in-kernel copy, else read/write.
Status CopyBlob(store::BlobReader& reader, int out) {
  uint64_t size = reader.info().size;
  int in = reader.fd();
  if (in >= 0) {
    if (::ioctl(out, FICLONE, in) == 0) {
      return Status::Ok();
    }
    loff_t in_off = 0;
    loff_t out_off = 0;
    bool kernel_copy = true;
    while (static_cast<uint64_t>(in_off) < size) {
      ssize_t n = ::copy_file_range(in, &in_off, out, &out_off, size - in_off, 0);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        if (in_off == 0 && n < 0 &&
            (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
          kernel_copy = false;
          break;
        }
        return n < 0 ? ErrnoStatus(errno, "copy_file_range")
                     : DataLoss("stored blob shorter than its size");
      }
    }
    if (kernel_copy) {
      return Status::Ok();
    }
  }
  std::vector<char> buf(1 << 20);
  uint64_t off = 0;
  while (off < size) {
    BC_ASSIGN_OR_RETURN(size_t n, reader.ReadAt(off, std::span<char>(buf)));
    if (n == 0) {
      return DataLoss("stored blob shorter than its size");
    }
    BC_RETURN_IF_ERROR(fs::WriteAll(out, std::string_view(buf.data(), n)));
    off += n;
  }
  return Status::Ok();
}

Result<store::Digest> HashFileAt(int dir_fd, const std::string& name) {
  UniqueFd fd(::openat(dir_fd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd.valid()) {
    return ErrnoStatus(errno, name);
  }
  store::Sha256 sha;
  BC_RETURN_IF_ERROR(fs::ReadChunks(fd.get(), name, [&](std::string_view chunk) {
    sha.Update(chunk);
    return Status::Ok();
  }));
  return sha.Finish();
}

}  // namespace

Status DirectoryCache::CheckPullPlan(const ManifestEntry& e) {
  switch (Classify(e)) {
    case Plan::kPull:
      return Status::Ok();
    case Plan::kPresent:
      return AlreadyExists(e.path + ": present");
    case Plan::kConflict:
      NoteConflict(e);
      return FailedPrecondition(e.path + ": a different file exists here");
    case Plan::kDeleted:
      return FailedPrecondition(e.path + ": deleted here");
    case Plan::kBusy:
      return Unavailable(e.path + ": a local file is not indexed yet");
    case Plan::kRejected:
      return InvalidArgument("rejected manifest entry: " + e.path);
  }
  return InvalidArgument("rejected manifest entry: " + e.path);
}

Status DirectoryCache::Pull(const ManifestEntry& e, const Fetch& fetch,
                            const std::function<bool()>& cancelled) {
  BC_RETURN_IF_ERROR(CheckPullPlan(e));

  // 1. A temporary file beside the target (same file system, so the rename is atomic), in the
  // parent directory held open: the parents are made and opened one by one beneath the root
  // without following links, and the temporary file, the rename and the fsync all go through
  // that descriptor, so swapping a directory on the path for a link cannot redirect them. Any
  // return before the rename removes the temporary file (AtomicFile).
  std::string leaf;
  BC_ASSIGN_OR_RETURN(
      UniqueFd dir, OpenParentBeneath(root_fd_, e.path, /*create=*/true, options_.dir_mode, &leaf));
  if (options_.test_after_parents) {
    options_.test_after_parents();
  }
  auto created = fs::AtomicFile::Create(dir.get(), leaf, ".tmp.bc-pull-");
  if (!created.ok()) {
    if (created.status().code() == StatusCode::kFailedPrecondition) {  // EACCES, EPERM, EROFS
      NoteDenied(Denied::kWrite, e.path, created.status().message());
    }
    return created.status();
  }
  fs::AtomicFile& out = *created;

  // 2. The bytes.
  BC_RETURN_IF_ERROR(WritePulledBytes(e, fetch, cancelled, out));

  // 3. Mode (readable by every pod: the agent cannot give the file to a pod's uid), fsync,
  // rename without replacing.
  if (::fchmod(out.fd(), (e.mode & 07777) | 0444) != 0) {
    return ErrnoStatus(errno, "fchmod");
  }
  BC_RETURN_IF_ERROR(out.Sync());
  struct stat st;
  if (::fstat(out.fd(), &st) != 0) {
    return ErrnoStatus(errno, "fstat");
  }
  if (static_cast<uint64_t>(st.st_size) != e.size) {
    return DataLoss(e.path + ": written size differs from the entry");
  }
  MutexLock pull_lock(pull_mu_);
  Status committed = out.Commit(fs::AtomicFile::Replace::kNo);
  if (committed.code() == StatusCode::kAlreadyExists) {
    out.Discard();
    auto existing = HashFileAt(dir.get(), leaf);
    if (existing.ok() && *existing == e.digest) {
      return AlreadyExists(e.path + ": present");
    }
    NoteConflict(e);
    return FailedPrecondition(e.path + ": a different file exists here");
  }
  if (!out.committed()) {
    return committed;
  }
  // A failed fsync of the directory after the rename is not an error of the pull (as before).

  // 4. Listed at once.
  IndexPulled(e, out.fd());
  if (observer_.on_pulled) {
    observer_.on_pulled(options_.name, e.size);
  }
  return Status::Ok();
}

// From a peer the bytes go to the store and the temporary file in one pass (no re-read); the
// store verifies them against the digest at Commit, and the file is only renamed into place after
// that. A blob the store already has is copied from it (a reflink where the file system shares
// blocks).
Status DirectoryCache::WritePulledBytes(const ManifestEntry& e, const Fetch& fetch,
                                        const std::function<bool()>& cancelled,
                                        fs::AtomicFile& out) {
  if (store_.HasDigest(e.digest)) {
    BC_ASSIGN_OR_RETURN(auto reader, store_.OpenDigest(e.digest));
    return CopyBlob(*reader, out.fd());
  }
  store::WriteOptions wo;
  wo.expected_digest = e.digest;
  wo.expected_size = e.size;
  BC_ASSIGN_OR_RETURN(auto writer, store_.NewWriter(StoreKey(e.path), wo));
  BC_RETURN_IF_ERROR(fetch([&](std::string_view chunk) -> Status {
    if (cancelled && cancelled()) {
      return Cancelled("pull cancelled");
    }
    BC_RETURN_IF_ERROR(writer->Write(chunk));
    return out.Write(chunk);
  }));
  return writer->Commit().status();
}

// Indexed at once, so the watcher's kFileWritten finds it known and does not hash it again. The
// file is the one just written (its descriptor), wherever its directory is now; it is listed under
// e.path only while that path still leads to it beneath the root. A pod that removed it the
// moment it appeared deleted it: remembered like any deletion (the watcher's event may have come
// first and found nothing to mark).
void DirectoryCache::IndexPulled(const ManifestEntry& e, int fd) {
  struct stat written;
  struct stat at_path;
  int err = ::fstat(fd, &written) == 0 ? StatBeneath(root_fd_, e.path, &at_path) : EIO;
  bool here = err == 0 && at_path.st_ino == written.st_ino && at_path.st_dev == written.st_dev;
  if (!here && err != ENOENT) {
    return;
  }
  Fingerprint fp;
  int64_t last_use = 0;
  uint32_t mode = 0;
  FromStat(written, &fp, &last_use, &mode);
  MutexLock lock(mu_);
  index_.Put(ManifestEntry{e.path, e.size, mode, e.digest, last_use, false}, fp);
  pending_.erase(e.path);
  ReportUsageLocked();
  if (!here) {
    MarkDeletedLocked(e.path);
  }
}

size_t DirectoryCache::EnforceQuota() {
  if (options_.max_size == 0) {
    return 0;
  }
  struct Candidate {
    int64_t last_use;
    std::string rel;
    Fingerprint fp;
    uint64_t size;
  };
  std::vector<Candidate> candidates;
  uint64_t used;
  {
    MutexLock lock(mu_);
    used = index_.live_bytes();
    if (used <= options_.max_size) {
      return 0;
    }
    index_.ForEachLive([&](const std::string& rel, const DirectoryIndex::Indexed& idx) {
      candidates.push_back({0, rel, idx.fp, idx.entry.size});
    });
  }
  // Last use as of now: pods read files after they were indexed.
  for (Candidate& c : candidates) {
    Fingerprint fp;
    if (!StatFile(c.rel, &fp, &c.last_use, nullptr)) {
      c.last_use = INT64_MIN;
    }
  }
  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    return a.last_use != b.last_use ? a.last_use < b.last_use : a.rel < b.rel;
  });
  MutexLock pull_lock(pull_mu_);
  size_t removed = 0;
  for (const Candidate& c : candidates) {
    if (used <= options_.max_size) {
      break;
    }
    std::string leaf;
    auto parent = OpenParentBeneath(root_fd_, c.rel, /*create=*/false, 0, &leaf);
    Fingerprint now;
    struct stat st;
    bool exists = parent.ok() &&
                  ::fstatat(parent->get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                  S_ISREG(st.st_mode);
    if (exists) {
      FromStat(st, &now, nullptr, nullptr);
    }
    // A file being rewritten (or replaced) since it was indexed is not ours to judge yet. Only
    // size and inode are compared: tools mark use by setting mtime (Go's cache does).
    if (exists && (now.size != c.fp.size || now.ino != c.fp.ino)) {
      continue;
    }
    MutexLock lock(mu_);
    if (pending_.count(c.rel) > 0 || writing_.count(c.rel) > 0) {
      continue;
    }
    if (exists && ::unlinkat(parent->get(), leaf.c_str(), 0) != 0) {
      continue;
    }
    MarkDeletedLocked(c.rel);
    used = index_.live_bytes();
    ++removed;
    if (observer_.on_evicted) {
      observer_.on_evicted(options_.name, c.size);
    }
    log::Info("directory file evicted",
              {{"directory", options_.name}, {"path", c.rel}, {"bytes", c.size}});
  }
  return removed;
}

}  // namespace buildcache::dircache
