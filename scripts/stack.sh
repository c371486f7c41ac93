#!/usr/bin/env bash
# stack.sh — the local stack behind `go tool task up|down|demo|logs|status|clean`.
#
#   up      build, then start in the background: nats-server (JetStream), Redis if none runs,
#           the mail catcher, the sample receiver, the gateway and two workers. Each process
#           has a pid file under .stack/pids and a log under .stack/logs. A stack already
#           running is stopped first.
#   up --cluster
#           the production shape on one machine: three nats-server nodes in one JetStream
#           cluster (stream and consumer with three replicas) and a Redis Cluster of six
#           redis-server processes (three masters, one replica each) instead of the single
#           nats-server and Redis. Both start empty every time (state under .stack/cluster).
#   demo    create the demo customer, publish three tasks, wait for their callbacks
#   down    stop everything `up` started (pid files), in reverse order
#   status  list the processes and whether they run
#   logs    follow .stack/logs/*.log
#   clean   down, delete the stack's Redis keys (REDIS_PREFIX), remove .stack/
#
# Settings: scripts/stack.env.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
set -a
# shellcheck source=stack.env
. scripts/stack.env
set +a
STACK="$ROOT/.stack"
LOGS="$STACK/logs"
PIDS="$STACK/pids"
BIN="$ROOT/bin"
# The clustered stack's stores, Redis Cluster nodes and demo keys; .stack/shape says which
# shape `up` started last.
CLUSTER_DIR="$STACK/cluster"
SHAPE_FILE="$STACK/shape"
read -r -a NATS_NODE_PORTS <<<"$CLUSTER_NATS_PORTS"
read -r -a NATS_NODE_ROUTE_PORTS <<<"$CLUSTER_NATS_ROUTE_PORTS"
read -r -a NATS_NODE_MONITOR_PORTS <<<"$CLUSTER_NATS_MONITOR_PORTS"
read -r -a REDIS_NODE_PORTS <<<"$CLUSTER_REDIS_PORTS"
NATS_NODES=(nats1 nats2 nats3)
REDIS_NODES=(redis1 redis2 redis3 redis4 redis5 redis6)
# Every process of the stack, in start order.
SERVICES=(nats mailcatcher receiver gateway worker1 worker2)
CLUSTER_SERVICES=("${NATS_NODES[@]}" "${REDIS_NODES[@]}" mailcatcher receiver gateway worker1 worker2)

# use_cluster points every process of the stack at the clustered NATS and Redis.
use_cluster() {
	local i urls=() extra=()
	for i in "${NATS_NODE_PORTS[@]}"; do urls+=("nats://127.0.0.1:$i"); done
	for i in "${REDIS_NODE_PORTS[@]:1}"; do extra+=("addr=127.0.0.1:$i"); done
	NATS_URL="$(IFS=,; echo "${urls[*]}")"
	REDIS_URL="redis-cluster://127.0.0.1:${REDIS_NODE_PORTS[0]}?$(IFS='&'; echo "${extra[*]}")"
	NATS_REPLICAS=3
	DEMO_KEYS_FILE=.stack/cluster/demo.env
	SERVICES=("${CLUSTER_SERVICES[@]}")
	export NATS_URL REDIS_URL NATS_REPLICAS DEMO_KEYS_FILE
}

# The shape `up` started last decides what demo and status look at.
if [ "$(cat "$SHAPE_FILE" 2>/dev/null)" = cluster ] && [ "${1:-}" != up ] && [ "${1:-}" != clean ]; then
	use_cluster
fi

say() { printf 'stack: %s\n' "$*"; }
die() { printf 'stack: ERROR: %s\n' "$*" >&2; exit 1; }

# ours PID: the process runs one of this checkout's binaries (bin/...), so a recycled pid is
# never killed.
ours() {
	local exe
	exe="$(readlink "/proc/$1/exe" 2>/dev/null)" || return 1
	[[ "$exe" == "$BIN/"* ]]
}

# alive PID: the process exists and is not a zombie waiting for init to reap it.
alive() {
	local state
	state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
	[ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

running() {
	local pf="$PIDS/$1.pid" pid
	[ -f "$pf" ] || return 1
	pid="$(cat "$pf")"
	[ -n "$pid" ] && alive "$pid" && ours "$pid"
}

# stop NAME... sends SIGTERM to all of them at once (each finishes or hands back its work),
# waits up to 30s for each, then SIGKILLs what is left.
stop() {
	local name pf pid t0=$SECONDS
	local -A pids=()
	for name in "$@"; do
		pf="$PIDS/$name.pid"
		[ -f "$pf" ] || continue
		pid="$(cat "$pf")"
		if [ -n "$pid" ] && alive "$pid" && ours "$pid"; then
			kill -TERM "$pid" 2>/dev/null || true
			pids[$name]="$pid"
		else
			rm -f "$pf"
		fi
	done
	for name in "${!pids[@]}"; do
		pid="${pids[$name]}"
		while alive "$pid" && [ $((SECONDS - t0)) -lt 30 ]; do sleep 0.1; done
		if alive "$pid"; then
			say "$name (pid $pid) did not stop within 30s of SIGTERM: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		else
			say "stopped $name (pid $pid, SIGTERM, after $((SECONDS - t0))s)"
		fi
		rm -f "$PIDS/$name.pid"
	done
}

down() {
	# Workers first (they finish or hand back deliveries in flight), then what they talk to.
	# Whichever shape runs: a name without a pid file is skipped.
	stop worker1 worker2
	stop gateway receiver mailcatcher
	stop nats "${NATS_NODES[@]}"
	stop "${REDIS_NODES[@]}"
	# Redis only if scripts/ensure-redis.sh started it for the stack.
	bash scripts/ensure-redis.sh --stop --pidfile "$PIDS/redis.pid"
}

# start NAME CMD... starts CMD in its own session, detached from the terminal, with its output
# appended to .stack/logs/NAME.log. setsid and env exec, so the pid recorded is CMD's own.
start() {
	local name="$1"
	shift
	printf '\n===== %s starting %s\n' "$(date -Is)" "$name" >>"$LOGS/$name.log"
	setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
	echo $! >"$PIDS/$name.pid"
	say "started $name (pid $!): log .stack/logs/$name.log"
}

# ready NAME URL waits until URL answers, failing early if the process exits.
ready() {
	local name="$1" url="$2" pid deadline=$((SECONDS + 30))
	pid="$(cat "$PIDS/$name.pid")"
	until "$BIN/devstack" wait -timeout 1s "$url" 2>/dev/null; do
		if ! alive "$pid"; then
			fail_start "$name" "$name exited during start-up"
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			fail_start "$name" "$name did not answer $url within 30s"
		fi
		sleep 0.2
	done
}

# fail_start NAME MESSAGE shows NAME's log, stops what was started and exits.
fail_start() {
	printf 'stack: ERROR: %s. Last lines of .stack/logs/%s.log:\n' "$2" "$1" >&2
	tail -n 25 "$LOGS/$1.log" >&2 || true
	say "stopping what was started"
	down
	exit 1
}

port_free() {
	! timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "${1%:*}" "${1##*:}" 2>/dev/null
}

build() {
	mkdir -p "$BIN"
	# On a machine's first run the build fetches the services' Go modules, and go prints a line
	# per module for a minute or two: say so first, so it does not look like a hang. The check
	# is offline (GOPROXY=off fails at once when a module is missing from the cache).
	if ! GOPROXY=off go list -deps ./services/worker ./services/devstack ./services/gateway >/dev/null 2>&1; then
		say "first run on this machine: fetching the Go modules the services need (a minute or two; 'go: downloading' lines follow)"
	fi
	say "building bin/worker, bin/devstack"
	go build -o "$BIN/" ./services/worker ./services/devstack
	say "building bin/nats-server (the version pinned in tools/go.mod: $(go tool nats-server --version))"
	cp -f "$(go tool -n nats-server)" "$BIN/nats-server.new" && mv -f "$BIN/nats-server.new" "$BIN/nats-server"
	say "building bin/gateway"
	if ! go build -o "$BIN/" ./services/gateway; then
		die "services/gateway does not build (see the compiler output above). The stack needs the gateway (docs/api.md): it creates the demo customer and shows the callbacks. Nothing was started."
	fi
}

up() {
	local shape=single
	case "${1:-}" in
	"") ;;
	--cluster) shape=cluster ;;
	*) die "usage: $0 up [--cluster]" ;;
	esac
	if [ "$shape" = cluster ]; then
		command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
			die "the clustered stack runs the machine's redis-server and redis-cli: install them (apt-get install redis-server)"
	fi
	build
	mkdir -p "$LOGS" "$PIDS" "$STACK/nats"
	local s any=false
	for s in nats "${CLUSTER_SERVICES[@]}"; do running "$s" && any=true; done
	if $any; then
		say "a stack is already running: stopping it first"
		down
	fi
	if [ "$shape" = cluster ]; then
		echo cluster >"$SHAPE_FILE"
		up_cluster
		return
	fi
	echo single >"$SHAPE_FILE"
	for addr in "127.0.0.1:$NATS_PORT" "127.0.0.1:$NATS_MONITOR_PORT" "$GATEWAY_ADDR" "$WORKER1_METRICS_ADDR" \
		"$WORKER2_METRICS_ADDR" "$RECEIVER_ADDR" "$MAILCATCHER_SMTP_ADDR" "$MAILCATCHER_HTTP_ADDR"; do
		port_free "$addr" || die "$addr is already in use by another program; stop it or change scripts/stack.env"
	done

	REDIS_URL="$REDIS_URL" bash scripts/ensure-redis.sh --pidfile "$PIDS/redis.pid" --dir "$STACK/redis" --logfile "$LOGS/redis.log"

	# Task status in Redis refers to stream sequences and the demo customer's keys live in
	# .stack/, so the keys under REDIS_PREFIX belong with one JetStream store: a new store (or
	# keys another checkout's stack wrote) means the keys are stale and are deleted.
	if [ ! -d "$STACK/nats/jetstream" ] || [ ! -s "$STACK/stack-id" ]; then
		echo "$(date +%s)-$$-$RANDOM$RANDOM" >"$STACK/stack-id"
	fi
	claimed="$("$BIN/devstack" claim -owner "$(cat "$STACK/stack-id")")"
	if [ -n "$claimed" ]; then
		say "Redis $REDIS_URL: $claimed"
		rm -f "$ROOT/$DEMO_KEYS_FILE"
	fi

	start nats "$BIN/nats-server" -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MONITOR_PORT" -n refonte-dev -js -sd "$STACK/nats"
	ready nats "http://127.0.0.1:$NATS_MONITOR_PORT/healthz"

	start_services
	cat <<EOF

stack: up.
  nats-server   $NATS_URL  (JetStream store .stack/nats; monitoring http://127.0.0.1:$NATS_MONITOR_PORT)
  redis         $REDIS_URL  (keys under "$REDIS_PREFIX")
EOF
	print_services
}

# start_services starts what talks to NATS and Redis: the mail catcher, the receiver, the
# gateway and the workers.
start_services() {
	start mailcatcher "$BIN/devstack" mailcatcher
	start receiver "$BIN/devstack" receiver
	ready mailcatcher "$MAILCATCHER_URL/healthz"
	ready receiver "http://$RECEIVER_ADDR/healthz"

	start gateway "$BIN/gateway"
	ready gateway "$GATEWAY_URL/readyz"

	start worker1 env METRICS_ADDR="$WORKER1_METRICS_ADDR" "$BIN/worker"
	start worker2 env METRICS_ADDR="$WORKER2_METRICS_ADDR" "$BIN/worker"
	ready worker1 "http://$WORKER1_METRICS_ADDR/readyz"
	ready worker2 "http://$WORKER2_METRICS_ADDR/readyz"
}

print_services() {
	cat <<EOF
  gateway       $GATEWAY_URL  (admin token: $ADMIN_TOKEN)
  workers       metrics http://$WORKER1_METRICS_ADDR/metrics, http://$WORKER2_METRICS_ADDR/metrics
  receiver      http://$RECEIVER_ADDR/
  mail catcher  $MAILCATCHER_URL  (SMTP $MAILCATCHER_SMTP_ADDR)
  retries       CALLBACK_RETRY_SCHEDULE shortened for development: $CALLBACK_RETRY_SCHEDULE

EOF
}

# up_cluster starts three nats-server nodes and a Redis Cluster, both empty, then the services.
up_cluster() {
	use_cluster
	local i port addr addrs=() checks=()
	for i in "${!NATS_NODE_PORTS[@]}"; do
		checks+=("127.0.0.1:${NATS_NODE_PORTS[$i]}" "127.0.0.1:${NATS_NODE_ROUTE_PORTS[$i]}" "127.0.0.1:${NATS_NODE_MONITOR_PORTS[$i]}")
	done
	for port in "${REDIS_NODE_PORTS[@]}"; do
		# A Redis Cluster node also listens on its port + 10000 for the cluster bus.
		checks+=("127.0.0.1:$port" "127.0.0.1:$((port + 10000))")
	done
	for addr in "${checks[@]}" "$GATEWAY_ADDR" "$WORKER1_METRICS_ADDR" "$WORKER2_METRICS_ADDR" "$RECEIVER_ADDR" \
		"$MAILCATCHER_SMTP_ADDR" "$MAILCATCHER_HTTP_ADDR"; do
		port_free "$addr" || die "$addr is already in use by another program; stop it or change scripts/stack.env"
	done
	# Task status refers to stream sequences: the stores start empty together, every time.
	rm -rf "$CLUSTER_DIR"
	mkdir -p "$CLUSTER_DIR"
	# A copy of the machine's redis-server in bin/, so that down recognises the processes it
	# stops as the stack's own, as it does for the other binaries.
	cp -f "$(command -v redis-server)" "$BIN/redis-server.new" && mv -f "$BIN/redis-server.new" "$BIN/redis-server"

	local routes
	routes="$(printf 'nats://127.0.0.1:%s,' "${NATS_NODE_ROUTE_PORTS[@]}")"
	for i in "${!NATS_NODES[@]}"; do
		start "${NATS_NODES[$i]}" "$BIN/nats-server" -a 127.0.0.1 -p "${NATS_NODE_PORTS[$i]}" \
			-m "${NATS_NODE_MONITOR_PORTS[$i]}" -n "refonte-dev-n$((i + 1))" -js -sd "$CLUSTER_DIR/${NATS_NODES[$i]}" \
			--cluster_name refonte-dev --cluster "nats://127.0.0.1:${NATS_NODE_ROUTE_PORTS[$i]}" --routes "${routes%,}"
	done
	for i in "${!REDIS_NODES[@]}"; do
		port="${REDIS_NODE_PORTS[$i]}"
		mkdir -p "$CLUSTER_DIR/${REDIS_NODES[$i]}"
		# No persistence: the cluster starts empty with the JetStream stores.
		start "${REDIS_NODES[$i]}" "$BIN/redis-server" --port "$port" --bind 127.0.0.1 --protected-mode no \
			--dir "$CLUSTER_DIR/${REDIS_NODES[$i]}" --save "" --appendonly no \
			--cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000
		addrs+=("127.0.0.1:$port")
	done
	# /healthz of a clustered node answers 200 once its JetStream is current with the others.
	for i in "${!NATS_NODES[@]}"; do
		ready "${NATS_NODES[$i]}" "http://127.0.0.1:${NATS_NODE_MONITOR_PORTS[$i]}/healthz"
	done
	for i in "${!REDIS_NODES[@]}"; do
		redis_ready "${REDIS_NODES[$i]}" "${REDIS_NODE_PORTS[$i]}" PING PONG
	done
	say "joining the six Redis nodes: redis-cli --cluster create (log .stack/logs/redis-cluster-create.log)"
	if ! redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >>"$LOGS/redis-cluster-create.log" 2>&1; then
		fail_start redis-cluster-create "redis-cli --cluster create failed"
	fi
	for i in "${!REDIS_NODES[@]}"; do
		redis_ready "${REDIS_NODES[$i]}" "${REDIS_NODE_PORTS[$i]}" "CLUSTER INFO" cluster_state:ok
	done

	start_services
	cat <<EOF

stack: up (clustered).
  nats-server   three JetStream nodes: $NATS_URL
                (stores .stack/cluster/nats*; monitoring on ports ${NATS_NODE_MONITOR_PORTS[*]}); stream and consumer with $NATS_REPLICAS replicas
  redis         Redis Cluster, three masters and three replicas on ports ${REDIS_NODE_PORTS[*]} (keys under "$REDIS_PREFIX")
                $REDIS_URL
EOF
	print_services
}

# redis_ready NAME PORT COMMAND WANT waits until redis-cli COMMAND on PORT prints WANT.
redis_ready() {
	local name="$1" port="$2" cmd="$3" want="$4" pid deadline=$((SECONDS + 30))
	pid="$(cat "$PIDS/$name.pid")"
	# shellcheck disable=SC2086 # the command is several words on purpose
	until redis-cli -p "$port" $cmd 2>/dev/null | grep -q "$want"; do
		if ! alive "$pid"; then
			fail_start "$name" "$name exited during start-up"
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			fail_start "$name" "$name did not answer $cmd with $want within 30s"
		fi
		sleep 0.2
	done
}

demo() {
	for s in "${SERVICES[@]}"; do
		# A clustered node may be down on purpose: the demo then shows the cluster carrying on.
		[[ "$s" == nats? || "$s" == redis? ]] && continue
		running "$s" || die "$s is not running: start the stack with \`go tool task up\` (or \`go tool task up-cluster\`)"
	done
	go build -o "$BIN/" ./services/devstack
	"$BIN/devstack" demo
}

status() {
	local s pid
	for s in "${SERVICES[@]}"; do
		if running "$s"; then
			pid="$(cat "$PIDS/$s.pid")"
			printf '  %-12s running  pid %-7s log .stack/logs/%s.log\n' "$s" "$pid" "$s"
		else
			printf '  %-12s stopped\n' "$s"
		fi
	done
	if [ "${SERVICES[0]}" != nats ]; then
		printf '  %-12s Redis Cluster of the stack (redis1 to redis6 above)\n' redis
	elif [ -f "$PIDS/redis.pid" ]; then
		printf '  %-12s started by the stack, pid %s\n' redis "$(cat "$PIDS/redis.pid")"
	else
		printf '  %-12s not managed by the stack (%s)\n' redis "$REDIS_URL"
	fi
}

logs() {
	compgen -G "$LOGS/*.log" >/dev/null || die "no logs yet in .stack/logs: start the stack with \`go tool task up\`"
	exec tail -n 40 -F "$LOGS"/*.log
}

clean() {
	down
	if ! { [ -x "$BIN/devstack" ] && "$BIN/devstack" reset; }; then
		say "Redis not reachable or bin/devstack missing: the keys under \"$REDIS_PREFIX\" in $REDIS_URL were not deleted"
	fi
	rm -rf "$STACK"
	say "removed .stack/"
}

case "${1:-}" in
up) up "${2:-}" ;;
demo) demo ;;
down) down ;;
status) status ;;
logs) logs ;;
clean) clean ;;
*) die "usage: $0 up [--cluster]|demo|down|status|logs|clean" ;;
esac
