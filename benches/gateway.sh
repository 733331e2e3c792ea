#!/usr/bin/env bash
# Load test of the MCP gateway, published in BENCHMARKS.md ("The gateway").
#
# Starts the upstream (benches/mcp_upstream.rs: a stateless MCP server on the gateway's own
# serving stack) and `mcp-hangar gateway` (release build, routes from a file: one remote
# MCPServer with an allow list and the default circuit breaker; `--auth none`: no cluster to
# review tokens) on loopback, both pinned to one core, and drives the same 1 KB `tools/call`
# (2026-07-28, with its MCP headers) through the gateway and directly to the upstream from
# another core with the open-loop load generator
# (benches/loadgen.rs). What the gateway adds is the difference between the two, measured in
# the same run, interleaved.
#
# Settings (environment): RATES (default 1000,5000), SECONDS_PER_RUN (10), REPEAT (3),
# SERVER_CORE (0), LOAD_CORE (1), OUT (a new directory under target/load), LOG (info: the
# gateway's access log, written to a file, as in production; warn turns it off).
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${RATES:-1000,5000}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
REPEAT=${REPEAT:-3}
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
LOG=${LOG:-info}
OUT=${OUT:-target/load/gateway-$(date -u +%Y%m%dT%H%M%SZ)}
GATEWAY_PORT=18090
ADMIN_PORT=18091
UPSTREAM_PORT=19090
BODY=benches/fixtures/tools-call-1k.json

. benches/common.sh

echo "==> build (release)"
cargo build --release --locked --bin mcp-hangar --example mcp_upstream --example loadgen

describe_machine "gateway log level: $LOG"

cat >"$OUT/routes.yaml" <<YAML
apiVersion: mcp-hangar.io/v1alpha1
kind: MCPServer
metadata: {name: echo, namespace: bench}
spec:
  mode: remote
  endpoint: http://127.0.0.1:$UPSTREAM_PORT/mcp
  tools: {allowList: [echo]}
YAML

echo "==> upstream and gateway on core $SERVER_CORE"
taskset -c "$SERVER_CORE" target/release/examples/mcp_upstream --addr "127.0.0.1:$UPSTREAM_PORT" \
  2>"$OUT/upstream.log" &
upstream_pid=$!
pids+=("$upstream_pid")
RUST_LOG=$LOG taskset -c "$SERVER_CORE" target/release/mcp-hangar gateway ${GATEWAY_FLAGS:-} \
  --routes-file "$OUT/routes.yaml" --addr "127.0.0.1:$GATEWAY_PORT" --admin-addr "127.0.0.1:$ADMIN_PORT" \
  --log-format json --auth none 2>"$OUT/gateway.log" >"$OUT/gateway.out" &
gateway_pid=$!
pids+=("$gateway_pid")
await_ready "$ADMIN_PORT" "$UPSTREAM_PORT"
sleep 1

echo "==> load generator on core $LOAD_CORE: rates $RATES, $REPEAT x ${SECONDS_PER_RUN}s"
taskset -c "$LOAD_CORE" target/release/examples/loadgen --plain --new-connections false \
  --target "gateway=127.0.0.1:$GATEWAY_PORT=$gateway_pid=/servers/bench/echo/mcp" \
  --target "direct=127.0.0.1:$UPSTREAM_PORT=$upstream_pid=/mcp" \
  --header "accept: application/json, text/event-stream" \
  --header "mcp-protocol-version: 2026-07-28" --header "mcp-method: tools/call" --header "mcp-name: echo" \
  --body "$BODY" --rates "$RATES" --seconds "$SECONDS_PER_RUN" --repeat "$REPEAT" \
  --json "$OUT/runs.json" | tee "$OUT/summary.md"

echo "==> results in $OUT"
