#!/usr/bin/env bash
# stack.sh — the local stack behind `go tool task up|down|demo|logs|status|clean`.
#
#   up      build, then start in the background: nats-server (JetStream), Redis if none runs,
#           the mail catcher, the sample receiver, the gateway and two workers. Each process
#           has a pid file under .stack/pids and a log under .stack/logs. A stack already
#           running is stopped first.
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
# Every process of the stack, in start order.
SERVICES=(nats mailcatcher receiver gateway worker1 worker2)

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
	stop worker1 worker2
	stop gateway receiver mailcatcher
	stop nats
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
	build
	mkdir -p "$LOGS" "$PIDS" "$STACK/nats"
	local s any=false
	for s in "${SERVICES[@]}"; do running "$s" && any=true; done
	if $any; then
		say "a stack is already running: stopping it first"
		down
	fi
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

	cat <<EOF

stack: up.
  nats-server   $NATS_URL  (JetStream store .stack/nats; monitoring http://127.0.0.1:$NATS_MONITOR_PORT)
  redis         $REDIS_URL  (keys under "$REDIS_PREFIX")
  gateway       $GATEWAY_URL  (admin token: $ADMIN_TOKEN)
  workers       metrics http://$WORKER1_METRICS_ADDR/metrics, http://$WORKER2_METRICS_ADDR/metrics
  receiver      http://$RECEIVER_ADDR/
  mail catcher  $MAILCATCHER_URL  (SMTP $MAILCATCHER_SMTP_ADDR)
  retries       CALLBACK_RETRY_SCHEDULE shortened for development: $CALLBACK_RETRY_SCHEDULE

EOF
}

demo() {
	for s in nats gateway worker1 worker2 receiver mailcatcher; do
		running "$s" || die "$s is not running: start the stack with \`go tool task up\`"
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
	if [ -f "$PIDS/redis.pid" ]; then
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
up) up ;;
demo) demo ;;
down) down ;;
status) status ;;
logs) logs ;;
clean) clean ;;
*) die "usage: $0 up|demo|down|status|logs|clean" ;;
esac
