"""Real-world-sized workloads for bench/package_managers.py --real (issue 16): hundreds of npm
packages, a couple of hundred crates, hundreds of Maven repository files, a few dozen Go modules,
a pip set with large wheels and an sdist, and an 80-file C build through ccache's remote storage.

Each workload is resolved once against the upstream before anything is timed (lockfile,
go.sum, Cargo.lock), then run as
  direct: the client against the machine's configured upstream, empty client caches;
  cold:   through a buildcache-agent started for the round with an empty data directory;
  warm:   through the same agent again, empty client caches (only the agent is warm).
Direct runs before, between or after the two agent runs, in turn from round to round. For the agent runs the agent's own view is
read from its /metrics: request seconds and count of the workload's front end, and upstream
fetch seconds and count; (request s - upstream s) is the agent's own share of its answers.

Upstreams come from the machine's client configuration (tests/harness/upstreams.py); no host
name is written here.
"""

import json
import os
import pathlib
import shutil
import statistics
import sys
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from harness import upstreams, workloads  # noqa: E402

# ---------------------------------------------------------------------------------------------
# The workloads

NPM_DEPENDENCIES = {"express": "4.19.2", "webpack": "5.91.0", "eslint": "8.57.0",
                    "jest": "29.7.0", "typescript": "5.4.5", "yargs": "17.7.2"}

GO_IMPORTS = ["github.com/gin-gonic/gin", "github.com/spf13/cobra", "github.com/spf13/viper",
              "go.uber.org/zap", "github.com/prometheus/client_golang/prometheus",
              "google.golang.org/grpc", "github.com/google/uuid", "github.com/sirupsen/logrus"]

MAVEN_POM = """\
<project>
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.buildcache.bench</groupId>
  <artifactId>real-world</artifactId>
  <version>1.0.0</version>
  <packaging>jar</packaging>
  <dependencies>
    <dependency><groupId>org.springframework.boot</groupId>
      <artifactId>spring-boot-starter-web</artifactId><version>3.2.5</version></dependency>
    <dependency><groupId>com.google.guava</groupId>
      <artifactId>guava</artifactId><version>33.2.0-jre</version></dependency>
    <dependency><groupId>org.apache.commons</groupId>
      <artifactId>commons-text</artifactId><version>1.12.0</version></dependency>
    <dependency><groupId>com.fasterxml.jackson.core</groupId>
      <artifactId>jackson-databind</artifactId><version>2.17.1</version></dependency>
    <dependency><groupId>org.junit.jupiter</groupId>
      <artifactId>junit-jupiter</artifactId><version>5.10.2</version>
      <scope>test</scope></dependency>
  </dependencies>
</project>
"""

# Large wheels (numpy, pandas) beside the shared set with its sdist (bitarray).
PIP_REQUIREMENTS = workloads.PIP_REQUIREMENTS + "numpy\npandas\n"

C_FILES = 80


def c_source(i):
    """A C file with enough code for the compiler to take a noticeable time."""
    funcs = []
    for f in range(12):
        funcs.append(f"""
static long f{i}_{f}(long n) {{
  long acc = {i * 31 + f};
  for (long k = 0; k < n; ++k) {{
    acc = (acc * 6364136223846793005L + {f + 1}) ^ (acc >> 7);
    if ((acc & 15) == {f % 16}) acc += k * {i + 3};
    switch (acc & 3) {{ case 0: acc ^= 0x5bd1e995; break; case 1: acc += k; break;
                        case 2: acc -= {f}; break; default: acc = ~acc; }}
  }}
  return acc;
}}""")
    calls = " + ".join(f"f{i}_{f}(n)" for f in range(12))
    return "\n".join(funcs) + f"\nlong unit{i}(long n) {{ return {calls}; }}\n"


# ---------------------------------------------------------------------------------------------
# One class per ecosystem: prepare() once (untimed), run() per variant.


class Npm:
    name, frontend = "npm", "npm"

    def __init__(self, bench):
        self.bench = bench
        self.upstream = upstreams.npm_registry()

    def config(self):
        return f"npm:\n  upstream: {self.upstream}\n"

    def prepare(self, tmp):
        b = self.bench
        self.lockdir = pathlib.Path(tmp) / "npm-real-lock"
        self.lockdir.mkdir(parents=True)
        (self.lockdir / "package.json").write_text(json.dumps({
            "name": "buildcache-npm-real", "version": "1.0.0", "private": True,
            "dependencies": NPM_DEPENDENCIES}))
        b.run(["npm", "install", "--package-lock-only", "--registry", self.upstream,
               "--cache", self.lockdir / "cache"], env=b.npm_env(self.lockdir), cwd=self.lockdir)
        lock = json.loads((self.lockdir / "package-lock.json").read_text())
        return f"`npm ci` of {sum(1 for p in lock['packages'] if p)} packages"

    def run(self, work, agent_url):
        b = self.bench
        project = work / "project"
        project.mkdir(parents=True)
        for f in ("package.json", "package-lock.json"):
            shutil.copy(self.lockdir / f, project)
        registry = f"{agent_url}/npm/" if agent_url else self.upstream
        secs, _ = b.run(["npm", "ci", "--registry", registry, "--cache", work / "cache"],
                        env=b.npm_env(work), cwd=project)
        return secs


class Go:
    name, frontend = "go", "goproxy"

    def __init__(self, bench):
        self.bench = bench
        self.up = bench.go_upstream()

    def config(self):
        up = self.up
        return (f"goproxy:\n  upstream: {up['proxy']}\n  sumdb:\n    name: {up['name']}\n"
                f"    upstream: {up['sumdb_url']}\n")

    def env(self, work, goproxy, gosumdb):
        env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
        env.update(GOENV="off", GOPROXY=goproxy, GOSUMDB=gosumdb, GONOSUMDB="", GOPRIVATE="",
                   GONOPROXY="", GOINSECURE="", GOFLAGS="-mod=mod -modcacherw",
                   GOTOOLCHAIN="local", GOPATH=str(work / "gopath"),
                   GOMODCACHE=str(work / "modcache"), GOCACHE=str(work / "gocache"),
                   HOME=str(work))
        return env

    def prepare(self, tmp):
        b = self.bench
        self.src = pathlib.Path(tmp) / "go-real-src"
        self.src.mkdir(parents=True)
        imports = "\n".join(f'\t_ "{p}"' for p in GO_IMPORTS)
        (self.src / "main.go").write_text(f"package main\n\nimport (\n{imports}\n)\n\n"
                                          "func main() {}\n")
        scratch = pathlib.Path(tmp) / "go-real-tidy"  # outside the module: go walks its tree
        env = self.env(scratch, self.up["proxy"], self.up["gosumdb"])
        b.run(["go", "mod", "init", "example.com/realbench"], env=env, cwd=self.src)
        b.run(["go", "mod", "tidy"], env=env, cwd=self.src)
        zips = len(list((scratch / "modcache").glob("cache/download/**/@v/*.zip")))
        shutil.rmtree(scratch, ignore_errors=True)
        return f"`go mod download` + `go list -deps .` of {zips} module zips (go.sum from tidy)"

    def run(self, work, agent_url):
        b = self.bench
        project = work / "project"
        shutil.copytree(self.src, project)
        if agent_url:
            env = self.env(work, f"{agent_url}/gomod",
                           f"{self.up['key']} {agent_url}/gomod/sumdb/{self.up['name']}")
        else:
            env = self.env(work, self.up["proxy"], self.up["gosumdb"])
        download, _ = b.run(["go", "mod", "download"], env=env, cwd=project)
        listed, _ = b.run(["go", "list", "-deps", "."], env=env, cwd=project)
        return download + listed


class Cargo:
    name, frontend = "cargo", "cargo"

    def __init__(self, bench):
        import cargo_cold  # noqa: PLC0415  (it imports package_managers itself)
        self.cc = cargo_cold
        self.bench = bench
        self.upstream = upstreams.cargo_index()

    def config(self):
        return f"cargo:\n  upstream: sparse+{self.upstream}\n"

    def prepare(self, tmp):
        self.work = pathlib.Path(tmp) / "cargo-real"
        self.work.mkdir(parents=True)
        home = self.cc.fresh_home(self.work)
        p = self.cc.project(self.work)
        self.bench.run(["cargo", "generate-lockfile"], env=self.cc.cargo_env(home), cwd=p)
        self.lockfile = (p / "Cargo.lock").read_text()
        return f"`cargo fetch --locked` of {self.lockfile.count('[[package]]') - 1} crates"

    def run(self, work, agent_url):
        work.mkdir(parents=True, exist_ok=True)
        home = self.cc.fresh_home(work)
        p = self.cc.project(work, self.lockfile, agent_url)
        secs, _ = self.bench.run(["cargo", "fetch", "--locked"], env=self.cc.cargo_env(home),
                                 cwd=p)
        return secs


class Maven:
    name, frontend = "maven", "maven"

    def __init__(self, bench):
        self.bench = bench
        self.upstream = upstreams.maven_repository()

    def config(self):
        return f"maven:\n  upstream: {self.upstream}\n"

    def prepare(self, tmp):
        return "`mvn -B dependency:resolve` (Spring Boot web, Guava, Jackson, JUnit; plugins too)"

    def run(self, work, agent_url):
        work.mkdir(parents=True)
        (work / "pom.xml").write_text(MAVEN_POM)
        cmd = ["mvn", "-B", "-q", f"-Dmaven.repo.local={work / 'repo'}"]
        if agent_url:
            (work / "settings.xml").write_text(
                "<settings><mirrors><mirror><id>buildcache</id><mirrorOf>*</mirrorOf>"
                f"<url>{agent_url}/maven/</url></mirror></mirrors></settings>\n")
            (work / "global.xml").write_text("<settings/>\n")
            cmd += ["-s", work / "settings.xml", "-gs", work / "global.xml"]
        env = {k: v for k, v in os.environ.items() if k not in ("MAVEN_OPTS", "MAVEN_ARGS")}
        secs, _ = self.bench.run([*cmd, "dependency:resolve"], env=env, cwd=work)
        self.files = sum(1 for p in (work / "repo").rglob("*") if p.is_file())
        return secs


class Pip:
    name, frontend = "pip", "pypi"

    def __init__(self, bench):
        self.bench = bench
        self.upstream = upstreams.pypi_index()

    def config(self):
        return f"pypi:\n  upstream: {self.upstream}\n"

    def prepare(self, tmp):
        return ("`pip install -r` of the shared set (bitarray from its sdist) plus numpy and "
                "pandas (large wheels), fresh venv and pip cache")

    def run(self, work, agent_url):
        b = self.bench
        work.mkdir(parents=True)
        (work / "requirements.txt").write_text(PIP_REQUIREMENTS)
        env = workloads.pip_env()
        b.run([sys.executable, "-m", "venv", work / "venv"], env=env)
        index = f"{agent_url}/pypi/simple/" if agent_url else self.upstream
        secs, _ = b.run([work / "venv" / "bin" / "python", "-m", "pip", "install", "--cache-dir",
                         work / "pip-cache", "--index-url", index, "-r",
                         work / "requirements.txt"], env=env)
        return secs


class Ccache:
    name, frontend = "ccache", "httpcache"

    def __init__(self, bench):
        self.bench = bench

    def config(self):
        return ""

    def prepare(self, tmp):
        self.src = pathlib.Path(tmp) / "c-real-src"
        self.src.mkdir(parents=True)
        for i in range(C_FILES):
            (self.src / f"unit{i}.c").write_text(c_source(i))
        return (f"{C_FILES} C files compiled one after another with gcc -O2; direct = no "
                "ccache, cold/warm = ccache with an empty local cache and the agent as remote "
                "storage (CCACHE_REMOTE_ONLY)")

    def run(self, work, agent_url):
        src = work / "src"
        shutil.copytree(self.src, src)
        env = dict(os.environ)
        cmd = ["gcc"]
        if agent_url:
            env.update(CCACHE_DIR=str(work / "ccache"), CCACHE_REMOTE_STORAGE=f"{agent_url}/cache",
                       CCACHE_REMOTE_ONLY="true", CCACHE_NOHASHDIR="1",
                       CCACHE_BASEDIR=str(src))
            cmd = ["ccache", "gcc"]
        total = 0.0
        for i in range(C_FILES):
            secs, _ = self.bench.run([*cmd, "-O2", "-c", f"unit{i}.c", "-o", f"unit{i}.o"],
                                     env=env, cwd=src)
            total += secs
        return total


WORKLOADS = {"npm": Npm, "go": Go, "cargo": Cargo, "maven": Maven, "pip": Pip, "ccache": Ccache}

# ---------------------------------------------------------------------------------------------
# Running and reporting


ORDERS = (("direct", "cold", "warm"), ("cold", "warm", "direct"), ("cold", "direct", "warm"))


def cpu_seconds(pid):
    """User plus system CPU seconds a process has used (/proc/PID/stat)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def agent_view(agent, frontend):
    """{req_s, req_n, up_s, up_n} of one front end, from the agent's /metrics, and cpu_s, the
    agent process's CPU seconds."""
    with urllib.request.urlopen(f"{agent.url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    v = {"req_s": 0.0, "req_n": 0, "up_s": 0.0, "up_n": 0, "cpu_s": cpu_seconds(agent.proc.pid)}
    names = {"buildcache_request_duration_seconds_sum{": "req_s",
             "buildcache_request_duration_seconds_count{": "req_n",
             "buildcache_upstream_request_duration_seconds_sum{": "up_s",
             "buildcache_upstream_request_duration_seconds_count{": "up_n"}
    for line in text.splitlines():
        if f'frontend="{frontend}"' not in line:
            continue
        for prefix, key in names.items():
            if line.startswith(prefix):
                v[key] += float(line.rsplit(" ", 1)[1])
    return v


def minus(after, before):
    return {k: after[k] - before[k] for k in after}


def bench_real(bench, tmp, rounds, tools, log):
    """Runs the workloads; returns {tool: {"note": str, "rounds": [row, ...]}}. A workload that
    fails is logged and left out (the others still run); each one's table is printed to stderr
    as soon as it is done."""
    out = {}
    for tool in tools:
        try:
            out[tool] = bench_one(bench, tmp, rounds, tool, log)
        except Exception as e:  # noqa: BLE001  (report what ran)
            log(f"{tool} (real) FAILED: {str(e)[-2000:]}")
            continue
        log("\n" + report_real({tool: out[tool]}))
    return out


def bench_one(bench, tmp, rounds, tool, log):
    w = WORKLOADS[tool](bench)
    note = w.prepare(tmp)
    log(f"{tool} (real): {note}")
    rows = []
    for r in range(rounds):
        base = pathlib.Path(tmp) / f"{tool}-real{r}"
        # Warm needs the cold run before it; direct moves around them.
        order = ORDERS[r % len(ORDERS)]
        row = {}
        agent = None
        try:
            for variant in order:
                if variant == "direct":
                    row["direct"] = w.run(base / "direct", None)
                    continue
                if agent is None:
                    agent = bench.Agent(base / "agent", w.config())
                before = agent_view(agent, w.frontend)
                row[variant] = w.run(base / variant, agent.url)
                row[variant + "_view"] = minus(agent_view(agent, w.frontend), before)
        finally:
            if agent is not None:
                agent.stop()
        if tool == "maven":
            note = f"{w.prepare(tmp)}: {w.files} files in the local repository"
        log(f"{tool} (real) round {r + 1} ({'/'.join(order)}): direct {row['direct']:.1f} s, "
            f"cold {row['cold']:.1f} s, warm {row['warm']:.1f} s; cold agent "
            f"{row['cold_view']['req_s']:.2f} s over {row['cold_view']['req_n']:.0f} "
            f"requests, upstream {row['cold_view']['up_s']:.2f} s over "
            f"{row['cold_view']['up_n']:.0f}; agent CPU cold {row['cold_view']['cpu_s']:.2f} s, "
            f"warm {row['warm_view']['cpu_s']:.2f} s")
        rows.append(row)
        shutil.rmtree(base, ignore_errors=True)
    return {"note": note, "rounds": rows}


def report_real(results):
    lines = ["| tool | workload | direct s | cold s | warm s | cold / direct | warm / direct | "
             "cold: agent request s (n) | cold: upstream s (n) | cold: agent's own s "
             "(ms / request) | cold: agent CPU s | warm: agent request s (n) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    per_round = []
    for tool, res in results.items():
        rows = res["rounds"]

        def med(f, rows=rows):
            return statistics.median(f(r) for r in rows)

        cold_own = med(lambda r: r["cold_view"]["req_s"] - r["cold_view"]["up_s"])
        cold_n = med(lambda r: r["cold_view"]["req_n"])
        lines.append(
            f"| {tool} | {res['note']} | {med(lambda r: r['direct']):.1f} | "
            f"{med(lambda r: r['cold']):.1f} | {med(lambda r: r['warm']):.1f} | "
            f"{med(lambda r: r['cold'] / r['direct']):.2f} | "
            f"{med(lambda r: r['warm'] / r['direct']):.2f} | "
            f"{med(lambda r: r['cold_view']['req_s']):.2f} ({cold_n:.0f}) | "
            f"{med(lambda r: r['cold_view']['up_s']):.2f} "
            f"({med(lambda r: r['cold_view']['up_n']):.0f}) | "
            f"{cold_own:.2f} ({1000 * cold_own / max(cold_n, 1):.1f}) | "
            f"{med(lambda r: r['cold_view'].get('cpu_s', 0.0)):.2f} | "
            f"{med(lambda r: r['warm_view']['req_s']):.2f} "
            f"({med(lambda r: r['warm_view']['req_n']):.0f}) |")
        per_round.append(f"- {tool}: " + ", ".join(
            f"{r['direct']:.1f}/{r['cold']:.1f}/{r['warm']:.1f}" for r in rows))
    lines += ["", "Per round, direct / cold / warm s:", *per_round]
    return "\n".join(lines)
