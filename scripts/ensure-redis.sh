#!/usr/bin/env bash
# ensure-redis.sh — make sure a Redis answers at REDIS_URL (default redis://127.0.0.1:6379/0).
#
#   1. If a Redis answers there, do nothing.
#   2. Else, for a loopback address: start the installed redis-server (daemonized, no
#      persistence, bound to 127.0.0.1) — after installing it with apt-get if it is missing
#      (needs root, or passwordless sudo).
#   3. Wait until it answers PING, with a deadline (REDIS_WAIT_SECONDS, default 20).
#
# Options:
#   --pidfile FILE   where a Redis this script starts writes its pid (only then is the file
#                    written, so whoever passed it knows there is something to stop)
#   --dir DIR        working directory of a started Redis (nothing is persisted there)
#   --logfile FILE   log file of a started Redis
#   --stop           stop the Redis recorded in --pidfile, if this script started one
#
# Talks to Redis with bash's /dev/tcp, so it needs neither redis-cli nor Go.
set -euo pipefail

say() { printf 'ensure-redis: %s\n' "$*"; }
die() { printf 'ensure-redis: ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

url="${REDIS_URL:-redis://127.0.0.1:6379/0}"
pidfile=""
dir=""
logfile=""
stop=false
while [ $# -gt 0 ]; do
	case "$1" in
	--pidfile) pidfile="$2"; shift 2 ;;
	--dir) dir="$2"; shift 2 ;;
	--logfile) logfile="$2"; shift 2 ;;
	--stop) stop=true; shift ;;
	*) die "unknown argument $1 (see the comment at the top of $0)" ;;
	esac
done

if $stop; then
	[ -n "$pidfile" ] || die "--stop needs --pidfile"
	[ -f "$pidfile" ] || exit 0
	pid="$(cat "$pidfile")"
	if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "redis-server" ]; then
		say "stopping the Redis this script started (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		# Gone, or a zombie that init has not reaped yet.
		for _ in $(seq 100); do
			case "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" in "" | Z | X) break ;; esac
			sleep 0.1
		done
	fi
	rm -f "$pidfile"
	exit 0
fi

# redis://[user:password@]host[:port][/db] — only host and port matter here.
re='^rediss?://([^@/]*@)?(\[[^]]+\]|[^:/]+)(:([0-9]+))?(/.*)?$'
[[ "$url" =~ $re ]] || die "REDIS_URL=$url is not a redis://host:port/db URL"
host="${BASH_REMATCH[2]}"
port="${BASH_REMATCH[4]:-6379}"
host="${host#[}"
host="${host%]}"

# answers prints what Redis replies to PING; it succeeds when a Redis is ready to serve (PONG,
# or NOAUTH: a password-protected Redis that the services will log in to).
answers() {
	local reply
	reply="$(timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf "PING\r\n" >&3 && IFS= read -r -t 2 line <&3 && printf "%s" "$line"' "$host" "$port" 2>/dev/null)" || return 1
	case "$reply" in
	+PONG* | -NOAUTH*) return 0 ;;
	*) return 1 ;;
	esac
}

if answers; then
	say "Redis answers at $host:$port"
	exit 0
fi

case "$host" in
127.0.0.1 | localhost | ::1) ;;
*) die "no Redis answers at $host:$port, and this script only starts a local one. Start it, or point REDIS_URL at one that runs." ;;
esac

if ! command -v redis-server >/dev/null 2>&1; then
	say "no Redis at $host:$port and redis-server is not installed: installing it with apt-get"
	apt_install redis-server "install Redis 7 yourself, or start any Redis at $host:$port (or set REDIS_URL to a running one), and run this again" \
		--no-install-recommends
	command -v redis-server >/dev/null 2>&1 || die "redis-server is still not on PATH after apt-get install"
	# The package's own service may have started on the default port.
	if answers; then
		say "Redis answers at $host:$port (started by the package)"
		exit 0
	fi
fi

dir="${dir:-${TMPDIR:-/tmp}/refonte-redis-$port}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
logfile="${logfile:-$dir/redis.log}"
mkdir -p "$(dirname "$logfile")"
started_pidfile="${pidfile:-$dir/redis.pid}"
mkdir -p "$(dirname "$started_pidfile")"
case "$started_pidfile" in /*) ;; *) started_pidfile="$PWD/$started_pidfile" ;; esac
case "$logfile" in /*) ;; *) logfile="$PWD/$logfile" ;; esac

say "starting $(redis-server --version | cut -d' ' -f1-3) on 127.0.0.1:$port (no persistence; log $logfile; pid file $started_pidfile)"
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
	--dir "$dir" --logfile "$logfile" --pidfile "$started_pidfile" ||
	die "redis-server did not start; see $logfile"

deadline=$((SECONDS + ${REDIS_WAIT_SECONDS:-20}))
until answers; do
	if [ "$SECONDS" -ge "$deadline" ]; then
		tail -n 20 "$logfile" >&2 2>/dev/null || true
		die "Redis started but did not answer PING at 127.0.0.1:$port within ${REDIS_WAIT_SECONDS:-20}s; see $logfile"
	fi
	sleep 0.2
done
say "Redis answers at 127.0.0.1:$port (pid $(cat "$started_pidfile" 2>/dev/null || echo '?'))"
