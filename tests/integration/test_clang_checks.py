"""scripts/check-clang fails on what it is meant to catch, and passes the corrected code.

Each case runs one edge of scripts/clang_checks.py (what build/clang-checks/build.ninja runs per
translation unit) on a small source file, with the real clang++-14 and clang-tidy-14, the
repository's headers and .clang-tidy, and a result cache of its own.
"""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "clang_checks.py"

GUARDED = """
#include "common/base/thread_annotations.h"

class Counter {
 public:
  void Add() {
    %s
    ++n_;
  }

 private:
  buildcache::Mutex mu_;
  int n_ GUARDED_BY(mu_) = 0;
};

int main() {
  Counter c;
  c.Add();
}
"""

BRACES = """
int Sign(int v) {
  if (v < 0)
    return -1;
  return 1;
}

int main() { return Sign(2) == 1 ? 0 : 1; }
"""


def run_edge(tmp_path, check, source_text):
    # clang-tidy reads the .clang-tidy nearest to the source: a copy of the repository's.
    (tmp_path / ".clang-tidy").write_text((ROOT / ".clang-tidy").read_text())
    source = tmp_path / "planted.cc"
    source.write_text(source_text)
    stamp = tmp_path / f"{check}.stamp"
    env = dict(os.environ, BUILDCACHE_CLANG_CHECKS_CACHE=str(tmp_path / "cache"))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--run", check, str(source), str(stamp), "--",
         "-std=c++20", f"-I{ROOT}"],
        capture_output=True, text=True, env=env, timeout=300)
    return result, stamp


def test_thread_safety_fails_on_an_unguarded_write(tmp_path):
    result, stamp = run_edge(tmp_path, "thread-safety", GUARDED % "")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "writing variable 'n_' requires holding mutex 'mu_'" in result.stdout
    assert not stamp.exists()
    assert not any((tmp_path / "cache").glob("*")), "a failing file must not be cached as clean"


def test_thread_safety_passes_the_locked_write_and_caches_it(tmp_path):
    result, stamp = run_edge(tmp_path, "thread-safety", GUARDED % "buildcache::MutexLock l(mu_);")
    assert result.returncode == 0, result.stdout + result.stderr
    assert stamp.exists()
    assert len(list((tmp_path / "cache").glob("*"))) == 1
    # The headers it read are listed for ninja.
    assert "thread_annotations.h" in pathlib.Path(str(stamp) + ".d").read_text()


def test_tidy_fails_on_a_body_on_its_own_line_without_braces(tmp_path):
    result, stamp = run_edge(tmp_path, "tidy", BRACES)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "readability-braces-around-statements" in result.stdout
    assert not stamp.exists()


def test_tidy_passes_a_body_on_the_conditions_line(tmp_path):
    text = BRACES.replace("if (v < 0)\n    return -1;", "if (v < 0) return -1;")
    assert text != BRACES
    result, stamp = run_edge(tmp_path, "tidy", text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert stamp.exists()
