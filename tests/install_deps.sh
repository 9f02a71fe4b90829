#!/usr/bin/env bash
# install_deps.sh - make sure `make check` has what it needs: Check (found
# through pkg-config) and mandoc. On a Debian/Ubuntu machine without them it
# installs them, as root or with `sudo -n`; otherwise it stops with one line
# naming the exact command. Quiet when everything is there.
set -u

missing() {
	command -v pkg-config >/dev/null 2>&1 || return 0
	pkg-config --exists check 2>/dev/null || return 0
	command -v mandoc >/dev/null 2>&1 || return 0
	return 1
}

missing || exit 0

PKGS="check pkg-config mandoc"
CMD="apt-get install -y --no-install-recommends $PKGS"

if ! command -v apt-get >/dev/null 2>&1; then
	echo "make check needs Check, pkg-config and mandoc: install them with your package manager (Debian: sudo $CMD)" >&2
	exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
	SUDO=
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
	SUDO="sudo -n"
else
	echo "make check needs Check, pkg-config and mandoc: run 'sudo $CMD'" >&2
	exit 1
fi

echo "  DEPS     installing $PKGS"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
# A fresh machine may have no package lists yet: update once, then retry.
if ! $SUDO env DEBIAN_FRONTEND=noninteractive $CMD >"$log" 2>&1; then
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update >>"$log" 2>&1
	if ! $SUDO env DEBIAN_FRONTEND=noninteractive $CMD >>"$log" 2>&1; then
		tail -n 20 "$log" >&2
		rm -f "$log"
		echo "make check needs Check, pkg-config and mandoc, and '$CMD' failed (output above)" >&2
		exit 1
	fi
fi
rm -f "$log"

if missing; then
	echo "make check: Check, pkg-config or mandoc still missing after '$CMD'" >&2
	exit 1
fi
