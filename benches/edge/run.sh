#!/usr/bin/env bash
# The edge, side by side: nginx as a plain reverse proxy, HAProxy verifying the JWT
# (`jwt_verify`, RS256, iss/aud/exp checked), and gatekeeper (public route, RS256 with the
# token cache on, RS256 with it off), all in front of the same nginx upstream answering
# `200 ok`, all on loopback, each proxy limited to one worker. Prints req/s and p99 latency
# with their ratios to nginx and to HAProxy. See benches/README.md ("The edge").
#
# Usage: benches/edge/run.sh [--rounds N] [--seconds S] [--connections C] [--only NAME...]
#                            [--baseline BINARY]
# --baseline adds the rows of another gatekeeper binary (e.g. an earlier build), measured in
# the same rounds, so a change's effect is a ratio taken on the same machine at the same time.
# It installs nothing: without nginx, haproxy or wrk it stops and names
#   apt-get install haproxy nginx wrk
set -euo pipefail

ROUNDS=3
SECONDS_PER_RUN=5
CONNECTIONS=32
ONLY=()
BASELINE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --baseline) BASELINE="$2"; shift 2 ;;
    --only) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do ONLY+=("$1"); shift; done ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

missing=()
for tool in nginx haproxy wrk openssl curl; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]}" >&2
  echo "install them first (Debian/Ubuntu): apt-get install haproxy nginx wrk" >&2
  exit 1
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KEYS="$ROOT/tests/fixtures/keys"
WORK=$(mktemp -d /tmp/gatekeeper-edge.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

UPSTREAM=18101 NGINX_PROXY=18102 HAPROXY_PORT=18103 GK_CACHE=18104 GK_NOCACHE=18105
BASE_CACHE=18106 BASE_NOCACHE=18107
ISSUER="https://idp.example.test" AUDIENCE="api://orders"

echo "building gatekeeper (release)..." >&2
(cd "$ROOT" && cargo build --release -p gatekeeper --quiet)
GATEKEEPER="${CARGO_TARGET_DIR:-$ROOT/target}/release/gatekeeper"

# The RS256 token, signed with the committed test key rsa-1 by openssl (not by our code).
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
header=$(printf '{"alg":"RS256","typ":"JWT","kid":"rsa-1"}' | b64url)
payload=$(printf '{"iss":"%s","aud":"%s","sub":"bench-user","roles":["clerk"],"iat":%d,"exp":%d}' \
  "$ISSUER" "$AUDIENCE" "$now" $((now + 3600)) | b64url)
signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign "$KEYS/rsa-1.key.pem" -binary | b64url)
TOKEN="$header.$payload.$signature"
# The same token with one signature character changed.
last=${TOKEN: -2:1}
if [ "$last" = "A" ]; then swap=B; else swap=A; fi
TAMPERED="${TOKEN:0:${#TOKEN}-2}$swap${TOKEN: -1}"

cat >"$WORK/upstream.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/upstream.pid;
error_log $WORK/upstream.err warn;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$UPSTREAM backlog=4096;
    location / { return 200 "ok\n"; }
  }
}
CONF

cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 100000000;
  upstream backend {
    server 127.0.0.1:$UPSTREAM;
    keepalive 64;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:$NGINX_PROXY backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF

cat >"$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend edge
  bind 127.0.0.1:$HAPROXY_PORT
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
  http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('\$.iss')
  http-request set-var(txn.aud) var(txn.bearer),jwt_payload_query('\$.aud')
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 unless { var(txn.alg) -m str RS256 }
  http-request deny deny_status 401 unless { var(txn.iss) -m str $ISSUER }
  http-request deny deny_status 401 unless { var(txn.aud) -m str $AUDIENCE }
  http-request deny deny_status 401 unless { var(txn.exp),sub(txn.now) -m int gt 0 }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"$KEYS/rsa-1.pub.pem") -m int 1 }
  default_backend upstream
backend upstream
  http-reuse always
  server up 127.0.0.1:$UPSTREAM
CONF

gatekeeper_config() { # port, cache on/off
  cat <<CONF
listen = "127.0.0.1:$1"

[cache]
enabled = $2

[[issuer]]
issuer = "$ISSUER"
audiences = ["$AUDIENCE"]
algorithms = ["RS256"]
jwks_file = "$KEYS/jwks.json"

[[route]]
path = "/public/{*rest}"
upstream = "http://127.0.0.1:$UPSTREAM"
auth = "public"

[[route]]
path = "/api/{*rest}"
upstream = "http://127.0.0.1:$UPSTREAM"
auth = "required"
CONF
}
gatekeeper_config "$GK_CACHE" true >"$WORK/gatekeeper-cache.toml"
gatekeeper_config "$GK_NOCACHE" false >"$WORK/gatekeeper-nocache.toml"
gatekeeper_config "$BASE_CACHE" true >"$WORK/baseline-cache.toml"
gatekeeper_config "$BASE_NOCACHE" false >"$WORK/baseline-nocache.toml"

"$NGINX" -c "$WORK/upstream.conf" -e "$WORK/upstream.err" & PIDS+=($!)
"$NGINX" -c "$WORK/nginx.conf" -e "$WORK/nginx.err" & PIDS+=($!)
"$HAPROXY" -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 & PIDS+=($!)
TOKIO_WORKER_THREADS=1 RUST_LOG=warn "$GATEKEEPER" --config "$WORK/gatekeeper-cache.toml" >"$WORK/gk-cache.log" 2>&1 & PIDS+=($!)
TOKIO_WORKER_THREADS=1 RUST_LOG=warn "$GATEKEEPER" --config "$WORK/gatekeeper-nocache.toml" >"$WORK/gk-nocache.log" 2>&1 & PIDS+=($!)

PORTS=($UPSTREAM $NGINX_PROXY $HAPROXY_PORT $GK_CACHE $GK_NOCACHE)
if [ -n "$BASELINE" ]; then
  TOKIO_WORKER_THREADS=1 RUST_LOG=warn "$BASELINE" --config "$WORK/baseline-cache.toml" >"$WORK/base-cache.log" 2>&1 & PIDS+=($!)
  TOKIO_WORKER_THREADS=1 RUST_LOG=warn "$BASELINE" --config "$WORK/baseline-nocache.toml" >"$WORK/base-nocache.log" 2>&1 & PIDS+=($!)
  PORTS+=($BASE_CACHE $BASE_NOCACHE)
fi

wait_for() { # port
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$1/"; then return 0; fi
    sleep 0.1
  done
  echo "nothing answers on port $1; logs in $WORK" >&2
  for log in "$WORK"/*.err "$WORK"/*.log; do echo "== $log" >&2; cat "$log" >&2 || true; done
  exit 1
}
for port in "${PORTS[@]}"; do wait_for "$port"; done

# name | url | authorization (empty: none)
CONTENDERS=(
  "nginx-proxy|http://127.0.0.1:$NGINX_PROXY/api/orders|"
  "haproxy-jwt-rs256|http://127.0.0.1:$HAPROXY_PORT/api/orders|$TOKEN"
  "gatekeeper-public|http://127.0.0.1:$GK_CACHE/public/orders|"
  "gatekeeper-rs256-cache|http://127.0.0.1:$GK_CACHE/api/orders|$TOKEN"
  "gatekeeper-rs256-nocache|http://127.0.0.1:$GK_NOCACHE/api/orders|$TOKEN"
)
if [ -n "$BASELINE" ]; then
  CONTENDERS+=(
    "baseline-public|http://127.0.0.1:$BASE_CACHE/public/orders|"
    "baseline-rs256-cache|http://127.0.0.1:$BASE_CACHE/api/orders|$TOKEN"
    "baseline-rs256-nocache|http://127.0.0.1:$BASE_NOCACHE/api/orders|$TOKEN"
  )
fi

status() { # url [token]
  if [ -n "${2:-}" ]; then
    curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $2" "$1"
  else
    curl -s -o /dev/null -w '%{http_code}' "$1"
  fi
}
echo "checking every contender answers 200 (valid token) and 401 (tampered, none)..." >&2
for c in "${CONTENDERS[@]}"; do
  IFS='|' read -r name url token <<<"$c"
  got=$(status "$url" "$token")
  [ "$got" = 200 ] || { echo "$name: expected 200, got $got" >&2; exit 1; }
  if [ -n "$token" ]; then
    got=$(status "$url" "$TAMPERED")
    [ "$got" = 401 ] || { echo "$name: tampered token: expected 401, got $got" >&2; exit 1; }
    got=$(status "$url")
    case "$got" in 401) ;; *) echo "$name: no token: expected 401, got $got" >&2; exit 1 ;; esac
  fi
done

selected() {
  [ ${#ONLY[@]} -eq 0 ] && return 0
  for o in "${ONLY[@]}"; do [ "$o" = "$1" ] && return 0; done
  return 1
}

# wrk prints "Requests/sec: N" and, with --latency, "99% X" (us, ms or s).
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
    printf "%.3f", n }'
}
RESULTS="$WORK/results"
: >"$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
  for c in "${CONTENDERS[@]}"; do
    IFS='|' read -r name url token <<<"$c"
    selected "$name" || continue
    args=(-t1 "-c$CONNECTIONS" "-d${SECONDS_PER_RUN}s" --latency)
    [ -n "$token" ] && args+=(-H "Authorization: Bearer $token")
    out=$(wrk "${args[@]}" "$url")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    errors=$(awk '/Socket errors/ {print}' <<<"$out")
    [ -z "$non2xx" ] || { echo "$name: $non2xx non-2xx answers" >&2; exit 1; }
    echo "round $round  $name  ${rps} req/s  p99 ${p99} ${errors}" >&2
    echo "$name $rps $(to_ms "$p99")" >>"$RESULTS"
  done
done

median() { sort -n | awk '{a[NR] = $1} END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
value() { awk -v n="$1" -v col="$2" '$1 == n {print $col}' "$RESULTS" | median; }
nginx_rps=$(value nginx-proxy 2); nginx_p99=$(value nginx-proxy 3)
haproxy_rps=$(value haproxy-jwt-rs256 2)

echo
echo "wrk -t1 -c$CONNECTIONS, ${SECONDS_PER_RUN} s per run, median of $ROUNDS alternating rounds; one worker per proxy"
echo
echo "| contender | req/s | ÷ nginx | ÷ HAProxy jwt | p99 ms | p99 ÷ nginx |"
echo "|---|---|---|---|---|---|"
for c in "${CONTENDERS[@]}"; do
  IFS='|' read -r name _ _ <<<"$c"
  selected "$name" || continue
  rps=$(value "$name" 2); p99=$(value "$name" 3)
  awk -v n="$name" -v r="$rps" -v p="$p99" -v nr="${nginx_rps:-0}" -v np="${nginx_p99:-0}" -v hr="${haproxy_rps:-0}" 'BEGIN {
    printf "| %s | %.0f | %s | %s | %.2f | %s |\n", n, r,
      (nr > 0 ? sprintf("%.2f", r / nr) : "-"), (hr > 0 ? sprintf("%.2f", r / hr) : "-"),
      p, (np > 0 ? sprintf("%.2f", p / np) : "-") }'
done
