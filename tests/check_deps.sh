#!/bin/bash
# check_deps.sh - tests/install_deps.sh on a machine that lacks Check,
# pkg-config and mandoc and cannot install them: it stops with exactly one
# line naming the command to run (README "Build, run an example, test").
# The machine is faked by a PATH of stubs: no pkg-config, no mandoc, an id
# that says "not root", a sudo that refuses, and apt-get present or not.
#
#   bash tests/check_deps.sh   (from the top of the tree; run by make check)

set -u
cd "$(dirname "$0")/.." || exit 1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bad=0

# stubs DIR [apt-get]: a PATH with bash and the stubs in it, nothing else.
stubs() {
	mkdir -p "$1"
	ln -s "$(command -v bash)" "$1/bash"
	printf '#!%s\necho 1000\n' "$(command -v bash)" >"$1/id"
	printf '#!%s\nexit 1\n' "$(command -v bash)" >"$1/sudo"
	if [ "${2:-}" = apt-get ]; then
		printf '#!%s\necho "apt-get must not run" >&2\nexit 1\n' "$(command -v bash)" >"$1/apt-get"
	fi
	chmod +x "$1"/*
}

# expect NAME DIR WANT: install_deps.sh under PATH=DIR fails with WANT as
# its only line of output.
expect() {
	PATH=$2 bash tests/install_deps.sh >"$work/$1.out" 2>"$work/$1.err"
	rc=$?
	if [ "$rc" = 1 ] && [ ! -s "$work/$1.out" ] && [ "$(cat "$work/$1.err")" = "$3" ]; then
		echo "PASS $1"
	else
		echo "FAIL $1: exit status $rc (want 1), stdout then stderr:"
		cat "$work/$1.out" "$work/$1.err"
		bad=1
	fi
}

cmd="apt-get install -y --no-install-recommends check pkg-config mandoc"
stubs "$work/debian" apt-get
expect "debian, no root, no sudo -n" "$work/debian" \
	"make check needs Check, pkg-config and mandoc: run 'sudo $cmd'"
stubs "$work/other"
expect "no apt-get" "$work/other" \
	"make check needs Check, pkg-config and mandoc: install them with your package manager (Debian: sudo $cmd)"

[ "$bad" = 0 ] && echo "deps: 2 passed"
exit "$bad"
