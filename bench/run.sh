#!/bin/sh
# bench/run.sh [--quick] - the shoal benchmark, side by side with Dask distributed.
#
# Installs what is missing (Dask from Debian's python3-distributed, gnuplot),
# builds shoal (`make all`) and the benchmark programs, then on loopback:
#   - measures the ZeroMQ floor (zmqfloor);
#   - starts a shoal cluster (one scheduler, two workers of one thread each) and
#     runs the workloads against it (shoal_bench), on fresh clusters where the
#     scheduler's memory is measured, and against 2..1000 simulated workers
#     (simworkers);
#   - starts a Dask cluster of the same layout (dask-scheduler, two dask-worker
#     processes of one thread each, no nanny) and runs the same workloads
#     (dask_bench.py, with fewer tasks where Dask would take minutes);
# and writes bench/results.json, bench/results.md and bench/*.png (report.py),
# printing the table.  --quick runs the same in well under two minutes.
#
# Every process it starts is stopped by its pid when it exits, however it
# exits.  Ports are chosen by the systems themselves (port 0), so two runs can
# share a machine.  SHOAL_BENCH_NO_MAKE=1 skips `make all` (the binaries must
# exist).  Exit status: 0 if every workload ran, 1 if any failed (the table is
# still written), 2 on bad usage.
set -u

here=$(cd "$(dirname "$0")" && pwd) || exit 1
root=$(dirname "$here")
cd "$root" || exit 1

mode=full
for arg in "$@"; do
    case "$arg" in
        --quick) mode=quick ;;
        --full) mode=full ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench: unknown argument '$arg' (usage: bench/run.sh [--quick])" >&2; exit 2 ;;
    esac
done

# Dask must be Debian's, for Debian's python: never whatever `python3` is on PATH.
PY=/usr/bin/python3

# ---- sizes -------------------------------------------------------------------------
if [ "$mode" = quick ]; then
    FLOOR_RT=2000; FLOOR_ONEWAY=500000
    S_CURVE="1000 10000 100000"; S_REPS=1; S_LAT=1000; S_LEAVES=16384; S_TREE_REPS=1
    S_PENDING=100000; S_MILLION=1000000; S_DARTS=200000000; S_PRIMES_TASKS=16
    SIM_COUNTS="2 10 100 1000"; SIM_N=100000; SIM_REPS=1
    D_N=2000; D_CURVE=100,500; D_LAT=200; D_LEAVES=1024; D_PENDING=10000
    D_DARTS=200000000; D_PRIMES_TASKS=16
    LIMIT=60
else
    FLOOR_RT=10000; FLOOR_ONEWAY=2000000
    S_CURVE="1000 10000 100000"; S_REPS=3; S_LAT=1000; S_LEAVES=16384; S_TREE_REPS=3
    S_PENDING=100000; S_MILLION=1000000; S_DARTS=1000000000; S_PRIMES_TASKS=64
    SIM_COUNTS="2 10 100 1000"; SIM_N=100000; SIM_REPS=3
    D_N=10000; D_CURVE=100,1000; D_LAT=1000; D_LEAVES=16384; D_PENDING=100000
    D_DARTS=1000000000; D_PRIMES_TASKS=64
    LIMIT=600
fi
PRIMES_N=10000000
PI_TASKS=8

# ---- dependencies and build ---------------------------------------------------------
SHOAL_EXTRA_PKGS="python3-distributed python3-numpy gnuplot-nox" \
    sh tools/deps.sh || { echo "bench: cannot install the dependencies" >&2; exit 1; }
if [ "${SHOAL_BENCH_NO_MAKE:-0}" != 1 ]; then
    make --no-print-directory all || { echo "bench: make all failed" >&2; exit 1; }
fi
for f in bin/shoal-scheduler bin/shoal-worker lib/libshoal.so build/libshoal_common.a \
         build/examples/libpi.so build/examples/libprimes.so; do
    [ -e "$f" ] || { echo "bench: $f is missing; run make" >&2; exit 1; }
done
if [ ! -x /usr/bin/dask-scheduler ] || [ ! -x /usr/bin/dask-worker ]; then
    echo "bench: dask-scheduler/dask-worker not found (python3-distributed)" >&2
    exit 1
fi

# The same flags as the Makefile.
PKGS="libzmq msgpack"
# shellcheck disable=SC2086
CFLAGS_B="-std=gnu11 -O2 -g -Wall -Wextra -Werror -Wno-missing-field-initializers -fPIC -pthread -Iinclude -Icommon $(pkg-config --cflags $PKGS 2>/dev/null)"
# shellcheck disable=SC2086
LDLIBS_B="$(pkg-config --libs $PKGS 2>/dev/null || echo -lzmq -lmsgpackc) -lev -lpthread -ldl -lm"
mkdir -p build/bench
# build OUT SRC [extra objects/flags]: rebuild when the source or what it links changed.
build() {
    out=$1; src=$2; shift 2
    need=0
    [ -x "$out" ] || need=1
    for dep in "$src" common/*.h include/*.h build/libshoal_common.a lib/libshoal.so; do
        [ -n "$(find "$dep" -newer "$out" 2>/dev/null)" ] && need=1
    done
    [ $need = 1 ] || return 0
    echo "bench: cc $src"
    # shellcheck disable=SC2086
    ${CC:-cc} $CFLAGS_B -o "$out" "$src" "$@" $LDLIBS_B || { echo "bench: cannot build $out" >&2; exit 1; }
}
build build/bench/shoal_bench bench/shoal_bench.c -Llib -lshoal -Wl,-rpath,"$root/lib"
build build/bench/simworkers bench/simworkers.c build/libshoal_common.a
build build/bench/zmqfloor bench/zmqfloor.c build/libshoal_common.a

# ---- process bookkeeping ------------------------------------------------------------
work=$(mktemp -d "$root/build/bench/run.XXXXXX") || exit 1
LINES="$work/lines.jsonl"
: >"$LINES"
PIDS=""          # every process started and not yet stopped
FAILED=0

# stop PID...: SIGTERM, then SIGKILL for any still running after 10 s; reaps them.
stop() {
    [ $# -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null
    (
        i=0
        while [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$@" 2>/dev/null
    ) &
    killer=$!
    for p in "$@"; do wait "$p" 2>/dev/null; done
    kill "$killer" 2>/dev/null
    wait "$killer" 2>/dev/null
    forget "$@"
}

# forget PID...: take processes that have ended off the list.
forget() {
    left=""
    for p in $PIDS; do
        keep=1
        for q in "$@"; do [ "$p" = "$q" ] && keep=0; done
        [ $keep = 1 ] && left="$left $p"
    done
    PIDS=$left
}

# shellcheck disable=SC2317
cleanup() {
    trap - EXIT INT TERM
    # shellcheck disable=SC2086
    stop $PIDS
    if [ "$FAILED" = 0 ] && [ "${SHOAL_BENCH_KEEP:-0}" != 1 ]; then
        rm -rf "$work"
    else
        echo "bench: logs kept in $work" >&2
    fi
}
trap cleanup EXIT
trap 'FAILED=1; exit 130' INT TERM

# The scheduler holds one connection per (simulated) worker.  (dash and bash
# both have ulimit -n.)
# shellcheck disable=SC3045
[ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 8192 ] && ulimit -n 8192 2>/dev/null

# record_error SYSTEM WORKLOAD MESSAGE: a JSON line saying a workload failed.
record_error() {
    FAILED=1
    echo "bench: $1 $2 FAILED: $3" >&2
    $PY -c 'import json, sys; print(json.dumps({"system": sys.argv[1], "workload": sys.argv[2], "error": sys.argv[3]}))' \
        "$1" "$2" "$3" >>"$LINES"
}

# run SYSTEM WORKLOAD CMD...: run a benchmark program with a time limit and keep
# its JSON lines (and show them).  It runs in the background and is waited
# for, so that a signal to this script is handled at once (the shell defers
# traps while a foreground command runs) and cleanup stops it by its pid.
run() {
    sys=$1; wl=$2; shift 2
    out="$work/out.$$"
    timeout -k 5 "$LIMIT" "$@" >"$out" 2>>"$work/$sys-$wl.err" &
    tpid=$!
    PIDS="$PIDS $tpid"
    wait "$tpid"
    rc=$?
    forget "$tpid"
    grep '^{' "$out" | tee -a "$LINES" | cut -c1-160 | sed 's/^/  /'
    if [ $rc != 0 ]; then
        msg=$(tail -n 1 "$work/$sys-$wl.err" 2>/dev/null)
        [ $rc = 124 ] && msg="timed out after ${LIMIT}s; $msg"
        record_error "$sys" "$wl" "exit status $rc: $msg"
    fi
    rm -f "$out"
    return $rc
}

# wait_file PATH PID: until PATH exists and is non-empty (the scheduler is up).
wait_file() {
    i=0
    while [ ! -s "$1" ]; do
        kill -0 "$2" 2>/dev/null || return 1
        [ $i -ge 300 ] && return 1
        sleep 0.1; i=$((i + 1))
    done
    return 0
}

# ---- clusters -------------------------------------------------------------------------
# shoal_up NAME NWORKERS: start a scheduler (and workers); sets S_ADDR, S_SPID, S_PIDS.
shoal_up() {
    sf="$work/shoal-$1.json"
    rm -f "$sf"
    bin/shoal-scheduler --host 127.0.0.1 --port 0 --scheduler-file "$sf" --log-level warn \
        >"$work/shoal-$1.sched.log" 2>&1 &
    S_SPID=$!
    PIDS="$PIDS $S_SPID"
    S_PIDS=$S_SPID
    if ! wait_file "$sf" "$S_SPID"; then
        echo "bench: the shoal scheduler did not start:" >&2
        tail -n 5 "$work/shoal-$1.sched.log" >&2
        return 1
    fi
    S_ADDR=$(sed -n 's/.*"address": *"\([^"]*\)".*/\1/p' "$sf")
    i=0
    while [ $i -lt "$2" ]; do
        bin/shoal-worker "$S_ADDR" --nthreads 1 --name "bench-w$i" --death-timeout 30 \
            --log-level warn >"$work/shoal-$1.w$i.log" 2>&1 &
        PIDS="$PIDS $!"
        S_PIDS="$S_PIDS $!"
        i=$((i + 1))
    done
    return 0
}

# dask_up NAME: one dask-scheduler and two dask-workers; sets D_FILE, D_SPID, D_PIDS.
dask_up() {
    D_FILE="$work/dask-$1.json"
    rm -f "$D_FILE"
    $PY /usr/bin/dask-scheduler --host 127.0.0.1 --port 0 --scheduler-file "$D_FILE" \
        --no-dashboard >"$work/dask-$1.sched.log" 2>&1 &
    D_SPID=$!
    PIDS="$PIDS $D_SPID"
    D_PIDS=$D_SPID
    if ! wait_file "$D_FILE" "$D_SPID"; then
        echo "bench: dask-scheduler did not start:" >&2
        tail -n 5 "$work/dask-$1.sched.log" >&2
        return 1
    fi
    for i in 0 1; do
        $PY /usr/bin/dask-worker --scheduler-file "$D_FILE" --nthreads 1 --no-nanny \
            --no-dashboard --host 127.0.0.1 --name "bench-w$i" --death-timeout 60 \
            >"$work/dask-$1.w$i.log" 2>&1 &
        PIDS="$PIDS $!"
        D_PIDS="$D_PIDS $!"
    done
    return 0
}

SB=build/bench/shoal_bench
t_start=$(date +%s)
echo "bench: $mode run; logs in $work"

# The machine's load when we start and end: on a shared machine other work
# moves every figure, and the table says how busy it was.
record_load() {
    $PY -c 'import json, os, sys; print(json.dumps({"system": "host", "workload": "load", "when": sys.argv[1], "loadavg_1min": os.getloadavg()[0], "cpus": os.cpu_count()}))' \
        "$1" >>"$LINES"
}
record_load start

# ---- 8. the floor ----------------------------------------------------------------------
echo "== ZeroMQ floor"
run zeromq floor build/bench/zmqfloor --rt "$FLOOR_RT" --oneway "$FLOOR_ONEWAY"

# ---- shoal ----------------------------------------------------------------------------
echo "== shoal: throughput, latency, tree, pi, primes (1 scheduler, 2 workers x 1 thread)"
if shoal_up main 2; then
    for n in $S_CURVE; do
        run shoal throughput $SB "$S_ADDR" throughput --n "$n" --reps "$S_REPS"
    done
    run shoal latency $SB "$S_ADDR" latency --n "$S_LAT"
    # The same with the client's busy-polling off: what a client that
    # sleeps while it waits gets (a diagnostic row).
    run shoal latency-nospin env SHOAL_SPIN_US=0 $SB "$S_ADDR" latency --n "$S_LAT" \
        --label nospin
    run shoal tree $SB "$S_ADDR" tree --leaves "$S_LEAVES" --reps "$S_TREE_REPS"
    run shoal pi $SB "$S_ADDR" pi --darts "$S_DARTS" --tasks "$PI_TASKS" \
        --library build/examples/libpi.so
    run shoal primes $SB "$S_ADDR" primes --tasks "$S_PRIMES_TASKS" --n "$PRIMES_N" \
        --library build/examples/libprimes.so
else
    record_error shoal cluster "the shoal cluster did not start"
fi
# shellcheck disable=SC2086
stop $S_PIDS

# The memory workloads each get a fresh scheduler, so that what earlier
# workloads left in its heap does not hide the growth.
echo "== shoal: memory per pending task (fresh cluster)"
if shoal_up pending 2; then
    run shoal pending $SB "$S_ADDR" pending --n "$S_PENDING" --sched-pid "$S_SPID"
fi
# shellcheck disable=SC2086
stop $S_PIDS

echo "== shoal: one million tasks (fresh cluster)"
if shoal_up million 2; then
    run shoal million $SB "$S_ADDR" million --n "$S_MILLION" --sched-pid "$S_SPID"
fi
# shellcheck disable=SC2086
stop $S_PIDS

echo "== shoal: simulated workers (fresh scheduler each)"
for k in $SIM_COUNTS; do
    shoal_up "sim$k" 0 || { record_error shoal simworkers "scheduler did not start"; continue; }
    build/bench/simworkers "$S_ADDR" --n "$k" --quiet >"$work/sim$k.out" 2>"$work/sim$k.err" &
    simpid=$!
    PIDS="$PIDS $simpid"
    run shoal "sim$k" $SB "$S_ADDR" throughput --n "$SIM_N" --reps "$SIM_REPS" \
        --workers "$k" --label "sim$k"
    # Round trips with workers that answer at once: transport and scheduler
    # only, so the difference to workload 2 is the real worker's own cost.
    [ "$k" = 2 ] && run shoal "latency-sim$k" $SB "$S_ADDR" latency --n "$S_LAT" \
        --workers "$k" --label "sim$k"
    stop $simpid
    grep '^{' "$work/sim$k.out" >>"$LINES"
    # shellcheck disable=SC2086
    stop $S_PIDS
done

# ---- Dask -------------------------------------------------------------------------------
echo "== Dask: throughput, latency, tree, pi, primes (1 scheduler, 2 workers x 1 thread)"
if dask_up main; then
    run dask main $PY bench/dask_bench.py --scheduler-file "$D_FILE" \
        --workloads throughput,latency,tree,pi,primes,million --n "$D_N" --curve "$D_CURVE" \
        --latency-n "$D_LAT" --leaves "$D_LEAVES" --darts "$D_DARTS" --pi-tasks "$PI_TASKS" \
        --primes-tasks "$D_PRIMES_TASKS" --primes-n "$PRIMES_N"
else
    record_error dask cluster "the Dask cluster did not start"
fi
# shellcheck disable=SC2086
stop $D_PIDS

echo "== Dask: memory per pending task (fresh cluster)"
if dask_up pending; then
    run dask pending $PY bench/dask_bench.py --scheduler-file "$D_FILE" \
        --workloads pending --pending-n "$D_PENDING" --sched-pid "$D_SPID"
fi
# shellcheck disable=SC2086
stop $D_PIDS

# ---- report -----------------------------------------------------------------------------
record_load end
echo "== results ($(($(date +%s) - t_start)) s)"
echo
$PY bench/report.py "$LINES" --mode "$mode" --json bench/results.json --md bench/results.md \
    --plots bench --workdir "$work" || FAILED=1
[ "$FAILED" = 0 ] || exit 1
exit 0
