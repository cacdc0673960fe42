#!/bin/sh
# Runs the examples one after another: primes, graph, pi, array, then the
# graph example's JSON file through `shoal graph`.  It starts nothing
# itself: each example, given no address, connects to $SHOAL_SCHEDULER or
# $SHOAL_SCHEDULER_FILE if set, else starts (and stops) a local cluster.
# Exits non-zero if any example fails.  Run `make` first (`make demo` does both).
here=$(cd "$(dirname "$0")" && pwd) || exit 1
root=$(dirname "$here")
ex="$root/build/examples"

for name in primes graph pi array; do
    if [ ! -x "$ex/$name" ] || [ ! -f "$ex/lib$name.so" ]; then
        echo "run-demo: $ex/$name or its task library is missing; run \`make\` in $root first" >&2
        exit 1
    fi
done

if [ -n "${SHOAL_SCHEDULER:-}" ]; then
    where="the scheduler at $SHOAL_SCHEDULER"
elif [ -n "${SHOAL_SCHEDULER_FILE:-}" ]; then
    where="the scheduler named in $SHOAL_SCHEDULER_FILE"
else
    where="a local cluster (one worker per core, started and stopped by each example)"
fi
echo "shoal demo: running the examples on $where"

# The local clusters log to stderr; keep that to warnings so the results stand out.
SHOAL_LOG_LEVEL=${SHOAL_LOG_LEVEL:-warn}
export SHOAL_LOG_LEVEL

failed=""
run() {
    name=$1
    shift
    echo
    echo "=== $name: $*"
    if "$ex/$name"; then
        echo "--- $name: ok"
    else
        rc=$?
        echo "--- $name: FAILED (exit status $rc)"
        failed="$failed $name"
    fi
}

run primes "sum of the primes below 100000, 200000 and 300000, one task each"
run graph  "z = mul(inc(1), inc(2)), with futures as arguments"
run pi     "Monte Carlo estimate of pi, parallel and then serial"
# Full size (3.2 GB of chunks made and reduced on the workers, never all at
# once): about 8 s on 2 cores, the serial run included.
run array  "Dask's blocked-array demo: normal(10, 0.1) 20000 x 20000, mean(axis=0)[::100]"

# The graph example again, as a JSON graph file run by the command-line
# client (which, unlike the example programs, needs --local to start a
# cluster when no scheduler is named in the environment).
conn=--local
[ -n "${SHOAL_SCHEDULER:-}${SHOAL_SCHEDULER_FILE:-}" ] && conn=
echo
echo "=== graph-file: bin/shoal graph $conn --library build/examples/libgraph.so --get z examples/graph/graph.json"
if out=$("$root/bin/shoal" graph $conn --library "$ex/libgraph.so" --get z \
         "$here/graph/graph.json") && [ "$out" = 6 ]; then
    echo "z = $out"
    echo "--- graph-file: ok"
else
    echo "--- graph-file: FAILED (printed '$out', expected 6)"
    failed="$failed graph-file"
fi

echo
if [ -n "$failed" ]; then
    echo "shoal demo: FAILED:$failed"
    exit 1
fi
echo "shoal demo: all examples passed"
