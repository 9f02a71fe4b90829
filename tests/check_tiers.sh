#!/bin/bash
# check_tiers.sh - the layers of DESIGN.md section 2, as make check sees them.
#
# lib/ is cut into tiers, lowest first (LIB_TIERS from the Makefile, or the
# arguments): a file of lib/<tier>/ may include only headers of its own tier
# and of the tiers below it; the files directly under lib/ (bus.c and
# friends) are the top and may include any. Headers are included by tier
# path ("ring/inbox.h"), so every include names its tier. Fails on:
#  - an include of a higher tier, or of a top file (bus.h) from a tier;
#  - an include of a lib/ header by a bare name ("inbox.h");
#  - a directory of lib/ that is no tier (add it to LIB_TIERS in its place).
# With its objects built (MSGBUS_BUILD_DIR), it also fails on a call or a
# reference by name from a tier's object to a symbol defined higher up:
# such a call goes through a table of hooks (shm/handle.h) instead.
#
#   bash tests/check_tiers.sh [TIER...]   (from the top of the tree)

set -u
cd "$(dirname "$0")/.." || exit 1

if [ $# -gt 0 ]; then
	tiers=("$@")
else
	read -r -a tiers <<<"${LIB_TIERS:-platform shm ring pubsub reqrep link}"
fi
top=${#tiers[@]} # rank of the files directly under lib/

rank_of_tier() { # tier name -> rank, or nothing
	local i
	for i in "${!tiers[@]}"; do
		[ "${tiers[$i]}" = "$1" ] && { echo "$i"; return; }
	done
}

rank_of_file() { # lib/<tier>/x or lib/x -> rank, or nothing
	local rel=${1#lib/}
	case $rel in
	*/*) rank_of_tier "${rel%%/*}" ;;
	*) echo "$top" ;;
	esac
}

bad=0
fail() {
	echo "check_tiers: $*" >&2
	bad=1
}

for d in lib/*/; do
	d=${d%/}
	[ -n "$(rank_of_tier "${d#lib/}")" ] || fail "$d/ is no tier: add it to LIB_TIERS"
done

shopt -s nullglob
for f in lib/*.[ch] lib/*/*.[ch]; do
	r=$(rank_of_file "$f")
	[ -n "$r" ] || continue # reported above
	while IFS= read -r line; do
		ir=
		n=${line%%:*}
		inc=${line#*:}
		inc=${inc#*\"}
		inc=${inc%%\"*}
		[ "$inc" = msgbus.h ] && continue # include/: the public API
		case $inc in
		*/*) ;;
		*)
			if [ -f "lib/$inc" ]; then
				ir=$top
			else
				fail "$f:$n: include \"$inc\" by its tier path (\"tier/$inc\")"
				continue
			fi
			;;
		esac
		if [ -z "$ir" ]; then
			if [ ! -f "lib/$inc" ]; then
				fail "$f:$n: \"$inc\" is no header of lib/"
				continue
			fi
			ir=$(rank_of_tier "${inc%%/*}")
			[ -n "$ir" ] || continue # a directory reported above
		fi
		if [ "$ir" -gt "$r" ]; then
			upper=top
			[ "$ir" -lt "$top" ] && upper=${tiers[$ir]}
			fail "$f:$n: includes \"$inc\" from a higher tier ($upper)"
		fi
	done < <(grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f")
done

# Calls by name: from the objects, when they are built.
objdir=${MSGBUS_BUILD_DIR:-}
if [ -n "$objdir" ] && [ -d "$objdir/lib" ] && command -v nm >/dev/null; then
	declare -A def
	objs=()
	for f in lib/*.c lib/*/*.c; do
		o=$objdir/${f%.c}.o
		[ -f "$o" ] && objs+=("$f")
	done
	for f in "${objs[@]}"; do
		o=$objdir/${f%.c}.o
		while read -r _ t s; do
			case $t in [TDBRC]) def[$s]=$f ;; esac
		done < <(nm --defined-only "$o")
	done
	for f in "${objs[@]}"; do
		r=$(rank_of_file "$f")
		[ -n "$r" ] || continue
		while read -r _ s; do
			d=${def[$s]:-}
			[ -n "$d" ] || continue
			dr=$(rank_of_file "$d")
			[ -n "$dr" ] && [ "$dr" -gt "$r" ] &&
				fail "$f: uses $s of $d, a higher tier (call it through a hook)"
		done < <(nm -u "$objdir/${f%.c}.o")
	done
fi

[ $bad = 0 ] && echo "  tiers    ${tiers[*]}: no include or call runs up"
exit $bad
