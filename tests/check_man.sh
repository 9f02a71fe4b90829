#!/usr/bin/env bash
# Man page checks, run by `make check` from the top of the tree:
#  1. `mandoc -T lint -W warning` prints nothing for every page that is not
#     a .so stub; a stub must point at an existing page naming it in NAME.
#  2. The .Bd -literal blocks of each page's EXAMPLES section, joined in
#     order, compile as one C file (-Werror, compile only). Section 3 pages
#     need an EXAMPLES section; section 7 pages may omit it. Section 1
#     pages (commands) are linted only: their examples are shell.
#  3. Every function declared in include/msgbus.h has man/NAME.3.
# Environment: CC (default cc), CFLAGS_EXTRA (added to the compile).
set -u

cd "$(dirname "$0")/.." || exit 1

CC=${CC:-cc}
header=include/msgbus.h
fail=0
err() { echo "check_man: $*" >&2; fail=1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/msgbus-man.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

shopt -s nullglob
pages=(man/*.1 man/*.3 man/*.7)
if [ ${#pages[@]} -eq 0 ]; then
	err "no man pages in man/"
fi

# The target of a .so stub ("man3/x.3"), or nothing for a real page.
stub_target() {
	awk '/^\.\\"/ || /^\.?[ \t]*$/ { next }
	     /^\.so[ \t]/ { print $2 } { exit }' "$1"
}

real=()
for p in "${pages[@]}"; do
	t=$(stub_target "$p")
	if [ -z "$t" ]; then
		real+=("$p")
		continue
	fi
	target="man/${t##*/}"
	name=$(basename "$p"); name=${name%.*}
	if [ ! -f "$target" ]; then
		err "$p: .so target $t has no man/${t##*/}"
	elif [ -n "$(stub_target "$target")" ]; then
		err "$p: .so target $target is itself a stub"
	elif ! grep -Eq "^\.Nm[ \t]+$name([ \t]|$)" "$target"; then
		err "$p: $target does not list $name in its NAME section"
	fi
done

# 1. lint
if [ ${#real[@]} -gt 0 ]; then
	out=$(mandoc -T lint -W warning "${real[@]}" 2>&1)
	if [ -n "$out" ]; then
		printf '%s\n' "$out" >&2
		err "mandoc -T lint -W warning is not clean"
	fi
fi

# 2. examples. Roff escapes are undone: \e and \\ -> \, \- -> -, \& -> "",
# \(aq -> ', \(dq -> ", and the like. Other lines starting with "." are
# requests or comments, not C.
extract() {
	awk '
	/^\.Sh[ \t]/ { insec = ($2 == "EXAMPLES"); inbd = 0; next }
	insec && /^\.Bd[ \t]+-literal/ { inbd = 1; n++; next }
	inbd && /^\.Ed([ \t]|$)/ { inbd = 0; next }
	inbd && /^[.\047]/ { next }
	inbd { print }
	END { if (n == 0) exit 3 }' "$1" |
	sed -e 's/\\e/\x01/g' -e 's/\\\\/\x01/g' -e 's/\\(rs/\x01/g' \
	    -e 's/\\\[rs\]/\x01/g' \
	    -e 's/\\-/-/g' -e 's/\\&//g' -e 's/\\(aq/'"'"'/g' -e 's/\\\[aq\]/'"'"'/g' \
	    -e 's/\\(dq/"/g' -e 's/\\\[dq\]/"/g' -e 's/\\(ga/`/g' -e 's/\\(ti/~/g' \
	    -e 's/\\(ha/^/g' -e 's/\\(em/--/g' -e 's/\\(en/-/g' -e 's/\\ / /g' -e 's/\\f[BIRP]//g' \
	    -e 's/\x01/\\/g'
	return "${PIPESTATUS[0]}"
}

compiled=0
for p in "${real[@]}"; do
	case $p in *.1) continue ;; esac
	base=$(basename "$p")
	src="$tmp/${base//./_}.c"
	extract "$p" > "$src"
	rc=$?
	if [ $rc -eq 3 ]; then
		case $p in
		*.3) err "$p: no .Bd -literal block in EXAMPLES" ;;
		esac
		continue
	elif [ $rc -ne 0 ]; then
		err "$p: could not extract EXAMPLES"
		continue
	fi
	# shellcheck disable=SC2086
	if ! out=$($CC -std=c11 -Wall -Wextra -Werror -Iinclude ${CFLAGS_EXTRA:-} \
	           -c -o "$tmp/example.o" "$src" 2>&1); then
		printf '%s\n' "$out" | sed "s|$src|$p(EXAMPLES)|g" >&2
		err "$p: EXAMPLES does not compile"
	else
		compiled=$((compiled + 1))
	fi
done

# 3. every declared function has a page
funcs=$(grep -E '^[[:space:]]*MSGBUS_DECL' "$header" |
	grep -oE 'msgbus_[a-z0-9_]+[[:space:]]*\(' | tr -d '( \t' | sort -u)
[ -n "$funcs" ] || err "no MSGBUS_DECL functions found in $header"
for f in $funcs; do
	[ -f "man/$f.3" ] || err "$f is declared in $header but man/$f.3 is missing"
done
[ -f man/msgbus.7 ] || err "man/msgbus.7 is missing"

if [ $fail -ne 0 ]; then
	echo "check_man: FAILED" >&2
	exit 1
fi
echo "  MAN      ${#pages[@]} pages lint clean, $compiled examples compile, $(echo "$funcs" | wc -l) functions documented"
