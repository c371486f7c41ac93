#!/usr/bin/env bash
# ensure-chromium.sh — make sure the headless Chromium that the dashboard's browser tests drive
# is there, the way ensure-redis.sh makes sure of Redis:
#
#   1. CHROMIUM_PATH, if set, must be an executable: it is used as it is.
#   2. Else chromium, chromium-browser or google-chrome on PATH is used.
#   3. Else Debian's chromium package is installed with apt-get (needs root, or passwordless
#      sudo); without a way to install it, this script stops with what to run.
#
# The browser tests fail (they never skip) when no browser is found, so `go tool task test`
# runs this first.
set -euo pipefail

say() { printf 'ensure-chromium: %s\n' "$*"; }
die() { printf 'ensure-chromium: ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

if [ -n "${CHROMIUM_PATH:-}" ]; then
	command -v "$CHROMIUM_PATH" >/dev/null 2>&1 || die "CHROMIUM_PATH=$CHROMIUM_PATH is not an executable"
	say "Chromium: $CHROMIUM_PATH (CHROMIUM_PATH)"
	exit 0
fi
for name in chromium chromium-browser google-chrome; do
	if path="$(command -v "$name" 2>/dev/null)"; then
		say "Chromium found: $path"
		exit 0
	fi
done

say "Chromium is not installed: installing Debian's chromium with apt-get (first run only; a few minutes)"
apt_install chromium "install Chromium yourself, or set CHROMIUM_PATH to a Chromium or Chrome binary, and run this again; the dashboard's browser tests need it"
path="$(command -v chromium 2>/dev/null)" || die "chromium is still not on PATH after apt-get install"
say "Chromium installed: $path"
