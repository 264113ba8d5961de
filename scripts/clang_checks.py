#!/usr/bin/env python3
"""Runs clang's checks over every translation unit scripts/build compiles (scripts/check-clang).

Reads build/compile_commands.json (production code, tests and benchmarks; the generated protobuf
sources are left out), writes build/clang-checks/CHECK/build.ninja with one edge per source file,
and runs ninja on it:

  thread-safety  clang++-14 -fsyntax-only with -Wthread-safety as the only warning, as an error:
                 the GUARDED_BY/REQUIRES annotations of common/base/thread_annotations.h.
  tidy           clang-tidy-14 with the repository's .clang-tidy, every finding an error, in the
                 file and in the repository's headers it includes.

Two levels of reuse, like ccache for the build:
- ninja: each edge records the headers its file includes (a depfile), so a second run in the same
  build directory checks again only files whose source, headers or flags changed.
- a result cache in ~/.cache/buildcache/clang-checks (BUILDCACHE_CLANG_CHECKS_CACHE overrides;
  shared by every clone and worktree on the machine): a file whose preprocessed text (paths below
  the checkout made relative), flags, tool and .clang-tidy were already found clean is not checked
  again. Only clean results are cached; entries unused for 30 days are removed.

Arguments after the check name narrow it to source paths starting with them (agent/store ...).
Exit status: 0 clean, 1 a finding (the file and its diagnostics are printed), 2 bad usage.
"""

import argparse
import hashlib
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time

CLANG = "clang++-14"
CLANG_TIDY = "clang-tidy-14"
CHECKS = ("thread-safety", "tidy")
# Bumped when what a check runs changes in a way the key below does not see.
CACHE_VERSION = "1"
CACHE_MAX_AGE_DAYS = 30
# The repository's own folders whose headers clang-tidy reports on (not build/: generated code).
HEADER_DIRS = ("agent", "bench", "cli", "common", "gocacheprog", "operator")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ninja_escape(path):
    return path.replace("$", "$$").replace(" ", "$ ").replace(":", "$:")


def compile_flags(entry):
    """The compiler's flags of one compile_commands.json entry, without compiler, -c, -o, source."""
    args = entry["arguments"] if "arguments" in entry else shlex.split(entry["command"])
    out = []
    skip = False
    for arg in args[1:]:
        if skip:
            skip = False
            continue
        if arg == "-o":
            skip = True
            continue
        if arg in ("-c", entry["file"]) or arg.startswith("-g"):
            continue
        out.append(arg)
    return out


def stamp_name(source):
    rel = os.path.relpath(source, ROOT)
    digest = hashlib.sha1(rel.encode()).hexdigest()[:8]
    return rel.replace("/", "_") + "." + digest


def cache_dir():
    return os.environ.get("BUILDCACHE_CLANG_CHECKS_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "buildcache", "clang-checks")


def check_command(check, source, flags):
    if check == "thread-safety":
        return [CLANG, *flags, "-fsyntax-only", "-Wno-everything", "-Wthread-safety",
                "-Werror=thread-safety", source]
    header_filter = "^" + re.escape(ROOT) + "/(" + "|".join(HEADER_DIRS) + ")/"
    return [CLANG_TIDY, "--quiet", "--warnings-as-errors=*", f"--header-filter={header_filter}",
            source, "--", *flags]


def tool_identity(path):
    st = os.stat(os.path.realpath(shutil.which(path)))
    return f"{os.path.realpath(shutil.which(path))}:{st.st_size}:{st.st_mtime_ns}"


def run_one(check, source, stamp, flags):
    """One ninja edge: lists the headers (depfile), then checks unless a clean result is cached."""
    pre = subprocess.run([CLANG, *flags, "-E", "-MMD", "-MF", stamp + ".d", "-MT", stamp, source,
                          "-o", "-"], capture_output=True)
    if pre.returncode != 0:
        sys.stdout.write(pre.stderr.decode(errors="replace"))
        return 1
    key = hashlib.sha256()
    root = ROOT.encode()
    for part in (CACHE_VERSION, check, tool_identity(CLANG if check == "thread-safety" else
                                                     CLANG_TIDY), " ".join(flags)):
        key.update(part.encode().replace(root, b".") + b"\0")
    if check == "tidy":
        with open(os.path.join(ROOT, ".clang-tidy"), "rb") as f:
            key.update(f.read() + b"\0")
    key.update(pre.stdout.replace(root, b"."))
    entry = os.path.join(cache_dir(), key.hexdigest())
    cached = os.path.exists(entry)
    if cached:
        os.utime(entry)
    else:
        result = subprocess.run(check_command(check, source, flags), capture_output=True)
        if result.returncode != 0:
            sys.stdout.write(result.stdout.decode(errors="replace"))
            sys.stdout.write(result.stderr.decode(errors="replace"))
            return 1
        os.makedirs(cache_dir(), exist_ok=True)
        open(entry, "w").close()
    # The stamp records what this file cost (CPU seconds of clang and clang-tidy) for the summary.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(stamp, "w") as f:
        f.write(f"{usage.ru_utime + usage.ru_stime:.2f} {'cached' if cached else 'checked'}\n")
    return 0


def summary(out_dir, targets):
    """'N checked, M from the cache, S CPU s' over the stamps this run's targets wrote."""
    checked = cached = 0
    cpu = 0.0
    for t in targets:
        try:
            with open(os.path.join(out_dir, t)) as f:
                seconds, how = f.read().split()
        except (OSError, ValueError):
            continue
        cpu += float(seconds)
        if how == "cached":
            cached += 1
        else:
            checked += 1
    return f"{checked} checked, {cached} from the cache, {cpu:.0f} CPU s"


def prune_cache():
    try:
        entries = list(os.scandir(cache_dir()))
    except FileNotFoundError:
        return
    limit = time.time() - CACHE_MAX_AGE_DAYS * 86400
    for e in entries:
        try:
            if e.stat().st_mtime < limit:
                os.remove(e.path)
        except OSError:
            pass


def write_ninja(path, check, entries):
    script = os.path.abspath(__file__)
    lines = [
        "# Generated by scripts/clang_checks.py from compile_commands.json; rewritten every run.",
        "ninja_required_version = 1.10",
        "",
    ]
    lines += [
        f"rule {check}",
        f"  command = {sys.executable} {script} --run {check} $in $out -- $flags",
        "  depfile = $out.d",
        "  deps = gcc",
        f"  description = {check} $src",
        "",
    ]
    tidy_config = ninja_escape(os.path.join(ROOT, ".clang-tidy"))
    for entry in entries:
        source = entry["file"]
        flags = " ".join(shlex.quote(f) for f in compile_flags(entry))
        implicit = f" | {tidy_config}" if check == "tidy" else ""
        lines += [
            f"build {stamp_name(source)}: {check} {ninja_escape(source)}{implicit}",
            f"  flags = {flags}",
            f"  src = {os.path.relpath(source, ROOT)}",
        ]
    text = "\n".join(lines) + "\n"
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    with open(path, "w") as f:
        f.write(text)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--run":
        # scripts/clang_checks.py --run CHECK SOURCE STAMP -- FLAGS... (from build.ninja)
        check, source, stamp = sys.argv[2:5]
        return run_one(check, source, stamp, sys.argv[6:])

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", choices=CHECKS)
    parser.add_argument("paths", nargs="*", help="only sources under these paths (repo-relative)")
    parser.add_argument("--build", default="build", help="the CMake build directory")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-tests", action="store_true",
                        help="leave out test sources (*_test.cc, testing/ folders)")
    args = parser.parse_args()

    build = os.path.abspath(os.path.join(ROOT, args.build))
    db = os.path.join(build, "compile_commands.json")
    if not os.path.isfile(db):
        print(f"clang-checks: {db} is missing; run scripts/build first", file=sys.stderr)
        return 2
    for tool in (CLANG, CLANG_TIDY, "ninja"):
        if shutil.which(tool) is None:
            print(f"clang-checks: {tool} is not installed; run scripts/setup", file=sys.stderr)
            return 2
    with open(db) as f:
        entries = json.load(f)
    # Generated sources (protobuf, under the build directory) are not ours to check.
    entries = [e for e in entries if not os.path.abspath(e["file"]).startswith(build + os.sep)]
    entries.sort(key=lambda e: e["file"])
    # One ninja directory per check, so the two can run at the same time.
    out_dir = os.path.join(build, "clang-checks", args.check)
    os.makedirs(out_dir, exist_ok=True)
    write_ninja(os.path.join(out_dir, "build.ninja"), args.check, entries)
    prune_cache()

    prefixes = [os.path.normpath(p) for p in args.paths]
    targets = []
    for e in entries:
        rel = os.path.relpath(e["file"], ROOT)
        if args.no_tests and (rel.endswith("_test.cc") or "/testing/" in rel):
            continue
        if not prefixes or any(rel == p or rel.startswith(p + os.sep) for p in prefixes):
            targets.append(stamp_name(e["file"]))
    if not targets:
        print(f"clang-checks: no translation unit under {' '.join(args.paths)}", file=sys.stderr)
        return 2
    started = time.time()
    result = subprocess.run(["ninja", "-C", out_dir, "-k", "0", f"-j{args.jobs}", "--quiet"] +
                            targets)
    # Stamps older than this run were not rebuilt now: they count as nothing to do.
    fresh = [t for t in targets
             if os.path.exists(os.path.join(out_dir, t)) and
             os.path.getmtime(os.path.join(out_dir, t)) >= started - 1]
    if result.returncode != 0:
        print(f"clang-checks: {args.check} found problems (above)", file=sys.stderr)
        return 1
    print(f"{args.check}: {len(targets)} translation units clean ({len(targets) - len(fresh)} "
          f"unchanged; {summary(out_dir, fresh)}; {time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
