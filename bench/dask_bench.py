#!/usr/bin/python3
"""dask_bench.py - the Dask side of the benchmark (issue 3).

Runs the same workloads as shoal_bench against a Dask distributed cluster
that bench/run.sh started (one dask-scheduler, two dask-worker processes of
one thread each, on loopback), and prints one JSON object per result, in the
same shape as shoal_bench's lines ("system": "dask").

    /usr/bin/python3 bench/dask_bench.py --scheduler-file F [--sched-pid PID]
        [--workloads throughput,latency,tree,pending,million,pi,primes]
        [--n N] [--curve 100,1000] [--latency-n N] [--leaves L] [--pending-n N]
        [--darts D] [--pi-tasks T] [--primes-tasks T] [--primes-n N]

Dask runs Python: it is slow per task (hundreds of tasks per second), so the
harness gives it smaller task counts than shoal where the full count would
take minutes; every line says which count was used.
"""

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from distributed import Client


def noop(x=None, **kwargs):
    return None


def add(a, b):
    return a + b


def darts(seed, n):
    """Darts in the quarter circle out of n, numpy in chunks of 2^20."""
    rng = np.random.default_rng(seed)
    hits = 0
    left = n
    while left > 0:
        k = min(left, 1 << 20)
        x = rng.random(k)
        y = rng.random(k)
        hits += int(np.count_nonzero(x * x + y * y <= 1.0))
        left -= k
    return hits


def sum_primes(m):
    """Sum of the primes below m (sieve over the odd numbers)."""
    if m <= 2:
        return 0
    sieve = np.ones(m // 2, dtype=bool)   # index k stands for 2k + 1
    sieve[0] = False
    for k in range(1, (math.isqrt(m - 1) - 1) // 2 + 1):
        if sieve[k]:
            p = 2 * k + 1
            sieve[p * p // 2::p] = False
    ks = np.flatnonzero(sieve).astype(np.int64)
    return int(2 + 2 * int(ks.sum()) + len(ks))


def count(s):
    """A whole number, written 100000 or 1e5."""
    try:
        return int(s)
    except ValueError:
        v = float(s)
        if not math.isfinite(v) or v != math.floor(v):
            raise argparse.ArgumentTypeError("not a whole number: %r" % s)
        return int(v)


def proc_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def proc_cpu(pid):
    """User + system CPU seconds of a process (0 if it cannot be read)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def emit(workload, **fields):
    rec = {"system": "dask", "workload": workload}
    rec.update(fields)
    print(json.dumps(rec), flush=True)


def map_gather(client, n, offset):
    t0 = time.perf_counter()
    fs = client.map(noop, range(offset, offset + n))
    client.gather(fs)
    dt = time.perf_counter() - t0
    del fs
    return dt


def w_throughput(client, a):
    offset = 10 ** 9
    map_gather(client, 200, offset)   # warm-up
    offset += 200
    sizes = sorted(set(a.curve + [a.n]))
    for n in sizes:
        dt = map_gather(client, n, offset)
        offset += n
        emit("throughput", n=n, reps=1, seconds=dt, tasks_per_s=n / dt)


def w_latency(client, a):
    warm = max(10, a.latency_n // 10)
    us = []
    for i in range(warm + a.latency_n):
        t0 = time.perf_counter()
        client.submit(noop, i, pure=False).result()
        if i >= warm:
            us.append((time.perf_counter() - t0) * 1e6)
    us.sort()
    n = len(us)
    emit("latency", n=n, median_us=us[max(0, math.ceil(0.5 * n) - 1)],
         p99_us=us[max(0, math.ceil(0.99 * n) - 1)], mean_us=sum(us) / n,
         min_us=us[0], max_us=us[-1])


def w_tree(client, a):
    leaves = a.leaves
    t0 = time.perf_counter()
    level = client.map(add, list(range(0, leaves, 2)), list(range(1, leaves, 2)))
    while len(level) > 1:
        level = client.map(add, level[0::2], level[1::2])
    total = level[0].result()
    dt = time.perf_counter() - t0
    if total != leaves * (leaves - 1) // 2:
        raise SystemExit("dask tree sum is %d, expected %d" % (total, leaves * (leaves - 1) // 2))
    emit("tree", leaves=leaves, n=leaves - 1, reps=1, seconds=dt, tasks_per_s=(leaves - 1) / dt)


def _ndependents(key, dask_scheduler=None):
    """How many tasks the scheduler has that depend on `key` (-1: key unknown)."""
    ts = dask_scheduler.tasks.get(key)
    return len(ts.dependents) if ts is not None else -1


def block(name):
    """Wait (up to an hour) until the client sets the event `name`."""
    from distributed import Event
    Event(name).wait(3600)


def w_pending(client, a):
    from distributed import Event
    if not a.sched_pid:
        raise SystemExit("pending needs --sched-pid")
    map_gather(client, 1000, 0)   # warm-up, as shoal_bench does
    # The long task waits on an event rather than sleeping, so that it can be
    # let go once the measurement is taken (a running Python task cannot be
    # interrupted).
    ev = Event("bench-pending-%d" % os.getpid(), client=client)
    longf = client.submit(block, ev.name, pure=False)
    while client.run_on_scheduler(_ndependents, key=longf.key) < 0:
        time.sleep(0.02)
    rss0 = proc_kib(a.sched_pid, "VmRSS")
    t0 = time.perf_counter()
    fs = client.map(noop, range(a.pending_n), dep=longf)
    while client.run_on_scheduler(_ndependents, key=longf.key) < a.pending_n:
        time.sleep(0.05)
    submit = time.perf_counter() - t0
    rss1 = proc_kib(a.sched_pid, "VmRSS")
    emit("pending", n=a.pending_n, rss_before_kib=rss0, rss_after_kib=rss1,
         bytes_per_task=(rss1 - rss0) * 1024.0 / a.pending_n, submit_seconds=submit)
    client.cancel(fs)
    ev.set()
    longf.result(timeout=60)


def w_pi(client, a):
    ntasks = a.pi_tasks
    seeds = [20240101 + i for i in range(ntasks)]
    counts = [a.darts // ntasks + (1 if i < a.darts % ntasks else 0) for i in range(ntasks)]
    client.gather(client.map(darts, [1, 2], [1000, 1000]))   # ship the function once
    # Serial: the better of a run before and one after the parallel run, as
    # shoal_bench does (a shared machine may slow one of them down).  It runs
    # in a thread, as a Dask worker runs its tasks: numpy's large temporary
    # arrays are ~20% cheaper in a thread's malloc arena than in the main
    # one (which gives pages back to the system and faults them in again),
    # and the main thread would make Dask look better than 100% efficient.
    def serial_run():
        t0 = time.perf_counter()
        hits = sum(darts(s, c) for s, c in zip(seeds, counts))
        return hits, time.perf_counter() - t0

    pool = ThreadPoolExecutor(1)
    serial, ser = pool.submit(serial_run).result()
    pids = list(client.run(os.getpid).values())
    cpu0 = sum(proc_cpu(p) for p in pids)
    t0 = time.perf_counter()
    hits = sum(client.gather(client.map(darts, seeds, counts, pure=False)))
    par = time.perf_counter() - t0
    cpu = sum(proc_cpu(p) for p in pids) - cpu0
    ser = min(ser, pool.submit(serial_run).result()[1])
    pool.shutdown()
    if serial != hits:
        raise SystemExit("dask pi: cluster hits %d != serial %d" % (hits, serial))
    threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
    emit("pi", darts=a.darts, tasks=ntasks, threads=threads, pi=4.0 * hits / a.darts,
         parallel_seconds=par, serial_seconds=ser, speedup=ser / par,
         efficiency=ser / par / threads, workers_cpu_seconds=cpu,
         workers_cpu_share=cpu / (par * threads))


def w_primes(client, a):
    ns = [a.primes_n + i for i in range(a.primes_tasks)]
    client.gather(client.map(sum_primes, [10, 20]))   # ship the function once
    t0 = time.perf_counter()
    total = sum(client.gather(client.map(sum_primes, ns, pure=False)))
    dt = time.perf_counter() - t0
    emit("primes", tasks=len(ns), n=a.primes_n, checksum=total, seconds=dt,
         tasks_per_s=len(ns) / dt)


def w_million(client, a):
    emit("million", skipped=True, n=1000000,
         reason="not run: at Dask's measured throughput one million tasks take "
                "tens of minutes (see the throughput line)")


WORKLOADS = {
    "throughput": w_throughput, "latency": w_latency, "tree": w_tree,
    "pending": w_pending, "million": w_million, "pi": w_pi, "primes": w_primes,
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scheduler-file", required=True)
    p.add_argument("--sched-pid", type=int, default=0)
    p.add_argument("--workloads", default="throughput,latency,tree,pi,primes")
    p.add_argument("--n", type=count, default=10000)
    p.add_argument("--curve", default="100,1000")
    p.add_argument("--latency-n", type=count, default=1000)
    p.add_argument("--leaves", type=count, default=16384)
    p.add_argument("--pending-n", type=count, default=100000)
    p.add_argument("--darts", type=count, default=10 ** 9)
    p.add_argument("--pi-tasks", type=count, default=8)
    p.add_argument("--primes-tasks", type=count, default=64)
    p.add_argument("--primes-n", type=count, default=10 ** 7)
    p.add_argument("--workers", type=count, default=2)
    a = p.parse_args()
    try:
        a.curve = [int(x) for x in a.curve.split(",") if x]
    except ValueError:
        p.error("--curve: a comma-separated list of task counts")
    limits = {"n": 10 ** 7, "latency_n": 10 ** 6, "leaves": 1 << 22, "pending_n": 10 ** 7,
              "darts": 10 ** 12, "pi_tasks": 10 ** 5, "primes_tasks": 10 ** 5,
              "primes_n": 10 ** 9, "workers": 10 ** 4}
    for k, hi in limits.items():
        if not 1 <= getattr(a, k) <= hi:
            p.error("--%s: expected 1 to %d" % (k.replace("_", "-"), hi))
    if any(not 1 <= x <= 10 ** 7 for x in a.curve):
        p.error("--curve: counts from 1 to 10^7")
    if a.leaves & (a.leaves - 1) or a.leaves < 2:
        p.error("--leaves: a power of two, at least 2")
    names = [w for w in a.workloads.split(",") if w]
    for w in names:
        if w not in WORKLOADS:
            p.error("unknown workload %r (known: %s)" % (w, ", ".join(WORKLOADS)))
    client = Client(scheduler_file=a.scheduler_file, timeout=60)
    try:
        client.wait_for_workers(a.workers, timeout=120)
        for w in names:
            WORKLOADS[w](client, a)
    finally:
        client.close(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
