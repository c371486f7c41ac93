# apt.sh — sourced (never run) by the ensure-*.sh scripts, which define say and die first: one
# way to install a missing Debian package, as root or through passwordless sudo.
#
#   apt_install PACKAGE INSTEAD [apt-get install options...]
#
# INSTEAD says what the user can do when nothing here can install the package ("install X
# yourself, or …"); it ends the error message. On success the package's commands are on PATH.

apt_install() {
	local pkg="$1" instead="$2"
	shift 2
	command -v apt-get >/dev/null 2>&1 || die "apt-get is not available: $instead"
	local -a sudo
	if [ "$(id -u)" -eq 0 ]; then
		sudo=()
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		sudo=(sudo -n)
	else
		die "installing $pkg needs root (or passwordless sudo). Run: sudo apt-get update && sudo apt-get install -y $pkg — or $instead"
	fi
	say "+ apt-get update"
	"${sudo[@]}" apt-get update -qq || die "apt-get update failed"
	say "+ apt-get install -y $pkg"
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@" "$pkg" >/dev/null ||
		die "apt-get install $pkg failed"
	hash -r
}
