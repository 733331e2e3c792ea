#!/usr/bin/env bash
# Load test of the webhook, published in BENCHMARKS.md.
#
# Starts `mcp-hangar serve` (release build, generated ECDSA P-256 certificate, shipped policy)
# and the floor (benches/floor.rs: the same TLS/HTTP stack answering a fixed allow) on
# loopback, both pinned to one core, and drives them from another core with the open-loop
# load generator (benches/loadgen.rs), then cross-checks the maximum rates with wrk.
#
# Settings (environment): RATES (default 1000,2000,5000), SECONDS_PER_RUN (10), REPEAT (3),
# SERVER_CORE (0), LOAD_CORE (1), OUT (a new directory under target/load), WRK (1: run the wrk
# cross-check when wrk is installed; installed with apt-get when running as root).
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${RATES:-1000,2000,5000}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
REPEAT=${REPEAT:-3}
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
WRK=${WRK:-1}
OUT=${OUT:-target/load/$(date -u +%Y%m%dT%H%M%SZ)}
HANGAR_PORT=18443
ADMIN_PORT=18080
FLOOR_PORT=19443
BODY=benches/fixtures/mcpserver-review.json

. benches/common.sh

echo "==> build (release)"
cargo build --release --locked --bin mcp-hangar --example floor --example loadgen

describe_machine

echo "==> certificates (ECDSA P-256)"
target/release/mcp-hangar certs generate --out "$OUT/certs" --san localhost --san 127.0.0.1 >/dev/null

echo "==> servers on core $SERVER_CORE"
RUST_LOG=warn taskset -c "$SERVER_CORE" target/release/mcp-hangar serve \
  --tls-mode files --tls-cert-file "$OUT/certs/tls.crt" --tls-key-file "$OUT/certs/tls.key" \
  --policy-source shipped --webhook-addr "127.0.0.1:$HANGAR_PORT" --admin-addr "127.0.0.1:$ADMIN_PORT" \
  --shutdown-delay 0s --log-format text 2>"$OUT/mcp-hangar.log" &
hangar_pid=$!
pids+=("$hangar_pid")
taskset -c "$SERVER_CORE" target/release/examples/floor \
  --addr "127.0.0.1:$FLOOR_PORT" --cert "$OUT/certs/tls.crt" --key "$OUT/certs/tls.key" 2>"$OUT/floor.log" &
floor_pid=$!
pids+=("$floor_pid")
await_ready "$ADMIN_PORT" "$FLOOR_PORT"

echo "==> load generator on core $LOAD_CORE: rates $RATES, $REPEAT x ${SECONDS_PER_RUN}s"
taskset -c "$LOAD_CORE" target/release/examples/loadgen \
  --target "mcp-hangar=127.0.0.1:$HANGAR_PORT=$hangar_pid" \
  --target "floor=127.0.0.1:$FLOOR_PORT=$floor_pid" \
  --body "$BODY" --rates "$RATES" --seconds "$SECONDS_PER_RUN" --repeat "$REPEAT" \
  --json "$OUT/runs.json" | tee "$OUT/summary.md"

if [ "$WRK" = 1 ]; then
  if ! command -v wrk >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y wrk >/dev/null 2>&1 || true
  fi
  if command -v wrk >/dev/null; then
    echo "==> wrk cross-check (closed loop, 1 thread, 32 connections, ${SECONDS_PER_RUN}s)" | tee "$OUT/wrk.txt"
    for mode in keep-alive close; do
      for target in "mcp-hangar $HANGAR_PORT" "floor $FLOOR_PORT"; do
        set -- $target
        rps=$(taskset -c "$LOAD_CORE" wrk -t1 -c32 -d"${SECONDS_PER_RUN}s" -s benches/post.lua \
          "https://127.0.0.1:$2/validate" -- "$BODY" "$mode" | awk '/Requests\/sec/ {print $2}')
        echo "wrk $mode $1: $rps req/s" | tee -a "$OUT/wrk.txt"
      done
    done
  fi
fi

echo "==> results in $OUT"
