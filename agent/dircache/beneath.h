#pragma once

// Path resolution confined to a directory: every component of a relative path is looked up
// beneath a directory file descriptor and no symbolic link is followed, in any component (not
// only the last, which is all O_NOFOLLOW covers). A pod that can write into a directory cache can
// swap any directory on a path for a symlink at any time; resolving through these functions
// means the swap makes the lookup fail (ELOOP / ENOTDIR) instead of reaching outside the root.
//
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) is used where the kernel has it (Linux 5.6+);
// elsewhere (or where seccomp refuses it) a walk opens one component at a time with O_NOFOLLOW.

#include <sys/stat.h>
#include <sys/types.h>

#include <string>
#include <string_view>

#include "common/fs/file.h"
#include "common/status/status.h"

namespace buildcache::dircache {

// The owned descriptor type of common/fs, used unqualified here and by the directory cache.
using ::buildcache::fs::UniqueFd;

// Opens `rel` (a '/'-separated relative path; "" is the directory itself) beneath `dir_fd`
// without following symlinks in any component. `flags` are open(2) flags (O_CLOEXEC and
// O_NOFOLLOW are added); `mode` applies with O_CREAT. Returns the new descriptor (the caller owns
// it), or minus the errno of the failing step: -ELOOP when a component is a symlink, -ENOTDIR
// when one is not a directory, -EXDEV for a path that would leave dir_fd.
int OpenBeneath(int dir_fd, std::string_view rel, int flags, mode_t mode = 0);

// Opens the directory that contains `rel`, beneath `dir_fd`, without following symlinks, and
// sets *leaf to the last component of rel. With `create`, missing directories on the way are
// made (mkdirat, then `dir_mode` set with fchmod so the umask does not narrow it); a component
// that exists and is not a directory fails with kFailedPrecondition. The returned descriptor is
// open for reading (it can be fsynced) and is the directory every *at call on the leaf must use:
// renaming a directory on the path afterwards does not redirect it.
Result<UniqueFd> OpenParentBeneath(int dir_fd, std::string_view rel, bool create, mode_t dir_mode,
                                   std::string* leaf);

// lstat of `rel` beneath dir_fd (no symlink followed in any component). Returns the errno on
// failure (ENOENT when missing; ELOOP / ENOTDIR when a parent is a symlink or a file).
int StatBeneath(int dir_fd, std::string_view rel, struct stat* st);

// Tests only: whether openat2 is tried (false forces the component walk, as on kernels before 5.6).
void UseOpenat2ForTesting(bool use);

}  // namespace buildcache::dircache
