#!/usr/bin/env python3
"""A million consumers (issue 24, target 2): Envoy's RSS and time until ready with N consumers
(one key each, every consumer on one plan of two limits), Envoy with 2 workers, for tollgate and
for the empty filter handed the same configuration (the floor: Envoy holding and passing it).

    python3 bench/million.py --envoy .venv/bin/envoy --tollgate target/wasm32-wasip1/release/tollgate.wasm \
        --empty target/empty-filter/wasm32-wasip1/release/empty_filter.wasm --consumers 1000000

Per consumer = (RSS with N consumers - RSS with 10) / N, once /ready answers and a known key is
admitted. Prints one JSON line per run and a summary; writes bench/out/million.json.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py: Envoy, wasm_filter, get)


def plugin(consumers: int) -> str:
    parts = ['{"credentials": [{"header": "x-api-key"}], "plans": {"p": {"limits": ['
             '{"name": "daily", "requests": 1000000000, "window": "day"}, '
             '{"name": "burst", "requests": 1000000000, "window": "1s"}]}}, "consumers": {']
    parts.append(",".join(f'"c{i}": {{"plan": "p", "keys": ["key-{i}"]}}' for i in range(consumers)))
    parts.append("}}")
    return "".join(parts)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def one(envoy_bin: str, name: str, wasm: Path, consumers: int, check: bool, workers: int) -> dict:
    filt = run.wasm_filter(name, wasm, plugin(consumers))
    with run.Envoy(envoy_bin, f"million-{name}-{consumers}", [filt], concurrency=workers, cpu=None) as envoy:
        ready_s = envoy.ready_s
        if check:
            status = run.get(envoy.port, f"key-{consumers - 1}").status
            if status != 200:
                raise RuntimeError(envoy.failure(f"key-{consumers - 1} got {status}"))
        time.sleep(1.0)  # let the workers finish anything after /ready
        rss = rss_kib(envoy.process.pid)
        times = run.config_times(envoy.log()) if check else []
    result = {"filter": name, "consumers": consumers, "workers": workers, "ready_s": round(ready_s, 2), "rss_kib": rss,
              "config_ms": times}
    print(json.dumps(result), flush=True)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envoy", required=True)
    p.add_argument("--tollgate", type=Path, required=True)
    p.add_argument("--empty", type=Path, required=True)
    p.add_argument("--consumers", type=int, default=1_000_000)
    p.add_argument("--workers", type=int, default=2, help="Envoy's --concurrency")
    p.add_argument("--skip-empty", action="store_true")
    args = p.parse_args()
    run.OUT.mkdir(parents=True, exist_ok=True)
    n = args.consumers
    results = {}
    filters = [("tollgate", args.tollgate, True)]
    if not args.skip_empty:
        filters.append(("empty", args.empty, False))
    for name, wasm, check in filters:
        small = one(args.envoy, name, wasm.resolve(), 10, check, args.workers)
        big = one(args.envoy, name, wasm.resolve(), n, check, args.workers)
        results[name] = {"small": small, "big": big,
                         "bytes_per_consumer": round((big["rss_kib"] - small["rss_kib"]) * 1024 / n)}
    for name, r in results.items():
        print(f"{name}: {r['bytes_per_consumer']} B/consumer, RSS {r['big']['rss_kib'] / 1024:.0f} MiB, "
              f"ready {r['big']['ready_s']} s ({n} consumers, {args.workers} workers)")
    if "empty" in results:
        own = results["tollgate"]["bytes_per_consumer"] - results["empty"]["bytes_per_consumer"]
        ratio = results["tollgate"]["big"]["ready_s"] / results["empty"]["big"]["ready_s"]
        print(f"tollgate's own: {own} B/consumer (target <= 300); ready {ratio:.2f}x the empty filter (target <= 1.5x)")
    (run.OUT / "million.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
