#!/usr/bin/env bash
# Compares the bare HTTP server (bench_file_server: SendFile of files from a directory) with nginx
# serving the same files from the same disk, with wrk -t2 -c32 on loopback, nginx and the server
# alternating per size so background load hits both alike. The agent end to end (store included)
# is measured by bench/http_vs_nginx.py.
#   bench/http_server_vs_nginx.sh [BUILD_DIR] [SECONDS] [ROUNDS]
set -euo pipefail
build=${1:-build}
seconds=${2:-5}
rounds=${3:-2}
work=$(mktemp -d /var/tmp/bc-http-bench.XXXXXX)
chmod 755 "$work"  # nginx workers run as an unprivileged user when started as root
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/files"
for spec in 4KiB:4096 64KiB:65536 1MiB:1048576 64MiB:67108864; do
  head -c "${spec#*:}" /dev/urandom > "$work/files/${spec%%:*}"
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nginx_port=$(free_port)
cat > "$work/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
daemon off;
events { worker_connections 1024; }
http {
  sendfile on;
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$nginx_port; root $work/files; }
}
CONF
nginx -c "$work/nginx.conf" & pids+=($!)
bc_port=$(free_port)
mkfifo "$work/stdin"
"$build/bench/bench_file_server" "$work/files" "127.0.0.1:$bc_port" < "$work/stdin" > "$work/bc.out" &
pids+=($!)
exec 3> "$work/stdin"  # the server runs until this closes
sleep 1

run() {  # run URL -> "req/s bytes/s"
  local out
  out=$(wrk -t2 -c32 -d"${seconds}s" --timeout 10s "$1")
  if grep -q "Non-2xx" <<<"$out"; then echo "error responses from $1: $out" >&2; exit 1; fi
  python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
m = re.search(r"Transfer/sec:\s+([\d.]+)([KMGT]?B)", out)
mult = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}[m.group(2)]
print(rps, float(m.group(1)) * mult)
PY
}

printf "| size | nginx req/s | server req/s | ratio | nginx MB/s | server MB/s | ratio |\n|---|---|---|---|---|---|---|\n"
for size in 4KiB 64KiB 1MiB 64MiB; do
  n_rps=0 n_bps=0 b_rps=0 b_bps=0
  for _ in $(seq "$rounds"); do
    read -r r b < <(run "http://127.0.0.1:$nginx_port/$size")
    n_rps=$(awk "BEGIN{print $n_rps + $r}"); n_bps=$(awk "BEGIN{print $n_bps + $b}")
    read -r r b < <(run "http://127.0.0.1:$bc_port/$size")
    b_rps=$(awk "BEGIN{print $b_rps + $r}"); b_bps=$(awk "BEGIN{print $b_bps + $b}")
  done
  python3 -c "
nr, nb, br, bb = $n_rps, $n_bps, $b_rps, $b_bps
print(f'| $size | {nr/$rounds:,.0f} | {br/$rounds:,.0f} | {br/nr:.2f} | {nb/$rounds/1e6:,.1f} | {bb/$rounds/1e6:,.1f} | {bb/nb:.2f} |')"
done
