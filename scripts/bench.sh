#!/usr/bin/env bash
# Benchmarks and standard load runs of the callback fleet; results go to $BENCH_OUT
# (default /tmp/refonte-bench/<date>), with a summary printed at the end.
#
#   scripts/bench.sh            micro benchmarks, whole-delivery benchmark + CPU profile, load runs
#                               (the fleet, then the reference loop: this machine's ceiling)
#   scripts/bench.sh micro      only the go test benchmarks
#   scripts/bench.sh load       only the load runs
#   scripts/bench.sh soak       a soak: SOAK_RATE/s (3000) for SOAK_DURATION (10m), memory by minute
#   scripts/bench.sh scheduler  the worker's scheduler against the reference loop (net/http and
#                               fasthttp), interleaved, default settings, SCHED_REPEAT (3) rounds of:
#                               20,000 to one host, 40,000 to 16 hosts, a 40,000 burst to one host
#                               with a second customer at 100/s; then a 100,000 backlog to one host
#                               (worker peak RSS); prints the ratios per round and their medians
#   scripts/bench.sh memory     what a task costs to keep: Redis used_memory growth over MEMORY_TASKS
#                               (20000) delivered ~450-byte events, divided by their number, on a
#                               redis-server of its own with the default configuration (always
#                               private: PRIVATE_REDIS is forced); the report shows nats-server's memory too
#   scripts/bench.sh streamcost what holding STREAM_MESSAGES (2500000) events of ~450 bytes costs
#                               nats-server: disk, RSS, random direct gets, restart time
#
# Needs Redis at $REDIS_URL (default redis://127.0.0.1:6379/0; keys go under a prefix of each
# run's own and are deleted afterwards), or PRIVATE_REDIS=1 to start a redis-server of its own on
# a free loopback port (its CPU then belongs to the run alone). Everything runs on loopback.
# With perf installed, the max-rate run records a call-graph profile of the workers, nats-server
# and Redis (PERF=0 skips it). Knobs (environment):
#   BENCH_COUNT=3          -count of the micro benchmarks
#   DELIVERY_N=20000       callbacks per whole-delivery benchmark run
#   LOAD_FLAGS="..."       flags for every load run (default: 16 customers on 16 receiver hosts)
#   MAX_DURATION=30s       the max-rate run;  RATE=5000 RATE_DURATION=20s  the fixed-rate run
#   PARKED=100000          callbacks parked before the parked run (0 skips it)
#   STATUS_READS_EVERY=10  in the fixed-rate run, customers read 1 callback's status in this many
#                          through the gateway (its cost is in the report with the others')
#   REFERENCE=1            also run the bare reference loop (services/loadtest/bareloop, fasthttp)
#                          at full speed and at $RATE/s: this machine's ceiling, for the ratio
#                          fleet / reference (0 skips it)
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
if [ "$what" = memory ]; then PRIVATE_REDIS=1; fi
OUT=${BENCH_OUT:-${TMPDIR:-/tmp}/refonte-bench/$(date +%Y%m%d-%H%M%S)}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
PRIVATE_REDIS=${PRIVATE_REDIS:-0}
PERF=${PERF:-1}
BENCH_COUNT=${BENCH_COUNT:-3}
DELIVERY_N=${DELIVERY_N:-20000}
LOAD_FLAGS=${LOAD_FLAGS:--customers 16 -hosts 16}
MAX_DURATION=${MAX_DURATION:-30s}
RATE=${RATE:-5000}
RATE_DURATION=${RATE_DURATION:-20s}
PARKED=${PARKED:-100000}
REFERENCE=${REFERENCE:-1}
STATUS_READS_EVERY=${STATUS_READS_EVERY:-10}
mkdir -p "$OUT/bin"

if [ "$PRIVATE_REDIS" = 1 ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
  redis_pid=$!
  trap 'kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null' EXIT
  REDIS_URL=redis://127.0.0.1:$port/0
  until redis-cli -p "$port" ping >/dev/null 2>&1; do
    kill -0 "$redis_pid" || { cat "$OUT/redis.log"; exit 1; }
    sleep 0.1
  done
fi
export TEST_REDIS_URL=$REDIS_URL

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "$(free -g | awk '/Mem:/{print $2}') GB, $(go version | cut -d' ' -f3), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== results in $OUT"

micro() {
  echo "== micro benchmarks (count $BENCH_COUNT)"
  go test -run '^$' -bench . -benchmem -count "$BENCH_COUNT" \
    ./pkg/event ./pkg/signing ./pkg/status ./pkg/webhook | tee "$OUT/micro.txt"
  echo "== whole delivery: $DELIVERY_N callbacks per run, NATS in-process, Redis $REDIS_URL"
  go test -run '^$' -bench 'Delivery' -benchmem -benchtime "${DELIVERY_N}x" -count "$BENCH_COUNT" \
    ./services/worker/internal/worker | tee "$OUT/delivery.txt"
  echo "== CPU profile of the whole delivery (log_warn, $((DELIVERY_N * 2)) callbacks)"
  go test -run '^$' -bench 'Delivery/log_warn' -benchtime "$((DELIVERY_N * 2))x" \
    -cpuprofile "$OUT/delivery.cpu.pprof" -o "$OUT/bin/worker.test" ./services/worker/internal/worker >/dev/null
  go tool pprof -top -nodecount 25 "$OUT/bin/worker.test" "$OUT/delivery.cpu.pprof" 2>/dev/null |
    tee "$OUT/delivery.flat.txt" | sed -n '1,35p'
  go tool pprof -top -cum -nodecount 40 -focus 'worker\.\(\*Worker\)' "$OUT/bin/worker.test" \
    "$OUT/delivery.cpu.pprof" 2>/dev/null | tee "$OUT/delivery.cum.txt" | sed -n '1,50p'
}

loadruns() {
  echo "== building the load tool, the worker and nats-server"
  go build -o "$OUT/bin/loadtest" ./services/loadtest
  go build -o "$OUT/bin/worker" ./services/worker
  go build -o "$OUT/bin/bareloop" ./services/loadtest/bareloop
  go build -o "$OUT/bin/gateway" ./services/gateway
  go build -o "$OUT/bin/nats-server" github.com/nats-io/nats-server/v2
  # nats-server runs as its own process so its CPU and memory are measured apart.
  # shellcheck disable=SC2206
  common=(-worker-bin "$OUT/bin/worker" -gateway-bin "$OUT/bin/gateway" -nats-bin "$OUT/bin/nats-server" -redis-url "$REDIS_URL" $LOAD_FLAGS)
  lt() { "$OUT/bin/loadtest" "${common[@]}" "$@"; }

  perf=()
  if [ "$PERF" = 1 ] && command -v perf >/dev/null; then perf=(-perf "$OUT/max.perf.data"); fi
  echo "== load: as fast as the fleet takes it, $MAX_DURATION"
  lt -label "max" -rate 0 -duration "$MAX_DURATION" "${perf[@]}" -json "$OUT/max.json" | tee "$OUT/max.txt"
  if [ ${#perf[@]} -gt 0 ] && [ -s "$OUT/max.perf.data" ]; then
    {
      echo "-- CPU by process and binary (kernel = syscalls, TCP on loopback, scheduling)"
      perf report -i "$OUT/max.perf.data" --stdio --no-children --sort comm,dso -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -12 || true
      echo "-- worker: functions by cumulative share of all samples"
      perf report -i "$OUT/max.perf.data" --stdio --children --comm worker --sort symbol -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | grep -v '\[k\]' | head -45 || true
    } >"$OUT/max.perf.txt"
    sed -n '1,60p' "$OUT/max.perf.txt"
  fi
  echo "== load: $RATE/s for $RATE_DURATION; customers read the status of 1 callback in $STATUS_READS_EVERY through the gateway"
  lt -label "rate$RATE" -rate "$RATE" -duration "$RATE_DURATION" -status-reads "$(awk "BEGIN{print 1/$STATUS_READS_EVERY}")" \
    -json "$OUT/rate.json" | tee "$OUT/rate.txt"
  echo "== load: one customer endpoint (one host), worker defaults, $RATE/s for $RATE_DURATION"
  "$OUT/bin/loadtest" -worker-bin "$OUT/bin/worker" -gateway-bin "$OUT/bin/gateway" -nats-bin "$OUT/bin/nats-server" -redis-url "$REDIS_URL" \
    -label "rate$RATE-one-host" -rate "$RATE" -duration "$RATE_DURATION" -json "$OUT/onehost.json" | tee "$OUT/onehost.txt"
  if [ "$PARKED" -gt 0 ]; then
    echo "== load: $PARKED callbacks parked for retry, then as fast as possible for $MAX_DURATION"
    lt -label "max-parked$PARKED" -parked "$PARKED" -rate 0 -duration "$MAX_DURATION" \
      -json "$OUT/parked.json" | tee "$OUT/parked.txt"
  fi
  refs=()
  if [ "$REFERENCE" = 1 ]; then
    # shellcheck disable=SC2086
    ref() { "$OUT/bin/loadtest" -reference fasthttp -worker-bin "$OUT/bin/bareloop" -gateway-bin "$OUT/bin/gateway" \
      -nats-bin "$OUT/bin/nats-server" -redis-url "$REDIS_URL" $LOAD_FLAGS "$@"; }
    echo "== reference loop (no signing, profile, claim or attempt log; fasthttp): as fast as it goes, $MAX_DURATION"
    # Under perf too when the fleet's max run was, so that both pay the same sampling cost.
    refperf=()
    if [ ${#perf[@]} -gt 0 ]; then refperf=(-perf "$OUT/ref-max.perf.data"); fi
    ref -label "reference-max" -rate 0 -duration "$MAX_DURATION" "${refperf[@]}" -json "$OUT/ref-max.json" | tee "$OUT/ref-max.txt"
    echo "== reference loop: $RATE/s for $RATE_DURATION"
    ref -label "reference-rate$RATE" -rate "$RATE" -duration "$RATE_DURATION" -json "$OUT/ref-rate.json" | tee "$OUT/ref-rate.txt"
    refs=("$OUT/ref-max.json" "$OUT/ref-rate.json")
  fi
  echo "== summary"
  "$OUT/bin/loadtest" -summarize "$OUT"/max.json "$OUT"/rate.json "$OUT"/onehost.json \
    $( [ "$PARKED" -gt 0 ] && echo "$OUT/parked.json" ) "${refs[@]}" | tee "$OUT/summary.txt"
}

soak() {
  go build -o "$OUT/bin/loadtest" ./services/loadtest
  go build -o "$OUT/bin/worker" ./services/worker
  go build -o "$OUT/bin/nats-server" github.com/nats-io/nats-server/v2
  echo "== soak: ${SOAK_RATE:-3000}/s for ${SOAK_DURATION:-10m} (Redis grows by ~0.5 KB per callback until the end)"
  # shellcheck disable=SC2086
  "$OUT/bin/loadtest" -worker-bin "$OUT/bin/worker" -nats-bin "$OUT/bin/nats-server" -redis-url "$REDIS_URL" $LOAD_FLAGS \
    -label "soak${SOAK_RATE:-3000}" -rate "${SOAK_RATE:-3000}" -duration "${SOAK_DURATION:-10m}" -sample 10s \
    -json "$OUT/soak.json" | tee "$OUT/soak.txt"
}

scheduler() {
  go build -o "$OUT/bin/loadtest" ./services/loadtest
  go build -o "$OUT/bin/worker" ./services/worker
  go build -o "$OUT/bin/bareloop" ./services/loadtest/bareloop
  go build -o "$OUT/bin/gateway" ./services/gateway
  go build -o "$OUT/bin/nats-server" github.com/nats-io/nats-server/v2
  base=(-gateway-bin "$OUT/bin/gateway" -nats-bin "$OUT/bin/nats-server" -redis-url "$REDIS_URL" -rate 0 -duration 0)
  fleet() { "$OUT/bin/loadtest" -worker-bin "$OUT/bin/worker" "${base[@]}" "$@"; }
  # The reference loop with net/http (the naive loop the targets are set against) and with
  # fasthttp (the worker's own client: the stricter ceiling).
  loop() { "$OUT/bin/loadtest" -reference "$1" -worker-bin "$OUT/bin/bareloop" "${base[@]}" "${@:2}"; }
  one=(-count 20000 -backlog 20000)
  sixteen=(-customers 16 -hosts 16 -count 40000 -backlog 20000)
  for i in $(seq "${SCHED_REPEAT:-3}"); do
    echo "== round $i: one host, 20,000; 16 hosts, 40,000 (loop net/http, loop fasthttp, fleet); a 40,000 burst"
    for load in one sixteen; do
      if [ "$load" = one ]; then args=("${one[@]}"); else args=("${sixteen[@]}"); fi
      loop net/http -label "loop-nethttp-$load-$i" "${args[@]}" -json "$OUT/loop-nethttp-$load-$i.json" >"$OUT/loop-nethttp-$load-$i.txt" 2>&1
      loop fasthttp -label "loop-fasthttp-$load-$i" "${args[@]}" -json "$OUT/loop-fasthttp-$load-$i.json" >"$OUT/loop-fasthttp-$load-$i.txt" 2>&1
      fleet -label "fleet-$load-$i" "${args[@]}" -json "$OUT/fleet-$load-$i.json" >"$OUT/fleet-$load-$i.txt" 2>&1
    done
    # A 40,000 burst to one host while a second customer publishes 100/s to an endpoint of its own.
    fleet -label "burst-$i" -count 40000 -backlog 40000 -side-rate 100 -json "$OUT/burst-$i.json" >"$OUT/burst-$i.txt" 2>&1
  done
  echo "== a 100,000 backlog to one host (worker peak RSS)"
  fleet -label backlog100k -count 100000 -backlog 100000 -drain 3m -json "$OUT/backlog.json" >"$OUT/backlog.txt" 2>&1
  echo "== summary: callbacks/s from the first publish to the last delivery"
  python3 - "$OUT" <<'PY'
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
runs = {}
for f in sorted(out.glob("*.json")):
    r = json.loads(f.read_text())
    if "settings" not in r:
        continue
    runs[f.stem] = r
    rss = max((p["peak_rss_bytes"] for p in r["processes"] if p["name"].startswith("worker-")), default=0)
    side = r.get("side")
    extra = f', second customer p99 {side["latency"]["p99_ms"]:.0f} ms (n {side["latency"]["n"]})' if side else ""
    print(f'{f.stem:24} {r["overall_per_sec"]:8.0f}/s  delivered {r["delivered"]:6}  dup {r["duplicates"]} lost {r["lost"]}  '
          f'worker peak RSS {rss/1e6:.0f} MB{extra}')
rounds = sorted({k.rsplit("-", 1)[1] for k in runs if k.startswith("fleet-one-")})
def ratios(num, den):
    got = [runs[num % i]["overall_per_sec"] / runs[den % i]["overall_per_sec"] for i in rounds
           if num % i in runs and den % i in runs]
    return f'median {statistics.median(got):.2f} ({", ".join(f"{x:.2f}" for x in got)})' if got else "no runs"
print("== ratios, same round (target: one host >= 0.8, 16 hosts >= 1.0, burst drain >= 0.8 of the loop's one-host rate)")
for ref in ("nethttp", "fasthttp"):
    print(f"against the {ref} loop: one host {ratios('fleet-one-%s', f'loop-{ref}-one-%s')}; "
          f"16 hosts {ratios('fleet-sixteen-%s', f'loop-{ref}-sixteen-%s')}; "
          f"burst drain {ratios('burst-%s', f'loop-{ref}-one-%s')}")
p99 = [runs[f"burst-{i}"]["side"]["latency"]["p99_ms"] for i in rounds if f"burst-{i}" in runs]
print(f"second customer's p99 during the burst (target < 1000 ms): {', '.join(f'{x:.0f}' for x in p99)} ms")
PY
}

memory() {
  go build -o "$OUT/bin/loadtest" ./services/loadtest
  go build -o "$OUT/bin/worker" ./services/worker
  go build -o "$OUT/bin/gateway" ./services/gateway
  go build -o "$OUT/bin/nats-server" github.com/nats-io/nats-server/v2
  n=${MEMORY_TASKS:-20000}
  echo "== memory: $n callbacks of ~450-byte events; Redis $(redis-cli -u "$REDIS_URL" info server | grep -m1 redis_version | tr -d '\r')," \
    "hash-max-listpack-value $(redis-cli -u "$REDIS_URL" config get hash-max-listpack-value | tail -1)"
  # shellcheck disable=SC2086
  "$OUT/bin/loadtest" -worker-bin "$OUT/bin/worker" -gateway-bin "$OUT/bin/gateway" -nats-bin "$OUT/bin/nats-server" \
    -redis-url "$REDIS_URL" $LOAD_FLAGS -label "memory$n" -rate 0 -duration 0 -count "$n" -json "$OUT/memory.json" | tee "$OUT/memory.txt"
  python3 - "$OUT/memory.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
per = r["redis"]["bytes_per_task"]
print(f'== Redis per delivered task: {per:.0f} bytes ({r["redis"]["used_memory_delta_bytes"]} bytes over {r["delivered"]} tasks); '
      f'target at most 600: {"met" if per <= 600 else "NOT met"}')
PY
}

streamcost() {
  go build -o "$OUT/bin/nats-server" github.com/nats-io/nats-server/v2
  go build -o "$OUT/bin/streamcost" ./services/loadtest/streamcost
  echo "== stream cost: ${STREAM_MESSAGES:-2500000} messages of ~450 bytes"
  "$OUT/bin/streamcost" -bin "$OUT/bin/nats-server" -n "${STREAM_MESSAGES:-2500000}" 2>"$OUT/streamcost.nats.log" | tee "$OUT/streamcost.txt"
}

case $what in
  memory) memory ;;
  streamcost) streamcost ;;
  scheduler) scheduler ;;
  micro) micro ;;
  load) loadruns ;;
  soak) soak ;;
  all) micro; loadruns ;;
  *) echo "usage: $0 [all|micro|load|soak|scheduler|memory|streamcost]" >&2; exit 2 ;;
esac
