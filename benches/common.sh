# Shared by the load scripts (sourced): the child processes killed on exit, the machine
# description, and waiting until the servers answer. Expects OUT, SERVER_CORE and LOAD_CORE.

mkdir -p "$OUT"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# Writes the machine's description to $OUT/machine.txt, with any extra lines given.
describe_machine() {
  echo "==> machine"
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
    echo "memory: $(free -m | awk '/Mem:/ {print $2 " MiB"}')"
    echo "kernel: $(uname -sr)"
    echo "rustc: $(rustc --version)"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "servers' core: $SERVER_CORE, load generator core: $LOAD_CORE"
    for line in "$@"; do echo "$line"; done
  } | tee "$OUT/machine.txt"
}

# Waits (10 s at most) until the admin port answers /readyz and PORT accepts connections.
await_ready() {
  local admin=$1 port=$2
  for _ in $(seq 100); do
    if curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 \
      && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null
}
