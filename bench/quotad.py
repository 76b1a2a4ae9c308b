#!/usr/bin/env python3
"""quotad's speed (make bench-quotad): decisions per second and p50/p99 latency, with Redis
beside it on this machine, at saturation and at a fixed offered load; and redis-benchmark
running the same script (EVALSHA of quotad/src/take.lua, two limits per call) as the ceiling.

Every call is admitted (limits far above the load), so each does the full check-and-take.

The load generator is h2load (C, nghttp2), sending one ShouldRateLimit body (written by
`quotad-load --write-body`, prost-encoded) over 4 HTTP/2 connections x 16 streams: on a 2-core
machine the load generator's CPU is taken from quotad and Redis, and h2load costs ~7 us of CPU
per call where the tonic client `quotad-load` costs ~19 us, so h2load is the like-for-like
counterpart of redis-benchmark (also C) on the ceiling's side. h2load counts HTTP statuses and a
gRPC error is an HTTP 200 with a grpc-status trailer, so every run's outcomes are read from
quotad's own counter (quotad_decisions_total by code) before and after: a run with any outcome
but `ok` is reported with its errors. h2load's body names one consumer; `quotad-load` (the tonic
client, 10 000 consumers round-robin) runs once more at saturation to show the spread of keys
changes nothing but the client's cost. Writes bench/out/quotad.json and prints a table. Target (issue 10): quotad saturated >= 50% of
the ceiling, p99 < 2 ms at an offered load of half the ceiling.
"""

import argparse
import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    sys.exit(f"bench-quotad: {what} not within {seconds} s")


def redis_cli(port, *args):
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=False
    ).stdout.strip()


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


PIDS = {}
H2LOAD_CONNECTIONS = 4
H2LOAD_STREAMS = 16


def decisions(http):
    """quotad_decisions_total by code, from quotad's /metrics."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5).read().decode()
    counts = {}
    for m in re.finditer(r'^quotad_decisions_total\{code="(\w+)"\} (\d+)', text, re.M):
        counts[m.group(1)] = int(m.group(2))
    return counts


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    rank = round(p / 100 * (len(sorted_values) - 1))
    return sorted_values[min(rank, len(sorted_values) - 1)]


def h2load(grpc, http, body, seconds, rate=0):
    """One h2load run (closed loop, or --rps per connection for a fixed offered load)."""
    before_cpu = {name: cpu_seconds(pid) for name, pid in PIDS.items()}
    before = decisions(http)
    log = tempfile.NamedTemporaryFile(prefix="h2load-", suffix=".log", delete=False)
    log.close()
    cmd = ["h2load", "-t1", f"-c{H2LOAD_CONNECTIONS}", f"-m{H2LOAD_STREAMS}", "-D", str(seconds),
           "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers",
           f"--log-file={log.name}"]
    if rate:
        cmd.append(f"--rps={max(1, rate // H2LOAD_CONNECTIONS)}")
    cmd.append(f"http://127.0.0.1:{grpc}/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit")
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    elapsed = time.monotonic() - started
    after = decisions(http)
    times_ms = []
    with open(log.name) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3:
                times_ms.append(int(fields[2]) / 1000)
    os.unlink(log.name)
    times_ms.sort()
    m = re.search(r"finished in ([0-9.]+)s", out)
    measured = float(m.group(1)) if m else elapsed
    outcome = {code: after.get(code, 0) - before.get(code, 0) for code in after}
    ok = outcome.get("ok", 0)
    errors = sum(n for code, n in outcome.items() if code != "ok")
    failed = re.search(r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if failed:
        errors += sum(int(x) for x in failed.groups())
    result = {
        "mode": "open" if rate else "closed",
        "load_generator": f"h2load {H2LOAD_CONNECTIONS} connections x {H2LOAD_STREAMS} streams",
        "offered_per_s": rate,
        "concurrency": H2LOAD_CONNECTIONS * H2LOAD_STREAMS,
        "seconds": round(measured, 2),
        "completed": len(times_ms),
        "quotad_outcomes": outcome,
        "errors": errors,
        "decisions_per_s": round(len(times_ms) / measured),
        "p50_ms": percentile(times_ms, 50),
        "p99_ms": percentile(times_ms, 99),
        "max_ms": percentile(times_ms, 100),
    }
    for name, pid in PIDS.items():
        result[f"{name}_cpu_s"] = round(cpu_seconds(pid) - before_cpu[name], 2)
    if result["quotad_cpu_s"] > 0:
        result["decisions_per_quotad_cpu_s"] = round(ok / result["quotad_cpu_s"])
    return result


def load(binary, grpc, seconds, rate=0, concurrency=64):
    before = {name: cpu_seconds(pid) for name, pid in PIDS.items()}
    out = subprocess.run(
        [binary, "--target", f"http://127.0.0.1:{grpc}", "--seconds", str(seconds),
         "--rate", str(rate), "--concurrency", str(concurrency)],
        capture_output=True, text=True, check=True,
    ).stdout
    result = json.loads(out)
    # CPU each process used during the run: on a shared 2-core machine, decisions per quotad
    # CPU-second says more than decisions per second.
    for name, pid in PIDS.items():
        used = cpu_seconds(pid) - before[name]
        result[f"{name}_cpu_s"] = round(used, 2)
        if name == "quotad" and used > 0:
            result["decisions_per_quotad_cpu_s"] = round(result["completed"] / used)
    return result


def ceiling(port, sha, requests, concurrency):
    keys = ["tollgate:v1:{bench:c__rand_int__}:daily:day:0",
            "tollgate:v1:{bench:c__rand_int__}:monthly:month:0"]
    args = ["999999999999", "1", "90000"] * 2
    out = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-c", str(concurrency), "-n", str(requests),
         "-r", "10000", "--csv", "EVALSHA", sha, "2", *keys, *args],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = [r for r in csv.reader(io.StringIO(out)) if r and r[0] != "test"]
    header = next(csv.reader(io.StringIO(out)))
    row = dict(zip(header, rows[-1]))
    return {
        "decisions_per_s": float(row["rps"]),
        "p50_ms": float(row.get("p50_latency_ms", "nan")),
        "p99_ms": float(row.get("p99_latency_ms", "nan")),
        "concurrency": concurrency,
        "requests": requests,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quotad", default=os.path.join(ROOT, "target/quotad/quotad"))
    parser.add_argument("--load", default=None, help="quotad-load (default: beside --quotad)")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--worker-threads", type=int, default=1,
                        help="quotad's --worker-threads (1: quotad shares 2 cores with Redis and h2load)")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench/out/quotad.json"))
    a = parser.parse_args()
    load_bin = a.load or os.path.join(os.path.dirname(a.quotad), "quotad-load")
    for tool in ("redis-server", "redis-cli", "redis-benchmark", "h2load"):
        if not shutil.which(tool):
            sys.exit(f"bench-quotad: {tool} is missing (make redis)")

    tmp = tempfile.mkdtemp(prefix="quotad-bench-")
    procs = []
    try:
        rport = free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--dir", tmp,
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for("redis-server", lambda: redis_cli(rport, "PING") == "PONG")
        log = open(os.path.join(tmp, "quotad.log"), "w+")
        procs.append(subprocess.Popen(
            [a.quotad, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
             "--redis", f"redis://127.0.0.1:{rport}", "--redis-timeout-ms", "1000",
             "--worker-threads", str(a.worker_threads)],
            stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "warn,quotad=info"}))
        grpc = []

        def started():
            log.seek(0)
            m = re.search(r"started: grpc [0-9.]+:(\d+), http [0-9.]+:(\d+)", log.read())
            if m:
                grpc.extend([int(m.group(1)), int(m.group(2))])
            return bool(m)
        wait_for("quotad start line", started)
        PIDS.update(quotad=procs[1].pid, redis=procs[0].pid)
        grpc, http = grpc[0], grpc[1]
        body = os.path.join(tmp, "call.bin")
        subprocess.run([load_bin, "--write-body", body], check=True)

        with open(os.path.join(ROOT, "quotad/src/take.lua")) as f:
            sha = redis_cli(rport, "SCRIPT", "LOAD", f.read())

        h2load(grpc, http, body, 2)  # warm-up: connections, script cache, first keys
        ceil = ceiling(rport, sha, 50_000 * a.seconds, 64)
        redis_cli(rport, "FLUSHALL")
        sat = h2load(grpc, http, body, a.seconds)
        half = int(ceil["decisions_per_s"] / 2)
        fixed = h2load(grpc, http, body, a.seconds, rate=half)
        low = h2load(grpc, http, body, a.seconds, rate=1000)
        spread = load(load_bin, grpc, a.seconds)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "machine": {"cpus": os.cpu_count(), "loadavg_after": os.getloadavg()},
        "ceiling_redis_benchmark_evalsha": ceil,
        "quotad_saturation": sat,
        "quotad_fixed_half_ceiling": fixed,
        "quotad_fixed_1000": low,
        "quotad_saturation_10000_consumers_tonic_client": spread,
        "saturation_vs_ceiling": sat["decisions_per_s"] / ceil["decisions_per_s"],
        "targets": {
            "saturation_at_least_half_the_ceiling": sat["decisions_per_s"] >= ceil["decisions_per_s"] / 2,
            "p99_under_2ms_at_half_the_ceiling": fixed["p99_ms"] < 2.0 and fixed["errors"] == 0,
        },
    }
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)

    print(f"{'run':<44} {'decisions/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'per quotad CPU-s':>17}")
    rows = [
        ("redis-benchmark EVALSHA, 64 conns (ceiling)", ceil, 0),
        ("quotad saturated, h2load 64 streams", sat, sat["errors"]),
        (f"quotad offered {half}/s (half the ceiling)", fixed, fixed["errors"]),
        ("quotad offered 1000/s", low, low["errors"]),
        ("quotad saturated, quotad-load, 10k consumers", spread, spread["errors"]),
    ]
    for name, r, errors in rows:
        per_cpu = r.get("decisions_per_quotad_cpu_s", "")
        print(f"{name:<44} {r['decisions_per_s']:>12.0f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {errors:>7} {per_cpu:>17}")
    print(f"quotad saturated / ceiling: {result['saturation_vs_ceiling']:.0%}; targets: {result['targets']}")
    print(f"wrote {os.path.relpath(a.out, ROOT)}")


if __name__ == "__main__":
    main()
