#!/usr/bin/python3
"""report.py - turn the benchmark's JSON lines into the table, results.json
and the gnuplot plots.

    /usr/bin/python3 bench/report.py LINES.jsonl --mode quick|full \
        --json bench/results.json --md bench/results.md --plots bench/ [--no-plots]

LINES holds one JSON object per line as printed by shoal_bench, simworkers
(wrapped by run.sh), zmqfloor and dask_bench.  Lines that do not parse are
reported and skipped.  The table goes to stdout and to the Markdown file.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys


def load(path):
    recs = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                print("report: %s:%d: not JSON, skipped: %.100s" % (path, i, line), file=sys.stderr)
                continue
            if isinstance(rec, dict):
                recs.append(rec)
    return recs


def find(recs, system, workload, **match):
    """The last record of system/workload whose fields equal `match`."""
    for r in reversed(recs):
        if r.get("system") == system and r.get("workload") == workload and \
                all(r.get(k) == v for k, v in match.items()) and "error" not in r:
            return r
    return None


def fmt_num(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    a = abs(v)
    if a >= 1e5:
        return "{:,.0f}".format(v)
    if a >= 100:
        return "{:,.0f}".format(v)
    if a >= 10:
        return "{:.1f}".format(v)
    return "{:.{d}g}".format(v, d=digits)


def row(workload, metric, unit, shoal, dask, better, dask_note="", floor=None,
        target=None, target_ok=None, shoal_note=""):
    """One table row.  better: 'higher' or 'lower' (for the advantage)."""
    adv = None
    if better in ("higher", "lower") and isinstance(shoal, (int, float)) and \
            isinstance(dask, (int, float)) and shoal > 0 and dask > 0:
        adv = shoal / dask if better == "higher" else dask / shoal
    return {
        "workload": workload, "metric": metric, "unit": unit,
        "shoal": shoal, "dask": dask, "better": better,
        "shoal_advantage": adv, "dask_note": dask_note, "shoal_note": shoal_note,
        "floor_fraction": floor, "target": target,
        "meets_target": target_ok,
    }


def build_table(recs):
    t = []
    floor = find(recs, "zeromq", "floor")
    rt_floor = floor["rt_median_us"] if floor else None
    # A waiting shoal client busy-polls (client.c, "Busy-polling"): its round
    # trips are held against ZeroMQ's with a busy-polling requester.
    busy_floor = floor.get("rt_busy_median_us", rt_floor) if floor else None
    rate_floor = floor["oneway_msgs_per_s"] if floor else None

    # 1. Throughput: shoal's headline is its largest N on two real workers.
    sth = [r for r in recs if r.get("system") == "shoal" and r.get("workload") == "throughput"
           and "label" not in r and "error" not in r]
    dth = [r for r in recs if r.get("system") == "dask" and r.get("workload") == "throughput"
           and "error" not in r]
    s1 = max(sth, key=lambda r: r["n"]) if sth else None
    d1 = max(dth, key=lambda r: r["n"]) if dth else None
    sv = s1["tasks_per_s"] if s1 else None
    t.append(row("1. throughput (no-op map + gather)", "tasks/s", "tasks/s", sv,
                 d1["tasks_per_s"] if d1 else None, "higher",
                 dask_note="N=%d" % d1["n"] if d1 else "",
                 shoal_note="N=%d" % s1["n"] if s1 else "",
                 floor=(sv / rate_floor) if sv and rate_floor else None,
                 target=">= 200,000", target_ok=(sv >= 200000) if sv else None))

    # 2. Latency (two real workers; the simulated-worker run is a diagnostic).
    sl = None
    for r in reversed(recs):
        if r.get("system") == "shoal" and r.get("workload") == "latency" and \
                "label" not in r and "error" not in r:
            sl = r
            break
    dl = find(recs, "dask", "latency")
    smed = sl["median_us"] if sl else None
    t.append(row("2. round trip, median", "median", "us", smed,
                 dl["median_us"] if dl else None, "lower",
                 dask_note="N=%d" % dl["n"] if dl else "",
                 shoal_note="N=%d" % sl["n"] if sl else "",
                 floor=(busy_floor / smed) if smed and busy_floor else None,
                 target="<= 200", target_ok=(smed <= 200) if smed else None))
    busy_p99 = floor.get("rt_busy_p99_us", floor["rt_p99_us"]) if floor else None
    t.append(row("2. round trip, p99", "p99", "us", sl["p99_us"] if sl else None,
                 dl["p99_us"] if dl else None, "lower",
                 floor=(busy_p99 / sl["p99_us"]) if sl and busy_p99 else None))
    if sl and "status_rt_median_us" in sl:
        t.append(row("2. diagnostic: client-scheduler STATUS round trip", "median", "us",
                     sl["status_rt_median_us"], None, "lower",
                     floor=(busy_floor / sl["status_rt_median_us"]) if busy_floor else None))
    snospin = find(recs, "shoal", "latency", label="nospin")
    if snospin:
        t.append(row("2. diagnostic: round trip, client not busy-polling", "median", "us",
                     snospin["median_us"], None, "lower", shoal_note="SHOAL_SPIN_US=0",
                     floor=(rt_floor / snospin["median_us"]) if rt_floor else None))
    ssim = find(recs, "shoal", "latency", label="sim2")
    if ssim:
        t.append(row("2. diagnostic: round trip, simulated worker", "median", "us",
                     ssim["median_us"], None, "lower",
                     shoal_note="worker answers at once",
                     floor=(busy_floor / ssim["median_us"]) if busy_floor else None))

    # 3. Tree.
    st, dt = find(recs, "shoal", "tree"), find(recs, "dask", "tree")
    sv = st["tasks_per_s"] if st else None
    t.append(row("3. tree reduction (pairwise sum)", "tasks/s", "tasks/s", sv,
                 dt["tasks_per_s"] if dt else None, "higher",
                 dask_note="%d leaves" % dt["leaves"] if dt else "",
                 shoal_note="%d leaves" % st["leaves"] if st else "",
                 floor=(sv / rate_floor) if sv and rate_floor else None,
                 target=">= 100,000", target_ok=(sv >= 100000) if sv else None))

    # 4. Pending memory.
    sp, dp = find(recs, "shoal", "pending"), find(recs, "dask", "pending")
    sv = sp["bytes_per_task"] if sp else None
    t.append(row("4. scheduler memory per pending task", "bytes/task", "bytes", sv,
                 dp["bytes_per_task"] if dp else None, "lower",
                 dask_note="N=%d" % dp["n"] if dp else "",
                 shoal_note="N=%d" % sp["n"] if sp else "",
                 target="<= 300", target_ok=(sv <= 300) if sv is not None else None))

    # 5. One million.
    sm, dm = find(recs, "shoal", "million"), find(recs, "dask", "million")
    dnote = "not run" if dm and dm.get("skipped") else ""
    t.append(row("5. one million tasks: submission", "submit", "s",
                 sm["submit_seconds"] if sm else None, None, "lower", dask_note=dnote))
    sv = sm["seconds"] if sm else None
    t.append(row("5. one million tasks: total", "total", "s", sv, None, "lower",
                 dask_note=dnote, target="<= 10", target_ok=(sv <= 10) if sv else None))
    t.append(row("5. one million tasks: peak scheduler RSS", "peak RSS", "MiB",
                 sm["sched_peak_kib"] / 1024.0 if sm else None, None, "lower", dask_note=dnote))

    # 6. Many workers: 1,000 simulated against two real (and two simulated).
    sims = {}
    for r in recs:
        if r.get("system") == "shoal" and r.get("workload") == "throughput" and \
                str(r.get("label", "")).startswith("sim") and "error" not in r:
            try:
                sims[int(r["label"][3:])] = r
            except ValueError:
                pass
    s1000 = sims.get(1000)
    sv = s1000["tasks_per_s"] if s1000 else None
    two_real = s1["tasks_per_s"] if s1 else None
    frac = sv / two_real if sv and two_real else None
    t.append(row("6. 1,000 simulated workers", "tasks/s", "tasks/s", sv, None, "higher",
                 dask_note="not run",
                 shoal_note=("%.0f%% of two real workers" % (100 * frac)) if frac else "",
                 target=">= 80% of two-worker", target_ok=(frac >= 0.8) if frac else None))
    if sims.get(2) and sv:
        pct = 100.0 * sv / sims[2]["tasks_per_s"]
        t.append(row("6. 1,000 vs 2 simulated workers", "ratio", "%", pct, None, "higher",
                     dask_note="not run", target=">= 80", target_ok=pct >= 80))

    # 7. Examples.
    spi, dpi = find(recs, "shoal", "pi"), find(recs, "dask", "pi")
    sv = spi["efficiency"] * 100 if spi else None
    t.append(row("7. pi: parallel efficiency on 2 workers", "efficiency", "%", sv,
                 dpi["efficiency"] * 100 if dpi else None, "higher",
                 dask_note="%.0e darts (numpy)" % dpi["darts"] if dpi else "",
                 shoal_note="%.0e darts" % spi["darts"] if spi else "",
                 target=">= 95", target_ok=(sv >= 95) if sv else None))
    if spi and "workers_cpu_share" in spi:
        t.append(row("7. pi: CPU the workers got (share of 2 cores)", "share", "%",
                     100 * spi["workers_cpu_share"],
                     100 * dpi["workers_cpu_share"] if dpi and "workers_cpu_share" in dpi
                     else None, "none",
                     shoal_note="below 100: the machine was busy with other work"))
    t.append(row("7. pi: wall time on 2 workers", "time", "s",
                 spi["parallel_seconds"] if spi else None,
                 dpi["parallel_seconds"] if dpi else None, "lower"))
    spr, dpr = find(recs, "shoal", "primes"), find(recs, "dask", "primes")
    note = ""
    if spr and dpr:
        note = "checksums agree" if spr["checksum"] == dpr["checksum"] and \
            spr["n"] == dpr["n"] and spr["tasks"] == dpr["tasks"] else "CHECKSUMS DIFFER"
    t.append(row("7. sum of primes", "time", "s", spr["seconds"] if spr else None,
                 dpr["seconds"] if dpr else None, "lower",
                 shoal_note="%d tasks, n=%.0e" % (spr["tasks"], spr["n"]) if spr else "",
                 dask_note=note or ("%d tasks (numpy)" % dpr["tasks"] if dpr else "")))

    # 8. The floor itself.
    if floor:
        t.append(row("8. ZeroMQ floor: round trip median", "median", "us", rt_floor, None,
                      "lower", shoal_note="ROUTER/DEALER, tcp loopback"))
        if "rt_busy_median_us" in floor:
            t.append(row("8. ZeroMQ floor: round trip median, requester busy-polling", "median",
                          "us", floor["rt_busy_median_us"], None, "lower",
                          shoal_note="what a waiting shoal client does"))
        t.append(row("8. ZeroMQ floor: one-way rate", "rate", "msgs/s", rate_floor, None,
                      "higher", shoal_note="%d-byte messages" % floor["size"]))
    return t


def markdown(table, meta):
    out = []
    load = ""
    if meta.get("load_start") is not None:
        load = "  Load average (1 min) %.2f at the start, %s at the end (this run's own " \
            "processes included)." % (meta["load_start"],
                                      "%.2f" % meta["load_end"] if meta.get("load_end")
                                      is not None else "?")
    out.append("Benchmark (%s mode), %s, %s, %d cores; Dask %s.%s" % (
        meta["mode"], meta["date"], meta["host"], meta["cpus"], meta.get("dask", "?"), load))
    out.append("")
    out.append("| workload | unit | shoal | Dask | shoal advantage | vs ZeroMQ floor | target | met |")
    out.append("|---|---|---|---|---|---|---|---|")
    for r in table:
        s = fmt_num(r["shoal"])
        if r["shoal_note"]:
            s += " (%s)" % r["shoal_note"]
        d = fmt_num(r["dask"])
        if r["dask_note"]:
            d = (d + " (%s)" % r["dask_note"]) if r["dask"] is not None else r["dask_note"]
        adv = ("%sx" % fmt_num(r["shoal_advantage"])) if r["shoal_advantage"] else "-"
        fl = ("%.2f" % r["floor_fraction"]) if r["floor_fraction"] is not None else "-"
        met = {True: "yes", False: "NO", None: "-"}[r["meets_target"]]
        out.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["workload"], r["unit"], s, d, adv, fl, r["target"] or "-", met))
    out.append("")
    out.append("shoal advantage: shoal/Dask for rates, Dask/shoal for times and sizes "
               "(above 1 means shoal is better).  vs ZeroMQ floor: for rates, shoal's "
               "tasks/s over ZeroMQ's one-way small-message rate (each task costs at "
               "least four messages unbatched; batching lets this exceed 1/4); for the "
               "round trip, ZeroMQ's round trip over shoal's (a shoal round trip is at "
               "least two ZeroMQ round trips: client-scheduler and scheduler-worker, so "
               "0.5 is the practical ceiling), with the busy-polling requester's round "
               "trip where shoal's client busy-polls (it does by default while few of its "
               "tasks are unfinished; the row with SHOAL_SPIN_US=0 shows it without).  "
               "Dask runs fewer tasks where the full "
               "count would take minutes: the N in each cell is the count used.")
    return "\n".join(out) + "\n"


def plots(recs, outdir, workdir):
    if not shutil.which("gnuplot"):
        print("report: gnuplot not found, no plots", file=sys.stderr)
        return []
    made = []
    # Throughput against the number of tasks, both systems.
    series = {}
    for sysname in ("shoal", "dask"):
        pts = sorted((r["n"], r["tasks_per_s"]) for r in recs
                     if r.get("system") == sysname and r.get("workload") == "throughput"
                     and "label" not in r and "error" not in r)
        m = find(recs, sysname, "million")
        if m and not m.get("skipped") and "tasks_per_s" in m:
            pts.append((m["n"], m["tasks_per_s"]))
        series[sysname] = sorted(pts)
    files = {}
    for k, pts in series.items():
        p = os.path.join(workdir, "tp_%s.dat" % k)
        with open(p, "w") as f:
            for n, v in pts:
                f.write("%d %f\n" % (n, v))
        files[k] = p
    png = os.path.join(outdir, "throughput.png")
    script = """set terminal pngcairo size 800,500 noenhanced
set output '%s'
set title 'No-op throughput (map + gather), 2 workers x 1 thread'
set logscale xy
set xlabel 'tasks'
set ylabel 'tasks per second'
set key bottom right
set grid
plot '%s' using 1:2 with linespoints lw 2 pt 7 title 'shoal', \\
     '%s' using 1:2 with linespoints lw 2 pt 5 title 'Dask distributed'
""" % (png, files["shoal"], files["dask"])
    if series["shoal"] or series["dask"]:
        if _gnuplot(script, series):
            made.append(png)

    # Scaling against the number of simulated workers.
    sims = []
    for r in recs:
        if r.get("system") == "shoal" and r.get("workload") == "throughput" and \
                str(r.get("label", "")).startswith("sim") and "error" not in r:
            try:
                sims.append((int(r["label"][3:]), r["tasks_per_s"]))
            except ValueError:
                pass
    if sims:
        p = os.path.join(workdir, "sim.dat")
        with open(p, "w") as f:
            for k, v in sorted(sims):
                f.write("%d %f\n" % (k, v))
        sth = [r for r in recs if r.get("system") == "shoal" and r.get("workload") == "throughput"
               and "label" not in r and "error" not in r]
        two = max(sth, key=lambda r: r["n"])["tasks_per_s"] if sth else None
        png = os.path.join(outdir, "workers.png")
        extra = ""
        if two:
            extra = (", %f with lines dt 2 lw 2 title 'two real workers', "
                     "%f with lines dt 3 lw 1 title '80%% of two real workers'" % (two, 0.8 * two))
        script = """set terminal pngcairo size 800,500 noenhanced
set output '%s'
set title 'shoal scheduler throughput against simulated workers'
set logscale x
set xlabel 'simulated workers (1 thread each, tasks complete at once)'
set ylabel 'tasks per second'
set yrange [0:*]
set key bottom left
set grid
plot '%s' using 1:2 with linespoints lw 2 pt 7 title 'shoal, simulated workers'%s
""" % (png, p, extra)
        if _gnuplot(script, {"sim": sims}):
            made.append(png)
    return made


def _gnuplot(script, series):
    try:
        r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True,
                           timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        print("report: gnuplot: %s" % e, file=sys.stderr)
        return False
    if r.returncode != 0:
        print("report: gnuplot failed: %s" % r.stderr.strip()[:500], file=sys.stderr)
        return False
    return True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("lines")
    p.add_argument("--mode", choices=["quick", "full"], required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("--plots", required=True)
    p.add_argument("--workdir", default=None)
    p.add_argument("--no-plots", action="store_true")
    a = p.parse_args()
    recs = load(a.lines)
    meta = {
        "mode": a.mode,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": "%s %s" % (platform.system(), platform.release()),
        "cpus": os.cpu_count() or 0,
        "python": platform.python_version(),
    }
    try:
        import distributed
        meta["dask"] = distributed.__version__
    except ImportError:
        meta["dask"] = "not installed"
    for when in ("start", "end"):
        r = find(recs, "host", "load", when=when)
        meta["load_" + when] = r["loadavg_1min"] if r else None
    table = build_table(recs)
    made = [] if a.no_plots else plots(recs, a.plots, a.workdir or os.path.dirname(a.lines))
    errors = [r for r in recs if "error" in r]
    with open(a.json, "w") as f:
        json.dump({"meta": meta, "table": table, "plots": [os.path.basename(m) for m in made],
                   "errors": errors, "raw": recs}, f, indent=1)
        f.write("\n")
    md = markdown(table, meta)
    if made:
        md += "\nPlots: %s\n" % ", ".join(os.path.basename(m) for m in made)
    if errors:
        md += "\nFailed workloads:\n" + "".join(
            "- %s %s: %s\n" % (r.get("system"), r.get("workload"), r["error"]) for r in errors)
    with open(a.md, "w") as f:
        f.write(md)
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
