#!/usr/bin/env bash
# Benchmark: the reprobox mirror serving a hot package set (already in the store) to 8
# parallel keep-alive clients vs nginx serving the same files from disk, measured with wrk in
# the same run. Prints requests/s and transfer rate of each and the ratio
# (mirror / nginx: >= 0.90 meets the "within 10%" target).
# Usage: benches/mirror_vs_nginx.sh [SECONDS]   (default 10). Needs nginx and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
command -v nginx >/dev/null || { echo "needs nginx (Debian nginx-light)" >&2; exit 3; }
command -v wrk >/dev/null || { echo "needs wrk (Debian wrk)" >&2; exit 3; }
cargo build --release --quiet
bin=$PWD/target/release/reprobox
work=$(mktemp -d)
chmod 755 "$work" # nginx workers must be able to read the tree
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# A hot package set shaped like a package install: sizes from 20 KiB to 4 MiB.
tree=$work/tree
paths=()
i=0
for kib in 20 40 80 120 200 300 500 800 1200 2000 4096 60 150 250 700 1000; do
  i=$((i + 1))
  d=$tree/repos/2026/05/16/core/os/x86_64
  mkdir -p "$d"
  head -c "$((kib * 1024))" /dev/urandom >"$d/pkg$i-1.0-1-x86_64.pkg.tar.zst"
  paths+=("/repos/2026/05/16/core/os/x86_64/pkg$i-1.0-1-x86_64.pkg.tar.zst")
done
lua=$work/paths.lua
{
  printf 'paths = {'
  for p in "${paths[@]}"; do printf '"%s",' "$p"; done
  printf '}\ni = 0\nrequest = function()\n  i = i + 1\n  return wrk.format("GET", paths[(i %% #paths) + 1])\nend\n'
} >"$lua"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# nginx: same files, sendfile on, no access log, worker per core.
np=$(port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
user root;
worker_processes auto;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server { listen 127.0.0.1:$np; root $tree; }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
pids+=($!)

# The mirror: fill the store once (online, from the file:// tree), then measure hits.
mp=$(port)
"$bin" mirror --store "$work/store" --archive "file://$tree" --listen "127.0.0.1:$mp" --lock-out "$work/mirror.lock" >"$work/mirror.out" 2>"$work/mirror.err" &
pids+=($!)
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$np${paths[0]}" -o /dev/null && curl -fs "http://127.0.0.1:$mp${paths[0]}" -o /dev/null && break; sleep 0.1; done
for p in "${paths[@]}"; do
  cmp <(curl -fs "http://127.0.0.1:$mp$p") "$tree$p" || { echo "mirror served wrong bytes for $p" >&2; exit 1; }
  cmp <(curl -fs "http://127.0.0.1:$np$p") "$tree$p" || { echo "nginx served wrong bytes for $p" >&2; exit 1; }
done

run() {
  wrk -t2 -c8 -d"${secs}s" -s "$lua" "$1" >"$work/wrk.out"
  cat "$work/wrk.out" >&2
  if grep -q "Non-2xx" "$work/wrk.out"; then echo "error responses: the measurement is void" >&2; exit 1; fi
  awk '/Requests\/sec/ { print $2 }' "$work/wrk.out"
}
echo "== nginx" >&2
n1=$(run "http://127.0.0.1:$np")
echo "== reprobox mirror" >&2
m1=$(run "http://127.0.0.1:$mp")
# Second round in the other order, to even out warm-up and neighbours.
echo "== reprobox mirror (2)" >&2
m2=$(run "http://127.0.0.1:$mp")
echo "== nginx (2)" >&2
n2=$(run "http://127.0.0.1:$np")
n=$(echo "($n1 + $n2) / 2" | bc -l)
m=$(echo "($m1 + $m2) / 2" | bc -l)
printf 'hot set of %d packages, 8 clients, %ss x2: nginx %.0f req/s, reprobox mirror %.0f req/s\n' "${#paths[@]}" "$secs" "$n" "$m"
printf 'ratio (mirror / nginx): %.2f (target >= 0.90)\n' "$(echo "$m / $n" | bc -l)"
