#!/usr/bin/env python3
"""Turns bench/out/results.json (written by bench/run.py) into bench/results.md, the bar chart
bench/results.png, and the summary between the `bench-summary` markers in docs/benchmarks.md.

Every figure is a median over the rounds; ratios are ratios of those medians.
Needs matplotlib (installed into .venv by `make bench`).
"""

import json
import os
import re
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "out" / "results.json"
OWN = ROOT / "bench" / "out" / "own.json"  # from `make bench-own`, if it was run
MARKDOWN = ROOT / "bench" / "results.md"
CHART = ROOT / "bench" / "results.png"
# The doc that holds the `bench-summary` markers; its links are written relative to it.
SUMMARY_DOC = ROOT / "docs" / "benchmarks.md"

PROTOCOLS = ["HTTP/1.1", "HTTP/2"]
ABOUT = {
    "no-filter": "Envoy alone: the ceiling",
    "empty-wasm": "a proxy-wasm filter that only returns Continue: the floor for any Wasm filter",
    "floor": "a filter making exactly the host calls of an admitted tollgate request (same "
    "headers, same shared-data traffic, values of the same sizes) and nothing else",
    "tollgate": "10 000 consumers, two limits each, every request admitted",
    "tollgate-lean": "the same with `identity_headers` and `ratelimit_policy` off (only the "
    "`RateLimit` field added)",
    "native": "Envoy's local_ratelimit, a token bucket per x-api-key, every request admitted",
    "tollgate-402": "tollgate refusing every request with 402 (quota spent)",
    "tollgate-fleet": "tollgate in fleet mode (quotad and Redis on the load generator's CPU): "
    "both limits counted in the store",
    "tollgate-fleet-lease1": "fleet mode with `lease: 1`: one store call per request",
    "tollgate-fleet-burst-envoy": "fleet mode with the per-second limit `scope: envoy` (counted "
    "by each Envoy), the monthly quota in the store",
    "native-rls": "Envoy's own rate limit filter calling quotad once per request, the same two "
    "limits (the standard RLS path), on the proxied route",
    "tollgate-fleet-proxied": "tollgate-fleet on the proxied route, against native-rls",
    "tollgate-oz": 'tollgate built for size: opt-level "z" + wasm-opt -O3 (the shipped build is '
    "opt-level 3 + wasm-opt -O3, the faster one in Envoy)",
    "proxied": "a realistic route, no filter: Envoy proxies each request to an upstream (another "
    "Envoy answering directly, on the load generator's CPU)",
    "tollgate-proxied": "tollgate (as `tollgate`) on that proxied route",
    "post-json": "tollgate counting requests on the proxied route, for a POST of a 300-byte "
    "OpenAI chat body answered with a chat.completion JSON (the route is not priced)",
    "tokens-json": "the same request on an `openai-chat` LLM route with a token limit: body read, "
    "priced and rewritten, usage read from the answer, settled",
    "post-sse": "as post-json, answered with a 16 KiB event stream (usage in its last event)",
    "tokens-sse": "as tokens-json, with that 16 KiB stream",
}
RATIOS = [  # (label, numerator, denominator)
    ("tollgate / no-filter", "tollgate", "no-filter"),
    ("tollgate / empty-wasm", "tollgate", "empty-wasm"),
    ("floor / empty-wasm", "floor", "empty-wasm"),
    ("tollgate-lean / empty-wasm", "tollgate-lean", "empty-wasm"),
    ("tollgate / native", "tollgate", "native"),
    ("tollgate-402 / tollgate (refused / admitted)", "tollgate-402", "tollgate"),
    ("tollgate-proxied / proxied (a real route)", "tollgate-proxied", "proxied"),
    ("tokens-json / post-json (token quota over request quota)", "tokens-json", "post-json"),
    ("tokens-sse / post-sse (the same, 16 KiB streamed)", "tokens-sse", "post-sse"),
    ("tollgate-fleet / tollgate (fleet mode, both limits in the store)", "tollgate-fleet",
     "tollgate"),
    ("tollgate-fleet-burst-envoy / tollgate (fleet mode, per-second limit per Envoy)",
     "tollgate-fleet-burst-envoy", "tollgate"),
    ("tollgate-fleet-proxied / native-rls (fleet mode over the standard RLS path)",
     "tollgate-fleet-proxied", "native-rls"),
]
TARGET_OWN_CODE = 1.25  # tollgate's CPU above the empty filter, over the floor's
TARGET_VS_EMPTY = 0.75  # req/s, default configuration (stretch 0.85)
TARGET_LEAN_VS_EMPTY = 0.85  # req/s, identity headers and RateLimit-Policy off (stretch 0.95)
TARGET_SIZE = 1_000_000
TARGET_CONFIG_MS = 1000
TARGET_BURST_ENVOY = 0.8  # fleet mode, burst limit per Envoy, over local mode, req/s
BUSY_ENOUGH = 0.9  # below this median share of its CPU, Envoy was not alone on the machine

METHOD = """\
- Every variant is the same Envoy with one worker (`--concurrency 1`), the same listener and the
  same `direct_response` route (200, 6-byte body, no upstream hop); only the HTTP filters before
  the router differ. Each Envoy gets its own `--base-id` and `--disable-hot-restart`. The
  `proxied` variants route instead to an upstream cluster: one more Envoy, started once for the
  whole run, answering with the same direct response from the load generator's CPU (so its work
  is not in the measured Envoy's CPU time).
- The floor filter (`bench/floor-filter`) makes, per request, the host calls an admitted
  tollgate request makes in this configuration — clock, key header, shared-data get and CAS set
  of a record of the same size, the two identity headers, `RateLimit-Policy` and `RateLimit`
  added to the response — with constant values of the same sizes. What tollgate costs above it
  is tollgate's own code.
- {pinned} (`taskset`). Each round starts every variant once, in an order shifted by one each
  round, so that drift on a shared machine spreads over all variants.
- Per variant and round: {warmup_s} s of discarded wrk load, then {duration_s} s of
  `wrk -t1 -c{wrk_connections} --latency` (HTTP/1.1), then {duration_s} s of
  `h2load -t1 -c{h2load_connections} -m{h2load_streams}` (HTTP/2 cleartext, after its own
  {warmup_s} s warm-up): 32 requests in flight either way.
- Keys: wrk sends `x-api-key: key-0` … `key-9999` round robin (`bench/rotate-keys.lua`), so that
  tollgate and the native limiter look up another consumer on every request. h2load sends the
  same headers on every request, so HTTP/2 uses **one key** (`key-0`) for every variant.
- tollgate's configuration: consumers `c0`…`c9999` with keys `key-0`…`key-9999`, alternating
  between plans `basic` and `pro`, each with a `month` and a `1s` limit of 10⁹ requests. The
  refused variant puts every consumer on a plan whose `month` limit is 1; its warm-up sends at
  least one request per key, so that every measured request is refused with 402.
- native: `envoy.filters.http.local_ratelimit` with a `request_headers` action on `x-api-key` in
  the filter's own `rate_limits` (a `direct_response` route has no route action to carry
  `rate_limits`), one descriptor entry without a value (a dynamic descriptor: one token bucket
  per key, `max_dynamic_descriptors: 10000`), buckets of 10⁹ tokens per second and
  `always_consume_default_token_bucket: false`. One bucket per key, since a token bucket cannot
  express calendar windows.
- Every run is checked: admitted variants answered every request 2xx, the refused one 402, with
  no socket errors; the native filter's `ok` counter covers every request.
- p50/p99 come from wrk's latency distribution, and for h2load from its per-request log
  (`--log-file`). CPU µs/req is the CPU time (user + system, all threads) Envoy used during a run
  divided by the requests it served (its `downstream_rq_total`)."""


def medians(runs: list) -> dict:
    """(variant, protocol) -> median req/s, p50, p99, CPU per request, and each round's req/s
    with Envoy's CPU share."""
    grouped = {}
    for run in runs:
        grouped.setdefault((run["variant"], run["protocol"]), []).append(run)
    return {
        key: {
            "rps": statistics.median(r["rps"] for r in rs),
            "p50": statistics.median(r["p50_ms"] for r in rs),
            "p99": statistics.median(r["p99_ms"] for r in rs),
            "cpu": statistics.median(r["cpu_us"] for r in rs),
            "rounds": [
                (r["rps"], r["envoy_cpu_share"]) for r in sorted(rs, key=lambda r: r["round"])
            ],
        }
        for key, rs in grouped.items()
    }


def variants_in(runs: list) -> list:
    order = list(ABOUT)
    found = {r["variant"] for r in runs}
    return sorted(found, key=lambda v: order.index(v) if v in order else len(order))


def ratio(m: dict, a: str, b: str, protocol: str, what: str = "rps"):
    """a's median over b's, of req/s ("rps") or of CPU time per request ("cpu")."""
    if (a, protocol) in m and (b, protocol) in m:
        return m[(a, protocol)][what] / m[(b, protocol)][what]
    return None


def config_load(results: dict) -> list:
    """Per configuration size: (consumers, median ms per main-thread VM, median and worst ms per
    worker, median s until Envoy was ready, number of Envoy starts)."""
    samples = [(s["consumers"], s["config_ms"], s["ready_s"]) for s in results["startup"]]
    # 10 000 consumers: the tollgate variant's own Envoy, once per round.
    samples += [
        (10_000, r["config_ms"], r["ready_s"])
        for r in results["runs"]
        if r["variant"] == "tollgate" and r["protocol"] == PROTOCOLS[0]
    ]
    rows = []
    for consumers in sorted({c for c, _, _ in samples}):
        mine = [(times, ready) for c, times, ready in samples if c == consumers]
        main = [t["ms"] for times, _ in mine for t in times if t["thread"] == "main"]
        workers = [t["ms"] for times, _ in mine for t in times if t["thread"] == "worker"]
        ready = statistics.median(ready for _, ready in mine)
        main, worker = statistics.median(main), statistics.median(workers)
        rows.append((consumers, main, worker, max(workers), ready, len(mine)))
    return rows


def fmt(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def legend(variants: list) -> list:
    return [f"- **{v}**: {ABOUT[v]}" for v in variants if v in ABOUT]


def main_table(m: dict, variants: list) -> list:
    head = ["variant"]
    for p in PROTOCOLS:
        head += [f"{p} req/s", "p50 ms", "p99 ms", "CPU µs/req"]
    lines = [row(head), "|---|" + "---:|" * (len(head) - 1)]
    for v in variants:
        cells = [v]
        for p in PROTOCOLS:
            r = m.get((v, p))
            numbers = [f"{r['rps']:,.0f}", f"{r['p50']:.2f}", f"{r['p99']:.2f}", f"{r['cpu']:.1f}"]
            cells += numbers if r else ["—"] * 4
        lines.append(row(cells))
    return lines


def ratio_table(m: dict) -> list:
    head = ["ratio"] + [f"req/s {p}" for p in PROTOCOLS] + [f"CPU/req {p}" for p in PROTOCOLS]
    lines = [row(head), "|---|" + "---:|" * (len(head) - 1)]
    for label, a, b in RATIOS:
        cells = [fmt(ratio(m, a, b, p, what)) for what in ("rps", "cpu") for p in PROTOCOLS]
        lines.append(row([label] + cells))
    return lines


def by_protocol(values: list) -> str:
    return ", ".join(f"{p} {fmt(v)}" for p, v in zip(PROTOCOLS, values))


def above(m: dict, a: str, base: str, protocol: str):
    """a's CPU per request above base's, in µs."""
    if (a, protocol) in m and (base, protocol) in m:
        return m[(a, protocol)]["cpu"] - m[(base, protocol)]["cpu"]
    return None


def own_code(m: dict, protocol: str):
    """tollgate's CPU above the empty filter, over the floor's CPU above the empty filter."""
    mine, floor = above(m, "tollgate", "empty-wasm", protocol), above(m, "floor", "empty-wasm", protocol)
    return None if mine is None or not floor or floor <= 0 else mine / floor


def targets(results: dict, m: dict) -> list:
    own = [own_code(m, p) for p in PROTOCOLS]
    vs_empty = [ratio(m, "tollgate", "empty-wasm", p) for p in PROTOCOLS]
    lean = [ratio(m, "tollgate-lean", "empty-wasm", p) for p in PROTOCOLS]
    refused = [ratio(m, "tollgate-402", "tollgate", p, "cpu") for p in PROTOCOLS]
    shipped = results["sizes"].get("tollgate-shipped", 0)
    worst = max((r[3] for r in config_load(results) if r[0] == 100_000), default=None)
    burst = [ratio(m, "tollgate-fleet-burst-envoy", "tollgate", p) for p in PROTOCOLS]
    at_least = lambda values, bound: all(v is not None and v >= bound for v in values)  # noqa: E731
    at_most = lambda values, bound: all(v is not None and v <= bound for v in values)  # noqa: E731
    cpu_above = by_protocol([above(m, "tollgate", "empty-wasm", p) for p in PROTOCOLS])
    floor_above = by_protocol([above(m, "floor", "empty-wasm", p) for p in PROTOCOLS])
    return [
        row(["target", "measured", ""]),
        "|---|---|---|",
        row([
            f"tollgate's CPU above empty-wasm ≤ {TARGET_OWN_CODE} × the floor's, both protocols",
            f"{by_protocol(own)} (µs/req above empty-wasm: tollgate {cpu_above}; floor "
            f"{floor_above})",
            verdict(at_most(own, TARGET_OWN_CODE)),
        ]),
        row([
            f"tollgate ≥ {TARGET_VS_EMPTY} × empty-wasm req/s (stretch 0.85), both protocols",
            f"{by_protocol(vs_empty)}",
            verdict(at_least(vs_empty, TARGET_VS_EMPTY)),
        ]),
        row([
            f"tollgate-lean ≥ {TARGET_LEAN_VS_EMPTY} × empty-wasm req/s (stretch 0.95)",
            f"{by_protocol(lean)}",
            verdict(at_least(lean, TARGET_LEAN_VS_EMPTY)),
        ]),
        row([
            "refused requests cost no more than admitted ones",
            f"CPU per request, 402 ÷ admitted: {by_protocol(refused)}",
            verdict(at_most(refused, 1.0)),
        ]),
        row([
            f"release .wasm ≤ {TARGET_SIZE // 1000} KB",
            f"{shipped / 1000:.1f} KB ({shipped:,} bytes)",
            verdict(shipped <= TARGET_SIZE),
        ]),
        row([
            f"fleet mode, daily-style quota + per-second burst `scope: envoy`, 10 000 quiet "
            f"consumers ≥ {TARGET_BURST_ENVOY} × local mode req/s, both protocols",
            f"{by_protocol(burst)} (both limits in the store: "
            f"{by_protocol([ratio(m, 'tollgate-fleet', 'tollgate', p) for p in PROTOCOLS])})",
            verdict(at_least(burst, TARGET_BURST_ENVOY)),
        ]),
        row([
            "configuration with 100 000 consumers < 1 s per worker",
            "—" if worst is None else f"{worst:.0f} ms in the slowest worker",
            verdict(worst is not None and worst < TARGET_CONFIG_MS),
        ]),
    ]


def sizes_table(results: dict, m: dict) -> list:
    head = ["build", "bytes", "KB"]
    head += [f"{p} {c}" for p in PROTOCOLS for c in ("req/s", "CPU µs/req")]
    lines = [row(head), "|---|" + "---:|" * (len(head) - 1)]
    for label, size in results["sizes"].items():
        variant = "tollgate" if label == "tollgate-shipped" else label
        cells = [label, f"{size:,}", f"{size / 1000:.1f}"]
        for p in PROTOCOLS:
            r = m.get((variant, p))
            cells += [f"{r['rps']:,.0f}", f"{r['cpu']:.1f}"] if r else ["—", "—"]
        lines.append(row(cells))
    return lines


def config_table(results: dict) -> list:
    head = ["consumers", "main thread, per VM (ms)", "per worker, median (ms)",
            "per worker, worst (ms)", "Envoy ready after (s)", "Envoy starts"]
    lines = [row(head), "|" + "---:|" * len(head)]
    for consumers, main, worker, worst, ready, starts in config_load(results):
        cells = [f"{consumers:,}", f"{main:.1f}", f"{worker:.1f}", f"{worst:.1f}", f"{ready:.2f}"]
        lines.append(row(cells + [starts]))
    return lines


def rounds_table(m: dict, variants: list, rounds: int) -> list:
    lines = [row(["variant", "protocol"] + [f"round {i + 1}" for i in range(rounds)])]
    lines.append("|---|---|" + "---:|" * rounds)
    for v in variants:
        for p in PROTOCOLS:
            if (v, p) in m:
                cells = [f"{rps:,.0f} ({busy:.0%})" for rps, busy in m[(v, p)]["rounds"]]
                lines.append(row([v, p] + cells))
    return lines


def busy_warning(results: dict) -> list:
    """A warning when Envoy did not have its CPU to itself: the figures then say less. Only the
    HTTP/1.1 runs tell: with HTTP/2, h2load (one thread, 32 streams) is often the bottleneck
    and Envoy waits for it (80-87% busy on a quiet machine)."""
    share = statistics.median(
        r["envoy_cpu_share"] for r in results["runs"] if r["protocol"] == PROTOCOLS[0]
    )
    if share >= BUSY_ENOUGH:
        return []
    return [
        f"**Other work shared the machine during this run:** Envoy had its CPU for "
        f"{share:.0%} of the time (median over the HTTP/1.1 runs; near 100% when Envoy is the "
        "bottleneck, as intended). Requests/s and latency suffer most; CPU time per request "
        "less. Re-run `make bench` on a quiet machine for figures to quote.",
        "",
    ]


def own_code_table() -> list:
    """The `make bench-own` table: instructions per request in Node's V8, and above the floor."""
    if not OWN.exists():
        return []
    own = json.loads(OWN.read_text())
    counts = own["instructions_per_request"]
    floor = counts.get("floor")
    lines = [
        "## Own code, in instructions per request",
        "",
        f"From `make bench-own` (commit `{own['commit']}`): each module in Node's V8 with the "
        "proxy-wasm host written in JavaScript, the benchmark's configuration and keys, under "
        "callgrind (deterministic to ~1%). The host is the same for every module, so a module's "
        "count above the floor filter's is its own code.",
        "",
        row(["module", "instructions per request", "above the floor"]),
        "|---|---:|---:|",
    ]
    for name, count in counts.items():
        extra = "—" if floor is None or name in ("empty", "floor") else f"{count - floor:,}"
        lines.append(row([name, f"{count:,}", extra]))
    return lines + [""]


def markdown(results: dict, m: dict, variants: list) -> str:
    info = results["machine"]
    return "\n".join([
        "# tollgate benchmark",
        "",
        f"Produced by `make bench` on {info['date']} from commit `{info['commit']}`: "
        f"{info['rounds']} alternating rounds, medians; the run took {info['elapsed_s']} s. "
        "Absolute figures drift between runs and machines; compare the ratios.",
        "",
        *busy_warning(results),
        "## Requests per second, latency, and Envoy's CPU time per request",
        "",
        *legend(variants),
        "",
        *main_table(m, variants),
        "",
        "CPU µs/req: the CPU time Envoy used per request served, which other work on a shared "
        "machine disturbs much less than requests/s.",
        "",
        *ratio_table(m),
        "",
        "## Targets",
        "",
        *targets(results, m),
        "",
        *own_code_table(),
        "## Size of the .wasm, by build",
        "",
        "Release profile: `lto = true`, `codegen-units = 1`, `panic = \"abort\"`, `strip = true`; "
        "shipped: `opt-level = 3`, then `wasm-opt -O3` (binaryen, installed by `make build`); "
        "z: `opt-level = \"z\"`, then `wasm-opt -Oz`.",
        "",
        *sizes_table(results, m),
        "",
        "## VM start + configuration",
        "",
        "From tollgate's own log lines, `version … starting` (on_vm_start) to `configured: …` (end "
        "of on_configure) on the same Envoy thread, with microsecond log timestamps. Envoy "
        "configures the plugin on its main thread first, where tollgate also creates every "
        "consumer's shared-data record, then on each worker. 10 and 100 000 consumers: Envoy with "
        "2 workers, not pinned; 10 000: the tollgate variant's Envoy above (1 worker).",
        "",
        *config_table(results),
        "",
        "## Requests per second in each round",
        "",
        "In parentheses, the share of its CPU that Envoy used: well below 100% means that "
        "something else ran on Envoy's CPU during that run.",
        "",
        *rounds_table(m, variants, info["rounds"]),
        "",
        "## Method",
        "",
        METHOD.format(**info),
        "",
        "## Machine",
        "",
        f"- CPU: {info['cpu']}, {info['cpus']} CPUs; {info['memory_gib']} GiB RAM; {info['os']}, "
        f"kernel {info['kernel']}",
        f"- Envoy {info['envoy']}; {info['wrk']}; {info['h2load']}; {info['rustc']}",
        "",
        "![requests per second, CPU per request and p99 latency](results.png)",
        "",
    ])


def chart(m: dict, variants: list, info: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    width = 0.4
    for i, p in enumerate(PROTOCOLS):
        xs = [j + (i - 0.5) * width for j in range(len(variants))]
        mine = [m.get((v, p)) for v in variants]
        rps = [r["rps"] if r else 0 for r in mine]
        low = [x - min(s for s, _ in r["rounds"]) if r else 0 for x, r in zip(rps, mine)]
        high = [max(s for s, _ in r["rounds"]) - x if r else 0 for x, r in zip(rps, mine)]
        axes[0].bar(xs, rps, width, yerr=[low, high], capsize=3, label=p)
        axes[1].bar(xs, [r["cpu"] if r else 0 for r in mine], width, label=p)
        axes[2].bar(xs, [r["p99"] if r else 0 for r in mine], width, label=p)
    axes[0].set_title("requests/s (median; whiskers: min–max of rounds)", fontsize=10)
    axes[1].set_title("Envoy CPU time per request, µs (median)", fontsize=10)
    axes[2].set_title("p99 latency, ms (median)", fontsize=10)
    for ax in axes:
        ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right")
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"tollgate benchmark: Envoy with 1 worker, {info['rounds']} rounds, {info['date']}, "
        f"{info['commit']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(CHART, dpi=110)


def speed_build(m: dict) -> list:
    """Why the shipped build is opt-level 3: the size-optimized build against it, in Envoy."""
    pairs = [(p, m.get(("tollgate-oz", p)), m.get(("tollgate", p))) for p in PROTOCOLS]
    cells = [f"{p} {oz['cpu']:.1f} against {o3['cpu']:.1f} µs/req" for p, oz, o3 in pairs if oz and o3]
    if not cells:
        return []
    return ["", 'The opt-level "z" build (`tollgate-oz`, smaller) in Envoy: CPU '
            + ", ".join(cells) + " (shipped, opt-level 3)."]


def summary_section(results: dict, m: dict, variants: list) -> str:
    main = [v for v in variants if v != "tollgate-oz"]
    sizes = results["sizes"]
    other_levels = "".join(
        f", {label[len('tollgate-'):]} {sizes[label] / 1000:.0f} KB"
        for label in ("tollgate-oz",)
        if label in sizes
    )
    per_worker = ", ".join(
        f"{consumers:,} consumers {worker:.{0 if worker >= 10 else 1}f} ms"
        for consumers, _, worker, *_ in config_load(results)
    )
    return "\n".join([
        f"Measured by `make bench` on {results['machine']['date']} (2-CPU machine, Envoy with one "
        "worker, medians; the full tables, method and chart are in "
        f"[bench/results.md]({os.path.relpath(MARKDOWN, SUMMARY_DOC.parent)})):",
        "",
        *legend(main),
        "",
        *main_table(m, main),
        "",
        *ratio_table(m),
        "",
        *targets(results, m),
        "",
        f"Release `.wasm`: {sizes.get('tollgate-shipped', 0) / 1000:.1f} KB (opt-level 3 + "
        f"wasm-opt -O3){other_levels} (the empty filter: {sizes.get('empty-wasm', 0) / 1000:.0f} KB). "
        f"VM start + configuration, per worker (median): {per_worker}.",
        *speed_build(m),
        "",
        *busy_warning(results),
    ]).rstrip()


def main():
    results = json.loads(RESULTS.read_text())
    m = medians(results["runs"])
    variants = variants_in(results["runs"])
    MARKDOWN.write_text(markdown(results, m, variants))
    chart(m, variants, results["machine"])
    doc = SUMMARY_DOC.read_text()
    begin, end = "<!-- bench-summary-begin -->", "<!-- bench-summary-end -->"
    if not re.search(f"{begin}.*?{end}", doc, flags=re.S):
        raise SystemExit(f"{SUMMARY_DOC.relative_to(ROOT)} has no {begin} ... {end} markers")
    summary = f"{begin}\n{summary_section(results, m, variants)}\n{end}"
    SUMMARY_DOC.write_text(re.sub(f"{begin}.*?{end}", lambda _: summary, doc, flags=re.S))
    print(f"wrote {MARKDOWN.relative_to(ROOT)}, {CHART.relative_to(ROOT)} and the summary in "
          f"{SUMMARY_DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
