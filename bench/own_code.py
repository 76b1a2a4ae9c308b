#!/usr/bin/env python3
"""A filter's own code, counted in instructions per request: deterministic, unlike time.

Runs bench/vm-only.js (the module in Node's V8, with the proxy-wasm host written in JavaScript)
under valgrind's callgrind, which counts every instruction the process executes, at two request
counts; the difference divided by the difference in requests is the cost of one request. V8
runs single-threaded with a predictable GC schedule (`--single-threaded
--predictable-gc-schedule`) and without its baseline compiler (`--no-liftoff`, as Envoy runs it),
so repeated runs agree to within ~1%. The host functions are the same JavaScript for every
module, so tollgate minus the floor filter (same host calls, nothing else) is tollgate's own code.

Writes bench/out/own.json; bench/report.py adds its table to bench/results.md.
usage: own_code.py --config FILE NAME=PATH...
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
FEW, MANY = 2000, 7000  # requests per run (each run also warms up with as many first)


def instructions(module: str, config: Path, requests: int) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--smc-check=all-non-file",
        "--callgrind-out-file=/dev/null",
        "node", "--no-liftoff", "--single-threaded", "--predictable-gc-schedule",
        str(ROOT / "bench" / "vm-only.js"), module, "--config", str(config),
        "--requests", str(requests), "--rounds", "1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or not found:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    return int(found.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="the plugin configuration")
    parser.add_argument("modules", nargs="+", metavar="NAME=PATH")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results = {}
    for module in args.modules:
        name = module.split("=", 1)[0]
        # Each run does a warm-up of as many requests as it measures: 2 x requests in all.
        few, many = instructions(module, args.config, FEW), instructions(module, args.config, MANY)
        results[name] = round((many - few) / (2 * (MANY - FEW)))
        print(f"  {name:14} {results[name]:8,} instructions per request", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    document = {"commit": commit + (" (with uncommitted changes)" if dirty else ""),
                "instructions_per_request": results}
    (OUT / "own.json").write_text(json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main()
