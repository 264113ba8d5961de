#include "agent/frontends/pypi/build_script.h"

#include <nlohmann/json.hpp>

#include "agent/frontends/pypi/build_requirements.h"

namespace buildcache::pypi {
namespace {

// After the first line ("BUILD = {...}", JSON, which Python reads as a dict of strings).
constexpr const char* kScript = R"PY(
import hashlib, json, os, re, shutil, subprocess, sys, tempfile, urllib.error, urllib.parse
import urllib.request

ENV = os.environ
AGENT = ENV["BUILDCACHE_AGENT_URL"].rstrip("/")
TOKEN = ENV["BUILDCACHE_BUILD_TOKEN"]
BASE = AGENT + "/pypi/builds/" + ENV["BUILDCACHE_BUILD_ID"]
LOG = []


class Failed(Exception):
    pass


def note(text):
    text = text.replace(TOKEN, "****")
    LOG.append(text if text.endswith("\n") else text + "\n")


def call(method, path, data=None, headers=None, timeout=300):
    h = {"Authorization": "Bearer " + TOKEN}
    h.update(headers or {})
    req = urllib.request.Request(BASE + path, data=data, method=method, headers=h)
    return urllib.request.urlopen(req, timeout=timeout)


def run(argv, shown):
    note("$ " + " ".join(shown))
    env = {k: ENV[k] for k in ("PATH", "HOME", "TMPDIR", "LANG") if k in ENV}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = p.stdout.decode("utf-8", "replace")
    note(out)
    return p.returncode, out


NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
TAIL = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._- \t[],<>=!~*+;\"'()")
ARCHIVES = (".whl", ".zip", ".tar", ".tgz", ".tbz", ".txz", ".gz", ".bz2")


def check_requirement(req):
    # As the agent's CheckBuildRequirement: a name, extras, specifiers and a marker only.
    if not isinstance(req, str) or not req or len(req) > 200:
        raise Failed("build requirement %r refused: empty or too long" % (req,))
    m = NAME.match(req)
    end = 0
    while end < len(req) and (req[end].isalnum() and req[end].isascii() or req[end] in "._-"):
        end += 1
    name = req[:end]
    if not m or m.end() != end:
        raise Failed("build requirement %r refused: it does not start with a project name" % req)
    if any(ext in name for ext in ARCHIVES):
        raise Failed("build requirement %r refused: it looks like a file name" % req)
    if any(c not in TAIL for c in req[end:]):
        raise Failed("build requirement %r refused: only extras, version specifiers and "
                     "markers may follow the name (no URL or path)" % req)


def download(requirements, deps):
    u = urllib.parse.urlsplit(AGENT)
    index = "%s://%s:%s@%s/pypi/simple/" % (u.scheme, "wheelbuild",
                                           urllib.parse.quote(TOKEN, safe=""), u.netloc)
    argv = [sys.executable, "-I", "-m", "pip", "download", "--isolated", "--only-binary", ":all:",
            "--no-cache-dir", "--disable-pip-version-check", "--no-input", "--index-url", index,
            "--trusted-host", u.hostname, "-d", deps, "--"] + list(requirements)
    note("[buildcache] downloading build requirements from the agent's index: " +
         ", ".join(requirements))
    code, _ = run(argv, [a if a != index else index.replace(TOKEN, "****") for a in argv])
    if code != 0:
        raise Failed("downloading the build requirements (%s) from the agent's index ended "
                     "with exit code %d" % (", ".join(requirements), code))


def build(work):
    sdist = os.path.join(work, BUILD["filename"])
    digest = hashlib.sha256()
    with call("GET", "/sdist") as r, open(sdist, "wb") as f:
        while True:
            chunk = r.read(1 << 16)
            if not chunk:
                break
            digest.update(chunk)
            f.write(chunk)
    if digest.hexdigest() != BUILD["sha256"]:
        raise Failed("the sdist does not match its digest")
    note("[buildcache] reading the build requirements")
    code, out = run([sys.executable, "-I", "-c", BUILD["read_requires"], sdist],
                    ["python3", "-I", "-c", "<read requires>", sdist])
    if code != 0:
        raise Failed("reading the sdist's build requirements ended with exit code %d" % code)
    lines = [l for l in out.splitlines() if l.strip()]
    requires = json.loads(lines[-1])["requires"] if lines else None
    if requires is None:
        requires = ["setuptools>=40.8.0", "wheel"]
    if not isinstance(requires, list) or len(requires) > 32:
        raise Failed("[build-system] requires is not a list of at most 32 requirements")
    for r in requires:
        check_requirement(r)
    deps = os.path.join(work, "deps")
    out_dir = os.path.join(work, "out")
    os.makedirs(deps)
    os.makedirs(out_dir)
    download(requires, deps)
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-cache-dir",
            "--disable-pip-version-check", "--no-input", "--find-links", deps, "-w", out_dir,
            sdist]
    code, out = run(argv, argv)
    if code != 0:
        # The backend asked for more than [build-system] requires: fetch it once, build again.
        missing = []
        for m in re.finditer(r"No matching distribution found for ([^\r\n]+)", out):
            req = m.group(1).strip()
            if req not in missing:
                missing.append(req)
        if missing:
            for r in missing[:32]:
                check_requirement(r)
            download(missing[:32], deps)
            shutil.rmtree(out_dir)
            os.makedirs(out_dir)
            note("[buildcache] building again with the requirements the backend asked for")
            code, out = run(argv, argv)
    if code != 0:
        raise Failed("the build ended with exit code %d" % code)
    wheels = os.listdir(out_dir)
    if len(wheels) != 1 or not wheels[0].endswith(".whl"):
        raise Failed("the build left %d files, not one wheel" % len(wheels))
    path = os.path.join(out_dir, wheels[0])
    with open(path, "rb") as f:
        data = f.read()
    with call("PUT", "/wheel/" + urllib.parse.quote(wheels[0], safe=""), data=data,
              headers={"Content-Type": "application/octet-stream"}) as r:
        note("[buildcache] uploaded %s (%d bytes): %s" % (wheels[0], len(data),
                                                          r.read().decode("utf-8", "replace")))


def main():
    ok = False
    work = tempfile.mkdtemp(prefix="wheelbuild-")
    try:
        build(work)
        ok = True
    except Failed as e:
        note("[buildcache] failed: %s" % e)
    except urllib.error.HTTPError as e:
        note("[buildcache] failed: the agent answered %d: %s" %
             (e.code, e.read().decode("utf-8", "replace")))
    except Exception as e:
        note("[buildcache] failed: %s: %s" % (type(e).__name__, e))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log = "".join(LOG).encode("utf-8", "replace")[-LOG_LIMIT:]
    try:
        call("PUT", "/log", data=log, headers={"Content-Type": "text/plain"}).close()
    except Exception as e:
        sys.stderr.write("uploading the log failed: %s\n" % e)
        ok = False
    sys.stdout.write(log.decode("utf-8", "replace"))
    sys.exit(0 if ok else 1)


main()
)PY";

}  // namespace

std::string BuildScript(const BuildTask& task) {
  nlohmann::json build = {{"id", task.id},
                          {"project", task.sdist.project},
                          {"version", task.sdist.version},
                          {"filename", task.sdist.filename},
                          {"sha256", task.sdist.sha256},
                          {"read_requires", std::string(ReadBuildRequiresScript())}};
  // ASCII-only JSON: every string is a valid Python string literal.
  return "BUILD = " +
         build.dump(-1, ' ', /*ensure_ascii=*/true, nlohmann::json::error_handler_t::replace) +
         "\nLOG_LIMIT = " + std::to_string(kBuildScriptLogBytes) + kScript;
}

}  // namespace buildcache::pypi
