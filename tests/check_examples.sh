#!/usr/bin/env bash
# check_examples.sh - smoke test for the programs in examples/.
#
# Runs each example binary from $EXAMPLES_DIR (default ./build) under a
# timeout, checks it exits 0, prints the expected lines, and leaves no
# shared-memory segment of its own behind in /dev/shm.
set -eu

EXAMPLES_DIR=${EXAMPLES_DIR:-./build}
SHM_DIR=${SHM_DIR:-/dev/shm}
TIMEOUT=${TIMEOUT:-30}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0

# run_example NAME EXPECTED_LINE...
# Each EXPECTED_LINE must appear as a whole line of the program's stdout;
# if $work/NAME.expected exists, stdout must equal it exactly.
run_example() {
	local name=$1 bin=$EXAMPLES_DIR/$1 pid status=0 line ok=1
	shift
	if [ ! -x "$bin" ]; then
		echo "FAIL $name: $bin not found or not executable"
		failed=$((failed + 1))
		return
	fi
	# The examples name their bus after their own pid; the wrapper shell
	# records its pid and execs the example, so both pids are the same.
	# timeout signals the whole process group, forked children included.
	# shellcheck disable=SC2016 # $$ is for the inner shell to expand
	timeout -k 5 "$TIMEOUT" sh -c 'echo $$ >"$1"; exec "$2"' sh \
		"$work/$name.pid" "$bin" >"$work/$name.out" 2>"$work/$name.err" ||
		status=$?
	pid=$(cat "$work/$name.pid" 2>/dev/null || echo unknown)

	if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
		echo "FAIL $name: timed out after ${TIMEOUT}s"
		ok=0
	elif [ "$status" -ne 0 ]; then
		echo "FAIL $name: exit status $status"
		ok=0
	fi
	for line in "$@"; do
		if ! grep -qxF -- "$line" "$work/$name.out"; then
			echo "FAIL $name: missing line: $line"
			ok=0
		fi
	done
	if [ -f "$work/$name.expected" ] &&
		! diff -u "$work/$name.expected" "$work/$name.out"; then
		echo "FAIL $name: output differs from the expected output"
		ok=0
	fi
	# Its buses: msgbus.NAME-PID, or msgbus.NAME-ROLE-PID for several.
	for seg in "$SHM_DIR/msgbus.$name-$pid" "$SHM_DIR/msgbus.$name"-*-"$pid"; do
		if [ -e "$seg" ]; then
			echo "FAIL $name: left $seg behind"
			rm -f "$seg"
			ok=0
		fi
	done

	if [ "$ok" -eq 1 ]; then
		echo "PASS $name"
		passed=$((passed + 1))
	else
		echo "--- $name stdout:"
		cat "$work/$name.out"
		echo "--- $name stderr:"
		cat "$work/$name.err"
		failed=$((failed + 1))
	fi
}

# Worker lines interleave differently from run to run: check them one by one.
run_example notify \
	'worker 1 got post 1: "hello from alice"' \
	'worker 1 got post 5: "erin liked your post"' \
	'worker 2 got post 1: "hello from alice"' \
	'worker 2 got post 5: "erin liked your post"' \
	'worker 1 received 5 posts' \
	'worker 2 received 5 posts' \
	'post service: published 5 posts, 2 of 2 workers ok'

# The report does not depend on scheduling: compare all of it.
cat >"$work/report.expected" <<'EOF'
orders: 4 created, 2 updated, total 10589 cents
customers: 3 created (alice, bob, carol)
products: 2 updated, stock +17
report: 11 events
EOF
run_example report \
	'orders: 4 created, 2 updated, total 10589 cents' \
	'customers: 3 created (alice, bob, carol)' \
	'products: 2 updated, stock +17' \
	'report: 11 events'

# Request/reply: the orders are placed one after the other and the inventory
# answers in order, so the whole output is fixed.
cat >"$work/order.expected" <<'EOF'
order 1: 2 x widget -> confirmed
order 2: 1 x gizmo -> confirmed
order 3: 9 x gadget -> rejected (out of stock: need 9 have 4)
order 4: 4 x gadget -> confirmed
orders: 3 confirmed, 1 rejected
EOF
run_example order \
	'order 1: 2 x widget -> confirmed' \
	'order 3: 9 x gadget -> rejected (out of stock: need 9 have 4)' \
	'orders: 3 confirmed, 1 rejected'

# No responders before the auth service runs, accepted/invalid tokens, a
# timeout (the service takes 200 ms, the gateway waits 50 ms) whose late
# reply the service sees dropped. The gateway's stdout is line buffered and
# the service prints before it exits, so the whole output is fixed too.
cat >"$work/auth.expected" <<'EOF'
token alice-123: auth unavailable (no responders), rejected
gateway: auth service is up
token alice-123: accepted
token bob-456: accepted
token mallory-000: rejected (invalid token)
token carol-789: accepted
token slow-dave: rejected (auth timed out)
auth service: 5 requests, late replies dropped: 1
gateway: 3 accepted, 3 rejected
EOF
run_example auth \
	'token alice-123: auth unavailable (no responders), rejected' \
	'token alice-123: accepted' \
	'token mallory-000: rejected (invalid token)' \
	'token slow-dave: rejected (auth timed out)' \
	'gateway: 3 accepted, 3 rejected'

# One poll loop: the lines of each stream come in order, but the three
# streams interleave as the processes run; check them one by one.
run_example evloop \
	'orders.new: order 1: widget' \
	'orders.new: order 2: gizmo' \
	'orders.new: order 3: gadget' \
	'stock.update: widget +10' \
	'stock.update: gizmo +20' \
	'client: quote for widget -> 250 cents' \
	'client: quote for gizmo -> 1200 cents' \
	'client: quote for gadget -> 75 cents' \
	'evloop: 3 orders, 2 stock updates, 3 quotes from one poll loop'

# The notification example over a TCP link between two buses: the same
# worker lines, then the service's summary.
run_example bridge \
	'worker 1 got post 1: "hello from alice"' \
	'worker 1 got post 2: "bob shared a photo"' \
	'worker 1 got post 3: "carol joined the team"' \
	'worker 1 got post 4: "dave: lunch at noon?"' \
	'worker 1 got post 5: "erin liked your post"' \
	'worker 2 got post 1: "hello from alice"' \
	'worker 2 got post 2: "bob shared a photo"' \
	'worker 2 got post 3: "carol joined the team"' \
	'worker 2 got post 4: "dave: lunch at noon?"' \
	'worker 2 got post 5: "erin liked your post"' \
	'worker 1 received 5 posts' \
	'worker 2 received 5 posts' \
	'post service: published 5 posts over tcp, 2 of 2 workers ok'
if [ -f "$work/bridge.out" ] && [ "$(tail -n 1 "$work/bridge.out")" != \
	'post service: published 5 posts over tcp, 2 of 2 workers ok' ]; then
	echo "FAIL bridge: the summary is not the last line"
	failed=$((failed + 1))
fi
if [ -f "$work/bridge.out" ] && [ "$(wc -l <"$work/bridge.out")" -ne 13 ]; then
	echo "FAIL bridge: $(wc -l <"$work/bridge.out") lines of output, want 13"
	failed=$((failed + 1))
fi

# The order and notification examples across two buses joined through a
# nats-server that this script starts on a loopback port and stops by PID.
NATS_SERVER=${NATS_SERVER-$(command -v nats-server || echo /usr/sbin/nats-server)}
natsd_pid=
natsd_stop() {
	if [ -n "$natsd_pid" ]; then
		kill "$natsd_pid" 2>/dev/null || true
		wait "$natsd_pid" 2>/dev/null || true
		natsd_pid=
	fi
}
# natsd_start: tries a few random ports; sets natsd_port once the server
# says it is ready (bounded, 5 s a try), or returns 1.
natsd_start() {
	# (the loop variables are unused: plain counts)
	for _ in 1 2 3 4 5; do
		natsd_port=$((20000 + RANDOM % 30000))
		"$NATS_SERVER" -a 127.0.0.1 -p "$natsd_port" >"$work/natsd.log" 2>&1 &
		natsd_pid=$!
		for _ in $(seq 100); do
			# Gone: the port was taken (or the server failed); next.
			kill -0 "$natsd_pid" 2>/dev/null || break
			if grep -q 'Server is ready' "$work/natsd.log"; then
				return 0
			fi
			sleep 0.05
		done
		natsd_stop
	done
	echo "nats-server did not start; its last words:"
	cat "$work/natsd.log"
	return 1
}
if [ -z "$NATS_SERVER" ] || [ ! -x "$NATS_SERVER" ]; then
	echo "SKIP nats_bridge: nats-server is not installed"
elif ! natsd_start; then
	echo "FAIL nats_bridge: could not start nats-server"
	failed=$((failed + 1))
else
	trap 'natsd_stop; rm -rf "$work"' EXIT
	cat >"$work/nats_bridge.expected" <<'EOF'
bus A and bus B linked through the nats server
bus B reaches bus A's inventory
order 1: 2 x widget -> confirmed
order 2: 1 x gizmo -> confirmed
order 3: 9 x gadget -> rejected (out of stock: need 9 have 4)
order 4: 4 x gadget -> confirmed
orders: 3 confirmed, 1 rejected
worker 1 got post 1: "hello from alice"
worker 1 got post 2: "bob shared a photo"
worker 1 got post 3: "carol joined the team"
worker 1 got post 4: "dave: lunch at noon?"
worker 1 got post 5: "erin liked your post"
worker 1 received 5 posts
worker 2 got post 1: "hello from alice"
worker 2 got post 2: "bob shared a photo"
worker 2 got post 3: "carol joined the team"
worker 2 got post 4: "dave: lunch at noon?"
worker 2 got post 5: "erin liked your post"
worker 2 received 5 posts
post service: published 5 posts through nats, 2 of 2 workers ok
EOF
	NATS_URL=nats://127.0.0.1:$natsd_port run_example nats_bridge \
		'orders: 3 confirmed, 1 rejected' \
		'worker 1 received 5 posts' \
		'worker 2 received 5 posts' \
		'post service: published 5 posts through nats, 2 of 2 workers ok'
	natsd_stop
fi

echo "examples: $passed passed"
if [ "$failed" -ne 0 ]; then
	echo "examples: $failed failed"
	exit 1
fi
