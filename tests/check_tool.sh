#!/usr/bin/env bash
# check_tool.sh - the msgbus command, used as from a shell (msgbus(1)).
#
# Run by `make check` with MSGBUS=build/tools/msgbus. Every bus is named
# after this run (shm://cktool<pid>x<random>-...), so runs never share one.
# A background subscriber or server is started with --ready, and the test
# waits, bounded, for the "ready" line it writes on stderr once it is
# subscribed or serving: nothing is published before that, so nothing is
# published for nobody. A listener's port is read from the
# "msgbus: listening on tcp://HOST:PORT" line it writes. Every command runs
# under timeout(1); background ones are killed by PID on exit. At the end,
# no segment of this run is left in /dev/shm and no process is left running.
set -u

MSGBUS=${MSGBUS:-./build/tools/msgbus}
SHM_DIR=${SHM_DIR:-/dev/shm}
TIMEOUT=${TIMEOUT:-30}   # seconds: the bound of any one command
WAIT_S=${WAIT_S:-20}     # seconds: the bound of any wait for a condition
tag=cktool$$x$RANDOM

work=$(mktemp -d)
bg_pids=()

cleanup() {
	local p
	for p in "${bg_pids[@]}"; do
		kill "$p" 2>/dev/null
	done
	for p in "${bg_pids[@]}"; do
		wait "$p" 2>/dev/null
	done
	rm -f "$SHM_DIR/msgbus.$tag"*
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

passed=0
failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() {
	echo "FAIL $1: $2"
	failed=$((failed + 1))
}

# run NAME ARGS...: runs msgbus in the foreground; its stdout, stderr and
# exit status are in $work/NAME.{out,err,rc}.
run() {
	local name=$1 rc=0
	shift
	timeout -k 5 "$TIMEOUT" "$MSGBUS" "$@" >"$work/$name.out" 2>"$work/$name.err" || rc=$?
	echo "$rc" >"$work/$name.rc"
}

# start NAME ARGS...: runs msgbus in the background; its PID is in $bg.
# The output files exist before it starts, so a wait never reads a file of
# an earlier process.
start() {
	local name=$1
	shift
	: >"$work/$name.out"
	: >"$work/$name.err"
	timeout -k 5 "$TIMEOUT" "$MSGBUS" "$@" >"$work/$name.out" 2>"$work/$name.err" &
	bg=$!
	bg_pids+=("$bg")
}

# wait_line FILE REGEX: until a line of FILE matches (bounded).
wait_line() {
	local i
	for ((i = 0; i < WAIT_S * 50; i++)); do
		grep -Eq -- "$2" "$1" && return 0
		sleep 0.02
	done
	return 1
}

# finish PID: waits for the background process; its exit status in $rc.
# (Not in a $(...) subshell: only this shell can wait for its children.)
finish() {
	rc=0
	wait "$1" || rc=$?
}

# expect NAME TEST RC [STDOUT [STDERR]]: the exit status of `run NAME`, and
# its whole stdout and stderr when given.
expect() {
	local name=$1 test=$2 rc=$3 ok=1
	if [ "$(cat "$work/$name.rc")" != "$rc" ]; then
		fail "$test" "exit status $(cat "$work/$name.rc"), want $rc"
		ok=0
	fi
	if [ $# -ge 4 ] && [ "$(cat "$work/$name.out")" != "$4" ]; then
		fail "$test" "stdout differs"
		ok=0
	fi
	if [ $# -ge 5 ] && [ "$(cat "$work/$name.err")" != "$5" ]; then
		fail "$test" "stderr differs"
		ok=0
	fi
	if [ $ok -eq 1 ]; then
		pass "$test"
	else
		echo "--- stdout:"; cat "$work/$name.out"
		echo "--- stderr:"; cat "$work/$name.err"
	fi
}

# listen_port NAME: the port in NAME.err's "listening on" line.
listen_port() {
	sed -n 's/^msgbus: listening on tcp:\/\/127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' \
		"$work/$1.err"
}

if [ ! -x "$MSGBUS" ]; then
	echo "FAIL msgbus: $MSGBUS not found or not executable"
	exit 1
fi

# ---- usage: exit status 2 and a usage message --------------------------------

for args in "" "frob shm://$tag-u" "pub shm://$tag-u" "sub --bogus shm://$tag-u x" \
	"sub --count 0 shm://$tag-u x" "sub --count 2x shm://$tag-u x" \
	"pub --raw shm://$tag-u x" "req shm://$tag-u a b c" "req --timeout 0 shm://$tag-u s d" \
	"stat shm://$tag-u x" "stat --watch=0 shm://$tag-u" "stat --count 1 shm://$tag-u"; do
	# shellcheck disable=SC2086 # the words of $args are the arguments
	run usage $args
	if [ "$(cat "$work/usage.rc")" = 2 ] && grep -q '^usage' "$work/usage.err" &&
		[ ! -s "$work/usage.out" ]; then
		pass "usage: msgbus $args"
	else
		fail "usage: msgbus $args" "exit status $(cat "$work/usage.rc"), want 2 and usage on stderr"
	fi
done
run help --help
if [ "$(cat "$work/help.rc")" = 0 ] && grep -q '^  msgbus bench' "$work/help.out"; then
	pass "usage: msgbus --help"
else
	fail "usage: msgbus --help" "exit status $(cat "$work/help.rc") or no usage on stdout"
fi

# ---- pub and sub ---------------------------------------------------------------

# A subject the pattern does not match, escapes, stdin, --count on pub.
url=shm://$tag-ps
start sub1 sub --count 4 --ready "$url" 'orders.>'
sub1=$bg
if wait_line "$work/sub1.err" '^ready$'; then
	run pub0 pub "$url" invoices.created "not for orders.>"
	run pub1 pub "$url" orders.created "id=1"
	printf 'a\tb\\c\001\n' >"$work/payload"
	run pub2 pub "$url" orders.eu.paid - <"$work/payload"
	run pub3 pub --count 2 "$url" orders.updated "x y"
	finish "$sub1"
	want='orders.created id=1
orders.eu.paid a\tb\\c\x01\n
orders.updated x y
orders.updated x y'
	if [ "$rc" = 0 ] && [ "$(cat "$work/sub1.out")" = "$want" ]; then
		pass "sub --count 4 prints SUBJECT PAYLOAD lines, escaped"
	else
		fail "sub --count 4" "exit status $rc, output:"
		cat "$work/sub1.out"
	fi
else
	fail "sub --ready" "no ready line"
fi

# --raw: the payload bytes alone, NUL and 0xff included.
url=shm://$tag-raw
start raw sub --raw --count 1 --ready "$url" bin.data
raw=$bg
if wait_line "$work/raw.err" '^ready$'; then
	printf 'x\000\001\377y' >"$work/bin"
	run rawpub pub "$url" bin.data - <"$work/bin"
	finish "$raw"
	if [ "$rc" = 0 ] && cmp -s "$work/bin" "$work/raw.out"; then
		pass "sub --raw prints the payload bytes"
	else
		fail "sub --raw" "exit status $rc, or the bytes differ"
	fi
else
	fail "sub --raw --ready" "no ready line"
fi

# --timeout: nothing arrives, exit status 1 and msgbus_strerror's text.
start_s=$SECONDS
run subto sub --timeout 200 "shm://$tag-to" nothing.here
expect subto "sub --timeout 200 with nothing published" 1 "" "msgbus: msgbus_recv: timed out"
if [ $((SECONDS - start_s)) -gt 10 ]; then
	fail "sub --timeout 200" "took $((SECONDS - start_s)) s"
fi

# A stopped subscriber: a lossless one holds publishers back once its inbox
# (1 MiB by default, some 26,000 short messages) is full, so pub --timeout fails; a lossy one never
# does. The subscriber is stopped with SIGSTOP, sent to msgbus itself (the
# child of timeout(1)), and continued before it is ended.
# hold_test NAME WANT_RC [SUB_OPTION]
hold_test() {
	local name=$1 want=$2 child
	shift 2
	start "$name" sub --ready "$@" "shm://$tag-$name" held.subject
	if ! wait_line "$work/$name.err" '^ready$' || ! child=$(pgrep -P "$bg") ||
		[ -z "$child" ]; then
		fail "$name" "no ready subscriber"
		return
	fi
	kill -STOP "$child"
	run "$name-pub" pub --count 100000 --timeout 300 "shm://$tag-$name" held.subject x
	kill -CONT "$child"
	kill "$bg"
	finish "$bg"
	if [ "$(cat "$work/$name-pub.rc")" = "$want" ]; then
		pass "pub --count 100000 --timeout 300 to a stopped sub ${*:-(lossless)}: exit status $want"
	else
		fail "pub to a stopped sub ${*:-(lossless)}" "exit status $(cat "$work/$name-pub.rc"), want $want"
		cat "$work/$name-pub.err"
	fi
}
hold_test lossless 1
if [ "$(cat "$work/lossless-pub.err" 2>/dev/null)" = "msgbus: msgbus_publish: timed out" ]; then
	pass "pub held back by a lossless sub: msgbus_publish timed out"
else
	fail "pub held back by a lossless sub" "stderr: $(cat "$work/lossless-pub.err" 2>/dev/null)"
fi
hold_test lossy 0 --lossy

# ---- req and serve -------------------------------------------------------------

url=shm://$tag-rr
run noresp req "$url" nobody.home "hello"
expect noresp "req with no server: no responders" 1 "" \
	"msgbus: msgbus_call_start: no responders"

start echo serve --ready "$url" echo.svc
if wait_line "$work/echo.err" '^ready$'; then
	run req1 req "$url" echo.svc "hello world"
	expect req1 "req to serve (echo)" 0 "hello world"
	run req2 req --raw "$url" echo.svc "raw reply"
	expect req2 "req --raw to serve (echo)" 0 "raw reply"
else
	fail "serve --ready" "no ready line"
fi

start up serve --ready --exec 'tr a-z A-Z' "$url" upper.svc
if wait_line "$work/up.err" '^ready$'; then
	run req3 req "$url" upper.svc "shout this"
	expect req3 "req to serve --exec 'tr a-z A-Z'" 0 "SHOUT THIS"
else
	fail "serve --exec --ready" "no ready line"
fi

# The command outlives the request's deadline: the requester times out.
start slow serve --ready --exec 'sleep 1; cat' "$url" slow.svc
if wait_line "$work/slow.err" '^ready$'; then
	run req4 req --timeout 200 "$url" slow.svc "late"
	expect req4 "req --timeout 200 to a slow server: timed out" 1 "" \
		"msgbus: msgbus_call_wait: timed out"
else
	fail "serve --exec (slow) --ready" "no ready line"
fi

# serve --count 2 exits 0 after its second answer.
start two serve --ready --count 2 "$url" two.svc
two=$bg
if wait_line "$work/two.err" '^ready$'; then
	run req5 req "$url" two.svc one
	run req6 req "$url" two.svc two
	finish "$two"
	if [ "$rc" = 0 ] && [ "$(cat "$work/req5.out" "$work/req6.out")" = "one
two" ]; then
		pass "serve --count 2 answers two requests and exits 0"
	else
		fail "serve --count 2" "exit status $rc"
	fi
else
	fail "serve --count --ready" "no ready line"
fi

# ---- signals: sub and serve close the bus, then die of the signal -------------

# stop_test NAME SIGNAL STATUS ARGS...
stop_test() {
	local name=$1 sig=$2 want=$3 seg
	shift 3
	start "$name" "$@"
	seg=$SHM_DIR/msgbus.$tag-$name
	if ! wait_line "$work/$name.err" '^ready$' || [ ! -e "$seg" ]; then
		fail "$name: SIG$sig" "not ready, or no $seg"
		return
	fi
	# To msgbus itself, the child of timeout(1): what is tested is how
	# msgbus ends on the signal, not how timeout(1) passes it on (under
	# load it once exited 143 and left msgbus running without the signal).
	local cmd
	cmd=$(cat "/proc/$bg/task/$bg/children" 2>/dev/null) || cmd=
	[ -n "$cmd" ] || echo "check_tool: no child of timeout found, signalling timeout" >&2
	kill -s "$sig" ${cmd:-$bg}
	finish "$bg"
	if [ "$rc" = "$want" ] && [ ! -e "$seg" ]; then
		pass "msgbus $1 ends on SIG$sig, its segment gone"
	else
		fail "msgbus $1 on SIG$sig" "exit status $rc (want $want)$([ -e "$seg" ] && echo ", $seg left")"
	fi
}
stop_test sigsub TERM 143 sub --ready "shm://$tag-sigsub" 'a.>'
stop_test sigserve INT 130 serve --ready "shm://$tag-sigserve" some.svc

# ---- links: two buses linked over 127.0.0.1 ------------------------------------

start lsub sub --ready --count 2 --listen tcp://127.0.0.1:0 "shm://$tag-la" 'news.*'
lsub=$bg
if wait_line "$work/lsub.err" '^ready$' && port=$(listen_port lsub) && [ -n "$port" ]; then
	# pub waits for the link and the peer's subscription before it publishes.
	run lpub pub --count 2 --connect "tcp://127.0.0.1:$port" "shm://$tag-lb" news.today "over tcp"
	finish "$lsub"
	if [ "$rc" = 0 ] && [ "$(cat "$work/lsub.out")" = "news.today over tcp
news.today over tcp" ] && [ "$(cat "$work/lpub.rc")" = 0 ]; then
		pass "pub --connect to sub --listen on another bus"
	else
		fail "pub --connect / sub --listen" "exit status $rc / $(cat "$work/lpub.rc")"
		cat "$work/lsub.out" "$work/lpub.err"
	fi
else
	fail "sub --listen" "no ready or listening line"
fi

# noresp_at_once NAME TEST PORT BUS: req --connect to the listener on PORT,
# from bus shm://BUS, for a service nobody serves: "no responders", well
# before its 10 s --timeout.
noresp_at_once() {
	local t0 took
	t0=$(date +%s%N)
	run "$1" req --timeout 10000 --connect "tcp://127.0.0.1:$3" "shm://$4" nobody.far "x"
	took=$((($(date +%s%N) - t0) / 1000000))
	expect "$1" "$2: no responders" 1 "" "msgbus: msgbus_call_start: no responders"
	if [ "$took" -lt 5000 ]; then
		pass "$2: at once ($took ms)"
	else
		fail "$2: at once" "took $took ms of a 10000 ms timeout"
	fi
}

start lserve serve --ready --listen tcp://127.0.0.1:0 "shm://$tag-lc" far.echo
if wait_line "$work/lserve.err" '^ready$' && port=$(listen_port lserve) && [ -n "$port" ]; then
	# req waits for the link and the peer's services before it starts.
	run lreq req --connect "tcp://127.0.0.1:$port" "shm://$tag-ld" far.echo "across"
	expect lreq "req --connect to serve --listen on another bus" 0 "across"
	# A service the peer does not serve: no responders at once, not at
	# the deadline (it waited the whole --timeout and said "timed out").
	noresp_at_once lnoresp "req --connect to a peer without the service" "$port" "$tag-ld"
else
	fail "serve --listen" "no ready or listening line"
fi

# stat --connect: the links table, the link up and declared, with its peer
# and counters.
start ssub sub --ready --listen tcp://127.0.0.1:0 "shm://$tag-le" 'x.*'
if wait_line "$work/ssub.err" '^ready$' && port=$(listen_port ssub) && [ -n "$port" ]; then
	run lstat stat --connect "tcp://127.0.0.1:$port" "shm://$tag-lf"
	if [ "$(cat "$work/lstat.rc")" = 0 ] &&
		grep -q '^links of this command: 1$' "$work/lstat.out" &&
		grep -Eq "^  tcp-connect +up +declared +127\.0\.0\.1:$port +0 +0 +0 +tcp://127\.0\.0\.1:$port\$" \
			"$work/lstat.out"; then
		pass "stat --connect: the links table"
	else
		fail "stat --connect" "exit status $(cat "$work/lstat.rc") or no link row"
		cat "$work/lstat.out"
	fi
	# A peer that serves nothing declares that it has nothing
	# (MSGBUS_LINKINFO_DECLARED): no responders at once (it waited the
	# whole --timeout for a service to be declared).
	noresp_at_once lnone "req --connect to a peer that serves nothing" "$port" "$tag-lg"
else
	fail "sub --listen for stat" "no ready or listening line"
fi
kill "$bg" 2>/dev/null
finish "$bg"

# ---- nats:// -----------------------------------------------------------------------
# A nats-server of this test's own on a loopback port it chooses (-p -1),
# read from its log, stopped by PID. sub --ready says ready only once the
# server has processed its SUB (a PING answered after it), so what pub
# sends then reaches it; pub waits for its link to be up, not for remote
# interest, which NATS never tells: it returns at once.

if ! command -v nats-server >/dev/null; then
	echo "SKIP nats://: nats-server not installed"
else
	: >"$work/natsd.log"
	nats-server -a 127.0.0.1 -p -1 -l "$work/natsd.log" &
	natsd=$!
	nport=
	if wait_line "$work/natsd.log" 'Listening for client connections on 127\.0\.0\.1:[0-9]+'; then
		nport=$(sed -n 's/.*Listening for client connections on 127\.0\.0\.1:\([0-9]*\).*/\1/p' \
			"$work/natsd.log" | head -n 1)
	fi
	if [ -z "$nport" ]; then
		fail "nats-server" "no listening line in its log"
	else
		start nsub sub --ready --count 2 "nats://127.0.0.1:$nport" subj
		nsub_pid=$bg
		if wait_line "$work/nsub.err" '^ready$'; then
			t0=$(date +%s%N)
			run npub1 pub "nats://127.0.0.1:$nport" subj DATA
			run npub2 pub "nats://127.0.0.1:$nport" subj DATA
			ms=$((($(date +%s%N) - t0) / 1000000))
			finish "$nsub_pid"
			note='msgbus: nats:// link up; NATS tells nothing of remote subscribers'
			expect npub1 "pub nats://: exit status and note" 0 "" "$note"
			expect npub2 "pub nats://: again" 0 "" "$note"
			if [ "$rc" = 0 ] && [ "$(cat "$work/nsub.out")" = "subj DATA
subj DATA" ]; then
				pass "sub --ready nats:// gets both messages"
			else
				fail "sub --ready nats://" "exit status $rc, output $(cat "$work/nsub.out")"
			fi
			# Each pub waited for its link only, far below its 5 s timeout.
			if [ "$ms" -lt 3000 ]; then
				pass "pub nats:// returns quickly ($ms ms for two)"
			else
				fail "pub nats:// returns quickly" "$ms ms for two"
			fi
		else
			fail "sub --ready nats://" "no ready line"
		fi
		run nstat stat --connect "nats://app:pw0rd@127.0.0.1:$nport" "shm://$tag-nats"
		if [ "$(cat "$work/nstat.rc")" = 0 ] &&
			grep -Eq "^  nats +up +[a-z,-]+ +127\.0\.0\.1:$nport +0 +0 +0 +nats://\*\*\*@127\.0\.0\.1:$nport\$" \
				"$work/nstat.out" && ! grep -q pw0rd "$work/nstat.out" "$work/nstat.err"; then
			pass "stat --connect nats://: the link, its password masked"
		else
			fail "stat --connect nats://" "exit status $(cat "$work/nstat.rc") or no masked row"
			cat "$work/nstat.out"
		fi
	fi
	kill "$natsd" 2>/dev/null
	wait "$natsd" 2>/dev/null
fi

# ---- bench ----------------------------------------------------------------------

run bench bench --count 200 "shm://$tag-bench"
if [ "$(cat "$work/bench.rc")" = 0 ] &&
	grep -Eq '^TEST +SIZE +COUNT +RUNS +MSGS/S +MEDIAN_US +P99_US$' "$work/bench.out" &&
	grep -Eq '^pubsub +64 +200 +5 +[0-9]+ +- +-$' "$work/bench.out" &&
	grep -Eq '^reqrep +64 +200 +1 +[0-9]+ +[0-9]+\.[0-9] +[0-9]+\.[0-9]$' "$work/bench.out"; then
	pass "bench prints its rows"
else
	fail "bench" "exit status $(cat "$work/bench.rc"), output:"
	cat "$work/bench.out" "$work/bench.err"
fi

# --size: at most max_msg_size - 16 (a request's header); one more is a usage
# error before anything runs (the reqrep test failed with 'message too
# large', exit status 1, after the pubsub rows).
run bench_max bench --count 3 --size 1048560 "shm://$tag-bench"
if [ "$(cat "$work/bench_max.rc")" = 0 ] &&
	grep -Eq '^reqrep +1048560 +3 +1 ' "$work/bench_max.out"; then
	pass "bench --size max_msg_size - 16 runs both tests"
else
	fail "bench --size 1048560" "exit status $(cat "$work/bench_max.rc"), output:"
	cat "$work/bench_max.out" "$work/bench_max.err"
fi
for size in 1048561 1048576; do
	run bench_big bench --count 3 --size $size "shm://$tag-bench"
	if [ "$(cat "$work/bench_big.rc")" = 2 ] && [ ! -s "$work/bench_big.out" ] &&
		[ "$(head -n 1 "$work/bench_big.err")" = \
			"msgbus: bad value for --size: $size (1 to 1048560 on this bus: max_msg_size 1048576 - 16)" ] &&
		grep -q '^usage: msgbus bench ' "$work/bench_big.err"; then
		pass "bench --size $size: a usage error before it starts"
	else
		fail "bench --size $size" "exit status $(cat "$work/bench_big.rc"), output:"
		cat "$work/bench_big.out" "$work/bench_big.err"
	fi
done

# ---- stat ------------------------------------------------------------------------

# A bus with one known subscription and one service: stat lists them.
url=shm://$tag-st
start stsub sub --ready "$url" 'st.>'
stsub=$bg
start stsvc serve --ready "$url" st.svc
stsvc=$bg
if wait_line "$work/stsub.err" '^ready$' && wait_line "$work/stsvc.err" '^ready$'; then
	run stat stat "$url"
	o=$work/stat.out
	if [ "$(cat "$work/stat.rc")" = 0 ] &&
		grep -Eq "^bus $url\$" "$o" &&
		grep -Eq '^  segment [0-9]+ bytes, inbox_size 1048576, max_msg_size 1048576, large_buffers 16$' "$o" &&
		grep -Eq '^participants: 3$' "$o" &&
		[ "$(grep -Ec '^  [0-9]+ +[0-9]+ +alive +(-|this command)$' "$o")" = 3 ] &&
		grep -Eq '^subscriptions: 1$' "$o" &&
		grep -Eq '^  SLOT +OWNER +MODE +DROPPED +BACKLOG +PATTERN$' "$o" &&
		grep -Eq '^  [0-9]+ +[0-9]+ +lossless +0 +0 +st\.>$' "$o" &&
		grep -Eq '^services: 1$' "$o" &&
		grep -Eq '^  1 +0 +st\.svc$' "$o"; then
		pass "stat lists the sizes, participants, the subscription and the service"
	else
		fail "stat" "exit status $(cat "$work/stat.rc"), output:"
		cat "$o" "$work/stat.err"
	fi
	# --watch redraws until SIGINT (into a file: tables separated by --).
	start watch stat --watch=50 "$url"
	if wait_line "$work/watch.out" '^--$'; then
		kill -s INT "$bg"
		finish "$bg"
		if [ "$rc" = 130 ] && [ "$(grep -c '^subscriptions: 1$' "$work/watch.out")" -ge 2 ]; then
			pass "stat --watch redraws until SIGINT"
		else
			fail "stat --watch" "exit status $rc (want 130), output:"
			cat "$work/watch.out"
		fi
	else
		fail "stat --watch" "no second table"
	fi
else
	fail "stat: sub/serve --ready" "no ready line"
fi
kill "$stsub" "$stsvc" 2>/dev/null
finish "$stsub"
finish "$stsvc"

# ---- nothing left behind -----------------------------------------------------

for p in "${bg_pids[@]}"; do
	kill "$p" 2>/dev/null
done
for p in "${bg_pids[@]}"; do
	wait "$p" 2>/dev/null
done
left=$(pgrep -f -- "$tag" || true)
if [ -n "$left" ]; then
	fail "no process left" "still running: $left"
else
	pass "no process left"
fi
segs=$(find "$SHM_DIR" -maxdepth 1 -name "msgbus.$tag*")
if [ -n "$segs" ]; then
	fail "no segment left" "$segs"
else
	pass "no segment left in $SHM_DIR"
fi

echo "tool: $passed passed"
if [ "$failed" -ne 0 ]; then
	echo "tool: $failed failed"
	exit 1
fi
