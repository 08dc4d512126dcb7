#!/usr/bin/env bash
# Benchmark: HTTPS through the egress against the plain loopback archive mirror, serving
# the same hot files (already fetched) to 8 parallel keep-alive clients (wrk, -t2 -c8),
# measured in the same run. The egress side runs wrk inside a `reprobox run` job (the Debian
# test root; wrk and its libluajit bound in) against https://archive.archlinux.org (mapped
# by the job's /etc/hosts to the egress's 443 listener: TLS terminated with the run's
# certificate, answered under the `recorded` policy); every file is fetched once by curl in
# the same job first, so wrk's requests are answered from the store. The mirror side runs
# the host's wrk against `reprobox mirror` (plain HTTP, store hits). Two rounds each,
# alternating. Prints requests/s of each and the ratio (egress / mirror; target >= 0.80).
# A third side, nginx serving the same tree over TLS 1.3 (sendfile off, as TLS needs) to the
# host's wrk, shows what TLS itself costs on this machine: egress / nginx-TLS compares the
# egress with a TLS server known to be fast, on equal terms (both encrypt every byte, both
# clients decrypt it).
# Usage: benches/egress_vs_mirror.sh [SECONDS]   (default 10). Needs wrk, nginx, openssl;
# run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
command -v wrk >/dev/null || { echo "needs wrk (Debian wrk)" >&2; exit 3; }
command -v nginx >/dev/null || { echo "needs nginx (Debian nginx-light)" >&2; exit 3; }
command -v openssl >/dev/null || { echo "needs openssl" >&2; exit 3; }
if [ -z "${REPROBOX_BIN:-}" ]; then cargo build --release --quiet --bin reprobox; fi
bin=$(realpath "${REPROBOX_BIN:-target/release/reprobox}")
ROOT=$(bash scripts/debian-rootfs.sh)
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
HOST=archive.archlinux.org

# The same hot set as mirror_vs_nginx.sh: 16 files of 20 KiB to 4 MiB.
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
mkdir -p "$work/job"
lua=$work/job/paths.lua
{
  printf 'paths = {'
  for p in "${paths[@]}"; do printf '"%s",' "$p"; done
  printf '}\ni = 0\nrequest = function()\n  i = i + 1\n  return wrk.format("GET", paths[(i %% #paths) + 1])\nend\n'
} >"$lua"
printf '%s\n' "${paths[@]}" >"$work/job/paths.txt"
# wrk and the one library the Debian root lacks, for the job.
cp "$(command -v wrk)" "$work/job/wrk"
cp -L "$(ldd "$(command -v wrk)" | awk '/libluajit/ {print $3}')" "$work/job/"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The mirror: fill its store once (online, from the file:// tree), then measure hits.
mp=$(port)
"$bin" mirror --store "$work/mstore" --archive "file://$tree" --listen "127.0.0.1:$mp" --lock-out "$work/mirror.lock" >"$work/mirror.out" 2>"$work/mirror.err" &
pids+=($!)
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$mp${paths[0]}" -o /dev/null && break; sleep 0.1; done
for p in "${paths[@]}"; do
  cmp <(curl -fs "http://127.0.0.1:$mp$p") "$tree$p" || { echo "mirror served wrong bytes for $p" >&2; exit 1; }
done

check() { # wrk's output on stdin: fail on errors, print requests/s
  tee "$work/wrk.out" >&2
  if grep -q "Non-2xx\|Socket errors" "$work/wrk.out"; then echo "errors: the measurement is void" >&2; exit 1; fi
  awk '/Requests\/sec/ { print $2 }' "$work/wrk.out"
}
mirror() { wrk -t2 -c8 -d"${secs}s" -s "$lua" "http://127.0.0.1:$mp" | check; }
# The egress: one job per round; the job checks every file's bytes (which also makes the
# store hot), then runs wrk.
egress() {
  "$bin" run --rootfs "$ROOT" --read-only --store "$work/estore" \
    --egress "$HOST=file://$tree" --bind "$work/job:/mnt:ro" -- bash -c "
      set -e
      while read -r p; do curl -fsS https://$HOST\$p | sha256sum >/tmp/got; echo \$p >>/tmp/n; done </mnt/paths.txt
      LD_LIBRARY_PATH=/mnt /mnt/wrk -t2 -c8 -d${secs}s -s /mnt/paths.lua https://$HOST" 2>"$work/run.err" | check
}
# The egress serves the tree's bytes: one file compared end to end.
want=$(sha256sum <"$tree${paths[3]}")
got=$("$bin" run --rootfs "$ROOT" --read-only --store "$work/estore" --egress "$HOST=file://$tree" \
  -- curl -fsS "https://$HOST${paths[3]}" | sha256sum)
[ "$want" = "$got" ] || { echo "egress served wrong bytes" >&2; exit 1; }

# nginx over TLS 1.3: the same tree, a self-signed certificate (wrk does not verify),
# one worker per core, no access log.
np=$(port)
mkdir -p "$work/nginx"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$HOST" \
  -keyout "$work/nginx/key.pem" -out "$work/nginx/cert.pem" 2>/dev/null
cat >"$work/nginx/nginx.conf" <<NGINX
user root;
worker_processes auto;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server {
    listen 127.0.0.1:$np ssl;
    ssl_certificate $work/nginx/cert.pem;
    ssl_certificate_key $work/nginx/key.pem;
    ssl_protocols TLSv1.3;
    root $tree;
  }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
pids+=($!)
for _ in $(seq 50); do curl -kfs "https://127.0.0.1:$np${paths[0]}" -o /dev/null && break; sleep 0.1; done
cmp <(curl -kfs "https://127.0.0.1:$np${paths[3]}") "$tree${paths[3]}" || { echo "nginx served wrong bytes" >&2; exit 1; }
nginx_tls() { wrk -t2 -c8 -d"${secs}s" -s "$lua" "https://127.0.0.1:$np" | check; }

echo "== reprobox mirror (plain HTTP)" >&2
m1=$(mirror)
echo "== egress (HTTPS, in a job)" >&2
e1=$(egress)
echo "== egress (2)" >&2
e2=$(egress)
echo "== nginx (TLS 1.3)" >&2
n1=$(nginx_tls)
echo "== reprobox mirror (2)" >&2
m2=$(mirror)
echo "== nginx (TLS 1.3) (2)" >&2
n2=$(nginx_tls)
m=$(echo "($m1 + $m2) / 2" | bc -l)
e=$(echo "($e1 + $e2) / 2" | bc -l)
n=$(echo "($n1 + $n2) / 2" | bc -l)
printf 'hot set of %d files, 8 clients, %ss x2: mirror (HTTP) %.0f req/s, egress (HTTPS) %.0f req/s, nginx (HTTPS) %.0f req/s\n' "${#paths[@]}" "$secs" "$m" "$e" "$n"
printf 'ratio (egress / mirror): %.2f (target >= 0.80)\n' "$(echo "$e / $m" | bc -l)"
printf 'ratio (egress / nginx over TLS): %.2f; nginx over TLS / mirror: %.2f (what TLS costs here)\n' "$(echo "$e / $n" | bc -l)" "$(echo "$n / $m" | bc -l)"
