#!/usr/bin/env python3
"""tollgate's benchmark: what the filter costs per request, in one run on one machine.

Every variant is the same Envoy (one worker, pinned to one CPU) with the same listener and the
same `direct_response` route (no upstream hop); only the HTTP filters before the router differ:

  no-filter     nothing: the ceiling
  empty-wasm    bench/empty-filter, a proxy-wasm filter that only returns Continue: the floor
                for any Wasm filter (what V8 and the ABI cost)
  floor         bench/floor-filter, a filter that makes exactly the host calls of an admitted
                tollgate request, with values of the same sizes, and nothing else: tollgate's
                CPU above it is tollgate's own code
  tollgate      tollgate with 10 000 consumers on plans of two limits each, every request admitted
  tollgate-lean the same with `identity_headers` and `ratelimit_policy` off (RateLimit only)
  native        Envoy's own envoy.filters.http.local_ratelimit, one dynamic token bucket per
                x-api-key value (what users would pick instead), every request admitted
  tollgate-402  tollgate where every request is refused with 402 (each consumer's quota of 1 is
                spent during the warm-up)
  tollgate-sink-hang
                tollgate with usage events and threshold alerts (interval 1 s) sent to a sink
                that accepts connections and never answers: every batch times out, the buffer
                fills and drops; requests must not notice (compare with tollgate)
  tollgate-oz   tollgate built for size (opt-level "z", then wasm-opt -O3), against the
                shipped build (opt-level 3, then wasm-opt -O3: the faster one in Envoy)
  tollgate-fleet, tollgate-fleet-lease1
                tollgate in fleet mode (`store.rls`) against quotad and Redis on the same machine
                (pinned to the load generator's CPU), with the default `lease` (1000) and with `lease: 1`
                (one store call per request); each result also has the store calls per 1 000
                requests (quotad's decision count). Only with --quotad.
  tollgate-fleet-burst-envoy
                tollgate-fleet with the per-second limit `scope: envoy` (counted by each Envoy)
  native-rls, tollgate-fleet-proxied
                Envoy's own rate limit filter calling quotad once per request with the same two
                limits (the consumer is the x-api-key value): the standard RLS path; and
                tollgate-fleet, both on the proxied route (the filter needs a route entry). Only
                with --quotad.
  proxied, tollgate-proxied
                a realistic route: Envoy proxies to an upstream (another Envoy answering with a
                direct response, pinned to the load generator's CPU) over kept-alive HTTP/1.1
                connections, without and with tollgate, so that tollgate's cost can be read
                against a real request's and not only against the cheapest one
  post-json, tokens-json
                an LLM request on the proxied route: POST of a 300-byte OpenAI Chat Completions
                body, answered with a chat.completion JSON (usage at its end). post-json: tollgate
                counting requests (the route is not priced); tokens-json: the route is an
                `openai-chat` LLM route and the plan has a token limit (body read, priced,
                rewritten with its cap, usage read from the response, settled). The difference
                is what a token-quota request costs over a request-quota one.
  post-sse, tokens-sse
                the same with a 16 KiB streamed answer (text/event-stream, usage in its last
                event): tokens-sse - post-sse, less tokens-json - post-json, is the usage parse
                of 16 KiB of stream.

The load generator runs on the other CPU: wrk (HTTP/1.1; bench/rotate-keys.lua sends key-0 ..
key-9999 round robin) and h2load (HTTP/2 over cleartext; one key, key-0, as h2load sends the same
headers on every request). Each result has requests/s, p50 and p99 latency, and Envoy's CPU time
per request. Rounds alternate the variants (each round starts one variant later), so that drift
on a shared machine spreads over all of them; bench/report.py takes the medians.

Then VM start + configuration time is read from Envoy's own log (tollgate logs `version ...
starting` in on_vm_start and `configured: ...` at the end of on_configure) with 10 and with
100 000 consumers, per thread: Envoy's main thread, then each worker.

Writes bench/out/results.json; bench/report.py turns it into bench/results.md and .png.
Python 3 standard library only. Sends traffic to 127.0.0.1 only.
"""

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
LUA = ROOT / "bench" / "rotate-keys.lua"
POST_LUA = ROOT / "bench" / "post-keys.lua"

CONSUMERS = 10_000  # the realistic configuration's size
HUGE = 1_000_000_000  # a quota nothing in this bench can spend
CONNECTIONS = 32  # wrk: HTTP/1.1 connections, one request in flight on each
H2_CONNECTIONS, H2_STREAMS = 8, 4  # h2load: 8 connections x 4 streams, 32 in flight too
ENVOY_CPU, LOAD_CPU = 0, 1
# quotad's gRPC and HTTP ports while the fleet variants run (--quotad), else 0.
QUOTAD_PORT = 0
QUOTAD_HTTP = 0
PIN = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READY_DEADLINE = 180.0  # seconds; 100 000 consumers take a while on a busy machine
SINK_CLUSTER = "tollgate_sink"
_HANGING_SINK = []
# The LLM variants' request: path by answer shape, and the body (written to OUT at start).
LLM_PATHS = {"json": "/v1/chat/completions", "sse": "/v1/stream"}
LLM_BODY = json.dumps({
    "model": "bench-model",
    "max_completion_tokens": 256,
    "messages": [
        {"role": "system", "content": "You are a helpful assistant that answers briefly."},
        {"role": "user", "content": "Summarise in two sentences why per-consumer quotas "
                                    "belong in the gateway and not in every service behind it."},
    ],
}, separators=(",", ":"))


def llm_answers() -> list:
    """The upstream's routes for the LLM variants: a chat.completion document, and a 16 KiB
    event stream of chunks ending with the usage chunk and [DONE]."""
    usage = {"prompt_tokens": 70, "completion_tokens": 120, "total_tokens": 190,
             "prompt_tokens_details": {"cached_tokens": 0}}
    document = json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "bench-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Quotas are policy. " * 12}}],
        "usage": usage,
    }, separators=(",", ":"))
    chunk = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1,
                        "model": "bench-model", "choices": [{"index": 0, "delta": {"content": "quota "}}],
                        "usage": None}, separators=(",", ":"))
    events = []
    while sum(len(e) for e in events) < 16 * 1024 - 400:
        events.append(f"data: {chunk}\n\n")
    final = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1,
                        "model": "bench-model", "choices": [], "usage": usage}, separators=(",", ":"))
    events += [f"data: {final}\n\n", "data: [DONE]\n\n"]
    def answer(path, body, content_type):
        return {
            "match": {"path": path},
            "direct_response": {"status": 200, "body": {"inline_string": body}},
            "response_headers_to_add": [{"header": {"key": "content-type", "value": content_type},
                                         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
        }
    return [answer(LLM_PATHS["json"], document, "application/json"),
            answer(LLM_PATHS["sse"], "".join(events), "text/event-stream")]


def hanging_sink() -> int:
    """The port of a socket that listens (the kernel completes connections) and never accepts
    or answers, so that every batch of tollgate-sink-hang times out after 5 s."""
    if not _HANGING_SINK:
        sink = socket.socket()
        sink.bind(("127.0.0.1", 0))
        sink.listen(4096)
        _HANGING_SINK.append(sink)
    return _HANGING_SINK[0].getsockname()[1]


LOG_FORMAT = "[%Y-%m-%d %T.%f][%t][%l][%n] %v"  # microsecond timestamps, thread id
LOG_LINE = re.compile(r"^\[([\d-]+ [\d:.]+)\]\[(\d+)\]\[\w+\]\[(\w+)\] (.*)$")

HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    },
}


# --- configurations ---------------------------------------------------------------------------


def tollgate_plugin(consumers: int, refuse: bool = False, lean: bool = False,
                    events: bool = False, fleet: bool = False, lease: int = 0,
                    tokens: bool = False, burst_scope: str = "") -> str:
    """Consumers c0.. with keys key-0.., spread over two plans of two limits each. With `refuse`,
    every consumer is on a plan whose monthly quota is 1, so that once each consumer has made
    one request, everything is refused with 402. `burst_scope` sets the per-second limit's
    `scope` (`envoy`: each Envoy counts it alone, fleet mode asks the store for the monthly one)."""
    if refuse:
        plans = {"spent": {"limits": limits(monthly=1)}}
    else:
        plans = {"basic": {"limits": limits(HUGE, burst_scope)},
                 "pro": {"limits": limits(HUGE, burst_scope)}}
    names = list(plans)
    config = {
        "credentials": [{"header": "x-api-key"}],
        "plans": plans,
        "consumers": {
            f"c{i}": {"plan": names[i % len(names)], "keys": [f"key-{i}"]}
            for i in range(consumers)
        },
    }
    if lean:
        config.update(identity_headers=False, ratelimit_policy=False)
    if tokens:
        # The proxied route (named `llm`) is an LLM route; every plan also counts tokens.
        for plan in plans.values():
            plan["limits"].append({"name": "tokens", "tokens": HUGE, "window": "month"})
        config["routes"] = {"llm": {"llm": "openai-chat"}}
        config["llm"] = {"models": {"*": {"max_output_tokens": 1024,
                                          "weights": {"cached_input": 0.5, "output": 4}}}}
    if events:
        config["events"] = {"cluster": SINK_CLUSTER, "url": "http://sink.bench/events",
                            "interval": "1s", "alerts": [80, 100]}
    if fleet:
        config["store"] = {"rls": {"cluster": "tollgate_quotad", "timeout": "1s"}}
        if lease:
            config["store"]["rls"]["lease"] = lease
    return json.dumps(config, separators=(",", ":"))


def limits(monthly: int, burst_scope: str = "") -> list:
    burst = {"name": "per-second", "requests": HUGE, "window": "1s"}
    if burst_scope:
        burst["scope"] = burst_scope
    return [{"name": "monthly", "requests": monthly, "window": "month"}, burst]


def native_rls_filter() -> dict:
    """Envoy's own rate limit filter calling quotad once per request, with the bench plan's two
    limits as quotad descriptors (consumer, limit, window, requests) and the consumer taken from
    x-api-key as it is: the path every RLS deployment takes today. The descriptors come from the
    filter's own `rate_limits`; the filter calls only on a route entry (the proxied route)."""
    policy = [{"actions": [
        {"request_headers": {"header_name": "x-api-key", "descriptor_key": "consumer"}},
        {"generic_key": {"descriptor_key": "limit", "descriptor_value": limit["name"]}},
        {"generic_key": {"descriptor_key": "window", "descriptor_value": limit["window"]}},
        {"generic_key": {"descriptor_key": "requests", "descriptor_value": str(limit["requests"])}},
    ]} for limit in limits(HUGE)]
    return {
        "name": "envoy.filters.http.ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": "tollgate",
            "failure_mode_deny": True,
            "timeout": "1s",
            "rate_limits": policy,
            "rate_limit_service": {
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": "tollgate_quotad"}},
            },
        },
    }


def wasm_filter(name: str, path: Path, configuration: str = "") -> dict:
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "failure_policy": "FAIL_CLOSED",
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(path)}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration,
                },
            },
        },
    }


def native_filter(keys: int) -> dict:
    """local_ratelimit with one token bucket per x-api-key value. The descriptor comes from the
    filter's own `rate_limits` (a direct_response route has no route action to carry them); the
    descriptor entry without a value makes a bucket per distinct key (dynamic descriptors)."""
    bucket = {"max_tokens": HUGE, "tokens_per_fill": HUGE, "fill_interval": "1s"}
    always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    header = {"header_name": "x-api-key", "descriptor_key": "api_key"}
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "bench",
            "status": {"code": 402},
            "filter_enabled": always,
            "filter_enforced": always,
            "token_bucket": bucket,
            "always_consume_default_token_bucket": False,
            "rate_limits": [{"actions": [{"request_headers": header}]}],
            "descriptors": [{"entries": [{"key": "api_key"}], "token_bucket": bucket}],
            "max_dynamic_descriptors": keys,
        },
    }


def envoy_config(port: int, admin: int, filters: list, upstream=None, sink=None,
                 answers=False) -> dict:
    """The listener with `filters`, routing to a direct response or, given an upstream port,
    to that upstream; given a sink port, a cluster for tollgate's usage events. With
    `answers`, the LLM variants' paths get their LLM answers (the upstream)."""

    def address(p: int) -> dict:
        return {"socket_address": {"address": "127.0.0.1", "port_value": p}}

    route = {
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": "hello\n"}},
    }
    clusters = []
    if QUOTAD_PORT:
        # Fleet mode's store (unused by the other variants): quotad over HTTP/2.
        clusters.append({
            "name": "tollgate_quotad",
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                },
            },
            "load_assignment": {
                "cluster_name": "tollgate_quotad",
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(QUOTAD_PORT)}}]}],
            },
        })
    if upstream is not None:
        # Named: tokens-* price the route `llm` (the others do not look routes up).
        route = {"name": "llm", "match": {"prefix": "/"}, "route": {"cluster": "upstream"}}
        endpoint = {"endpoint": {"address": address(upstream)}}
        clusters.append({
            "name": "upstream",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": "upstream",
                "endpoints": [{"lb_endpoints": [endpoint]}],
            },
        })
    if sink is not None:
        clusters.append({
            "name": SINK_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": SINK_CLUSTER,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(sink)}}]}],
            },
        })
    hcm = {
        "@type": f"type.googleapis.com/{HCM}",
        "stat_prefix": "bench",
        "codec_type": "AUTO",
        "route_config": {
            "name": "bench",
            # The LLM variants' 16 KiB stream is a direct response of the upstream.
            "max_direct_response_body_size_bytes": 65536,
            "virtual_hosts": [{"name": "bench", "domains": ["*"],
                               "routes": (llm_answers() if answers else []) + [route]}],
        },
        "http_filters": filters + [ROUTER],
    }
    manager = {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
    chains = [{"filters": [manager]}]
    listener = {"name": "bench", "address": address(port), "filter_chains": chains}
    resources = {"listeners": [listener], "clusters": clusters}
    return {"admin": {"address": address(admin)}, "static_resources": resources}


# --- Envoy ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu) -> list:
    """A taskset prefix, when the machine has a CPU for Envoy and another for the load."""
    return ["taskset", "-c", str(cpu)] if PIN and cpu is not None else []


class StartFailure(Exception):
    pass


class Envoy:
    """One Envoy process on free ports with its own --base-id; its log in bench/out/<name>.log."""

    count = 0

    def __init__(self, binary: str, name: str, filters: list, concurrency=1, cpu=ENVOY_CPU,
                 upstream=None, sink=None, answers=False):
        self.binary, self.name, self.filters = str(binary), name, filters
        self.concurrency, self.cpu, self.upstream, self.sink = concurrency, cpu, upstream, sink
        self.answers = answers
        self.log_path = OUT / f"{name}.log"

    def __enter__(self):
        for attempt in range(3):
            try:
                self._start()
                return self
            except StartFailure:
                if "Address already in use" not in self.log() or attempt == 2:
                    raise

    def _start(self):
        Envoy.count += 1
        self.port, self.admin = free_port(), free_port()
        config = OUT / f"{self.name}.json"
        config.write_text(
            json.dumps(envoy_config(self.port, self.admin, self.filters, self.upstream, self.sink,
                                    self.answers))
        )
        base_id = (os.getpid() % 20_000) * 100 + Envoy.count % 100
        command = pinned(self.cpu) + [self.binary, "-c", str(config)]
        command += ["--concurrency", str(self.concurrency), "--base-id", str(base_id)]
        command += ["--disable-hot-restart", "-l", "info", "--log-format", LOG_FORMAT]
        with open(self.log_path, "w") as log:
            self.started = time.monotonic()
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = self.started + READY_DEADLINE
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StartFailure(self.failure(f"exited with {self.process.returncode}"))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/ready", timeout=2):
                    self.ready_s = time.monotonic() - self.started
                    return
            except OSError:  # not listening yet, or 503 while initializing
                pass
            time.sleep(0.05)
        self.stop()
        raise StartFailure(self.failure(f"was not ready after {READY_DEADLINE:.0f} s"))

    def failure(self, what: str) -> str:
        return f"Envoy {self.name} {what}. Its log ({self.log_path}):\n{self.log()}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stats(self, pattern: str) -> dict:
        url = f"http://127.0.0.1:{self.admin}/stats?filter={pattern}"
        with urllib.request.urlopen(url, timeout=10) as r:
            lines = r.read().decode().splitlines()
        pairs = (line.split(": ", 1) for line in lines)
        return {name: int(value) for name, value in pairs if value.isdigit()}

    def requests_served(self) -> int:
        return self.stats("downstream_rq_total")["http.bench.downstream_rq_total"]

    def cpu_s(self) -> float:
        """CPU time (user + system) Envoy has used so far, all threads, in seconds."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def costed(self, load) -> dict:
        """Runs `load` and adds what Envoy spent on it: CPU time per request, which other work
        on the machine disturbs much less than requests/s, and the share of its CPU that Envoy
        used (near 1: Envoy was the bottleneck, as intended; lower: something else ran there)."""
        requests, cpu, wall = self.requests_served(), self.cpu_s(), time.monotonic()
        result = load()
        cpu, wall = self.cpu_s() - cpu, time.monotonic() - wall
        requests = self.requests_served() - requests
        result["cpu_us"] = round(cpu / requests * 1e6, 2)
        result["envoy_cpu_share"] = round(cpu / wall, 2)
        return result

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __exit__(self, *exc):
        self.stop()


def llm_request(name: str):
    """The LLM variants' request: (path, body file); None for every other variant (GET /)."""
    for shape, path in LLM_PATHS.items():
        if name.endswith(f"-{shape}"):
            return path, OUT / "llm-body.json"
    return None


def get(port: int, key: str, post=None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    if post:
        path, body = post
        connection.request("POST", path, body=body.read_bytes(),
                           headers={"x-api-key": key, "content-type": "application/json"})
    else:
        connection.request("GET", "/", headers={"x-api-key": key})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def config_times(log: str) -> list:
    """Per VM, the ms from tollgate's `starting` line to its `configured:` line on the same
    thread. The main thread is the one that wrote the log's first line; the others are workers."""
    main, starts, times = None, {}, []
    for line in log.splitlines():
        m = LOG_LINE.match(line)
        if not m:
            continue
        stamp, thread, logger, message = m.groups()
        main = main or thread
        if logger != "wasm" or "tollgate" not in message:
            continue
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
        if re.search(r": version \S+ \(.*\) starting$", message):
            starts[thread] = at
        elif ": configured: " in message and thread in starts:
            role = "main" if thread == main else "worker"
            times.append({"thread": role, "ms": round((at - starts.pop(thread)) * 1000, 1)})
    return times


# --- load -------------------------------------------------------------------------------------


def run(command: list, timeout: float) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def to_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk(port: int, seconds: int, keys: int, post=None) -> dict:
    command = pinned(LOAD_CPU) + ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    if post:
        path, body = post
        command += ["-s", str(POST_LUA), f"http://127.0.0.1:{port}{path}", "--", str(keys), path,
                    str(body)]
    else:
        command += ["-s", str(LUA), f"http://127.0.0.1:{port}/", "--", str(keys)]
    out = run(command, timeout=seconds + 60)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
        "p99_ms": to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
        "requests": requests,
        "2xx": requests - (int(non_2xx.group(1)) if non_2xx else 0),
        "errors": errors.group(1) if errors else "",
    }


def percentile(sorted_values: list, p: float) -> float:
    """Nearest-rank percentile."""
    rank = max(1, round(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def h2load(port: int, seconds: int, warmup: int, post=None) -> dict:
    log = OUT / "h2load-requests.tsv"
    log.unlink(missing_ok=True)  # h2load appends to it
    command = pinned(LOAD_CPU) + ["h2load", "-t1", f"-c{H2_CONNECTIONS}", f"-m{H2_STREAMS}"]
    command += [f"-D{seconds}", f"--warm-up-time={warmup}", "-H", "x-api-key: key-0"]
    path = "/"
    if post:
        path, body = post
        command += ["-d", str(body), "-H", "content-type: application/json"]
    command += [f"--log-file={log}", f"http://127.0.0.1:{port}{path}"]
    out = run(command, timeout=seconds + warmup + 60)
    if "h2" not in re.search(r"Application protocol: (\S+)", out).group(1):
        raise RuntimeError(f"h2load did not speak HTTP/2:\n{out}")
    # h2load counts 4xx answers as "failed": only errors and timeouts are failures here.
    found = re.search(r"requests: (\d+) total.* (\d+) errored, (\d+) timeout", out)
    requests, errored, timeouts = map(int, found.groups())
    # One row per measured request: start (us since epoch), status, us until the response ended.
    rows = [row.split("\t") for row in log.read_text().splitlines()]
    latencies = sorted(int(row[2]) / 1000 for row in rows)
    problems = [(errored, "errored"), (timeouts, "timed out")]
    return {
        "rps": float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1)),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "requests": requests,
        "2xx": sum(1 for row in rows if row[1].startswith("2")),
        "statuses": sorted({row[1] for row in rows}),
        "errors": ", ".join(f"{n} {what}" for n, what in problems if n),
    }


# --- the bench --------------------------------------------------------------------------------


def variants(args) -> list:
    """(name, HTTP filters, the status every request must get, proxied to the upstream)."""
    admitted = tollgate_plugin(CONSUMERS)
    shipped = dict(args.tollgate)["shipped"]
    tollgate = [wasm_filter("tollgate", shipped, admitted)]
    tokens = [wasm_filter("tollgate", shipped, tollgate_plugin(CONSUMERS, tokens=True))]
    found = [
        ("no-filter", [], 200, False),
        ("empty-wasm", [wasm_filter("empty", args.empty)], 200, False),
        ("floor", [wasm_filter("floor", args.floor)], 200, False),
        ("tollgate", tollgate, 200, False),
        ("tollgate-lean", [wasm_filter("tollgate", shipped, tollgate_plugin(CONSUMERS, lean=True))],
         200, False),
        ("native", [native_filter(CONSUMERS)], 200, False),
        ("tollgate-402", [wasm_filter("tollgate", shipped, tollgate_plugin(CONSUMERS, True))], 402,
         False),
        ("tollgate-sink-hang",
         [wasm_filter("tollgate", shipped, tollgate_plugin(CONSUMERS, events=True))], 200, False),
        *([
            ("tollgate-fleet",
             [wasm_filter("tollgate", shipped, tollgate_plugin(CONSUMERS, fleet=True))], 200, False),
            ("tollgate-fleet-lease1",
             [wasm_filter("tollgate", shipped, tollgate_plugin(CONSUMERS, fleet=True, lease=1))], 200, False),
            ("tollgate-fleet-burst-envoy",
             [wasm_filter("tollgate", shipped,
                          tollgate_plugin(CONSUMERS, fleet=True, burst_scope="envoy"))], 200, False),
            # Envoy's ratelimit filter needs a route entry (a direct_response has none): these
            # two run on the proxied route, each against the other.
            ("native-rls", [native_rls_filter()], 200, True),
            ("tollgate-fleet-proxied",
             [wasm_filter("tollgate", shipped, tollgate_plugin(CONSUMERS, fleet=True))], 200, True),
        ] if args.quotad else []),
        ("proxied", [], 200, True),
        ("tollgate-proxied", tollgate, 200, True),
        ("post-json", tollgate, 200, True),
        ("tokens-json", tokens, 200, True),
        ("post-sse", tollgate, 200, True),
        ("tokens-sse", tokens, 200, True),
    ]
    found += [
        (f"tollgate-{level}", [wasm_filter("tollgate", path, admitted)], 200, False)
        for level, path in args.tollgate
        if level != "shipped"
    ]
    return [v for v in found if not args.only or v[0] in args.only]


def measure(args, name: str, filters: list, status: int, upstream, round_: int) -> list:
    """Starts the variant's Envoy, warms it up, runs wrk then h2load, and checks that every
    request got `status`. Returns one result per protocol."""
    sink = hanging_sink() if name == "tollgate-sink-hang" else None
    with Envoy(args.envoy, name, filters, upstream=upstream, sink=sink) as envoy:
        post = llm_request(name)
        # Fleet mode: every consumer's first request takes its monthly lease (one store call per
        # consumer and month); the warm-up sends every key once, so the measurement is the
        # steady state, as local mode's records exist from the configuration on.
        every_key = status != 200 or name.startswith(("tollgate-fleet", "native-rls"))
        warmup = warm_up(envoy, every_key, args.warmup, post)
        probe = get(envoy.port, "key-1", post)
        if probe.status != status:
            raise RuntimeError(envoy.failure(f"answered {probe.status}, expected {status}"))
        if name.startswith(("tollgate", "post", "tokens")) and not probe.getheader("ratelimit"):
            raise RuntimeError(envoy.failure("sent no RateLimit field: is tollgate running?"))
        if name.startswith("tokens") and "tokens" not in probe.getheader("ratelimit"):
            raise RuntimeError(envoy.failure("counted no tokens: is the route priced?"))
        http1 = store_calls(name, lambda: envoy.costed(lambda: wrk(envoy.port, args.duration, CONSUMERS, post)))
        http2 = store_calls(name, lambda: envoy.costed(lambda: h2load(envoy.port, args.duration, args.warmup, post)))
        results = [{"protocol": "HTTP/1.1", **http1}, {"protocol": "HTTP/2", **http2}]
        if name == "native":
            stats = envoy.stats("http_local_rate_limit")
            admitted = stats.get("bench.http_local_rate_limit.ok", 0)
            limited = stats.get("bench.http_local_rate_limit.rate_limited", 0)
            if admitted < http1["requests"] + http2["requests"] or limited:
                raise RuntimeError(f"local_ratelimit did not admit every request: {stats}")
        if sink is not None:
            events = envoy.stats("tollgate.events")
            if not any(events.get(f"wasmcustom.tollgate.events.{n}") for n in ("failed_batches", "dropped")):
                raise RuntimeError(envoy.failure(f"the sink never failed a batch: {events}"))
        log, ready_s = envoy.log(), envoy.ready_s
    for r in results:
        expected = r["requests"] if status == 200 else 0
        wrong_status = r.get("statuses", [str(status)]) != [str(status)]
        if r["2xx"] != expected or wrong_status or r["errors"]:
            raise RuntimeError(
                f"{name} {r['protocol']}: {r['2xx']} of {r['requests']} requests got 2xx, expected"
                f" {expected} (statuses {r.get('statuses', '?')}); errors: {r['errors'] or 'none'}"
            )
    load = config_times(log) if name.startswith(("tollgate", "post", "tokens")) else []
    for r in results:
        r.update(variant=name, round=round_, ready_s=round(ready_s, 3), warmup_requests=warmup)
        r["config_ms"] = load
        print(
            f"  {name:14} {r['protocol']:8} {r['rps']:9.0f} req/s  p50 {r['p50_ms']:.3f} ms"
            f"  p99 {r['p99_ms']:.3f} ms  {r['cpu_us']:6.1f} us CPU/request"
            f" (Envoy busy {r['envoy_cpu_share']:.0%})",
            flush=True,
        )
    return results


def quotad_decisions() -> float:
    """quotad's decisions so far (every store call is one), from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{QUOTAD_HTTP}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("quotad_decisions_total{"))


def store_calls(name: str, load) -> dict:
    """Runs `load`; for the fleet variants adds the store calls per 1 000 requests."""
    if not name.startswith(("tollgate-fleet", "native-rls")):
        return load()
    before = quotad_decisions()
    result = load()
    calls = quotad_decisions() - before
    result["store_calls_per_1000"] = round(calls * 1000 / max(result["requests"], 1), 2)
    return result


class FleetStore:
    """Redis (no persistence) and quotad on free ports, pinned to the load generator's CPU,
    for the fleet variants; stopped by PID."""

    def __init__(self, quotad: Path):
        self.quotad, self.procs = quotad, []

    def __enter__(self):
        global QUOTAD_PORT, QUOTAD_HTTP
        self.dir = tempfile.mkdtemp(prefix="tollgate-bench-redis-")
        redis_port, QUOTAD_PORT, QUOTAD_HTTP = free_port(), free_port(), free_port()
        log = open(OUT / "fleet-store.log", "w")
        self.procs.append(subprocess.Popen(
            pinned(LOAD_CPU) + ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                "--dir", self.dir, "--save", "", "--appendonly", "no"],
            stdout=log, stderr=log))
        self.procs.append(subprocess.Popen(
            pinned(LOAD_CPU) + [str(self.quotad), "--listen", f"127.0.0.1:{QUOTAD_PORT}",
                                "--http-listen", f"127.0.0.1:{QUOTAD_HTTP}",
                                "--redis", f"redis://127.0.0.1:{redis_port}",
                                # Pinned to one CPU: one thread (tokio's current-thread runtime).
                                "--worker-threads", "1"],
            stdout=log, stderr=log))
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{QUOTAD_HTTP}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"quotad not healthy within 60 s: see {OUT / 'fleet-store.log'}")
            time.sleep(0.1)

    def __exit__(self, *exc):
        global QUOTAD_PORT, QUOTAD_HTTP
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        QUOTAD_PORT = QUOTAD_HTTP = 0


def warm_up(envoy: Envoy, every_key: bool, seconds: int, post=None) -> int:
    """A discarded wrk run. With `every_key` (the refused variant, which also spends every
    consumer's quota of 1; the fleet variants, which take every consumer's first lease) one run
    must send at least one request per key: on a slow machine, a longer run."""
    if not every_key:
        return wrk(envoy.port, seconds, CONSUMERS, post)["requests"]
    for seconds in (2, 4, 8):
        sent = wrk(envoy.port, seconds, CONSUMERS)["requests"]
        if sent >= CONSUMERS:
            return sent
    raise RuntimeError(f"the warm-up sent {sent} requests in {seconds} s for {CONSUMERS} keys")


def startup(args, consumers: int, round_: int) -> dict:
    """VM start + configuration with `consumers` consumers: Envoy with 2 workers, not pinned."""
    plugin = wasm_filter("tollgate", dict(args.tollgate)["shipped"], tollgate_plugin(consumers))
    with Envoy(args.envoy, f"startup-{consumers}", [plugin], concurrency=2, cpu=None) as envoy:
        ready_s = envoy.ready_s
        if get(envoy.port, "key-0").status != 200:
            raise RuntimeError(envoy.failure("did not admit key-0"))
    times = config_times(envoy.log())
    if len([t for t in times if t["thread"] == "worker"]) != 2:
        raise RuntimeError(envoy.failure(f"expected 2 configured workers, found {times}"))
    print(f"  {consumers:>7} consumers: ready after {ready_s:.2f} s; {times}", flush=True)
    return {"consumers": consumers, "round": round_, "ready_s": round(ready_s, 3),
            "config_ms": times}


def first_line(command: list) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    return (done.stdout + done.stderr).strip().splitlines()[0]


def git(*words) -> str:
    return subprocess.run(["git", *words], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def machine(args) -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    memory_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "-uno") else ""
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git("rev-parse", "--short=12", "HEAD") + dirty,
        "cpu": models[0] if models else platform.processor(),
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_kb / 2**20, 1),
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", platform.system()),
        "envoy": first_line([args.envoy, "--version"]).split("version: ")[-1],
        "wrk": first_line(["wrk", "-v"]).split(" Copyright")[0],
        "h2load": first_line(["h2load", "--version"]),
        "rustc": first_line(["rustc", "--version"]),
        "pinned": f"Envoy on CPU {ENVOY_CPU}, load generator on CPU {LOAD_CPU}"
        if PIN
        else "not pinned (fewer than 2 CPUs, or no taskset)",
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "consumers": CONSUMERS,
        "wrk_connections": CONNECTIONS,
        "h2load_connections": H2_CONNECTIONS,
        "h2load_streams": H2_STREAMS,
    }


def repo_path(text: str) -> Path:
    return (ROOT / text).resolve()


def level_and_path(text: str) -> tuple:
    level, _, path = text.partition("=")
    return level, repo_path(path)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--envoy", type=repo_path, required=True)
    parser.add_argument("--empty", type=repo_path, required=True, help="the empty filter's .wasm")
    parser.add_argument("--floor", type=repo_path, required=True, help="the floor filter's .wasm")
    parser.add_argument(
        "--tollgate", nargs="+", required=True, type=level_and_path, metavar="NAME=PATH",
        help="tollgate.wasm builds: shipped=PATH (what make build ships) and others to compare, e.g. oz=PATH",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per protocol")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of discarded load first")
    parser.add_argument("--startup-rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="run only these variants (for development)")
    parser.add_argument("--quotad", type=repo_path,
                        help="the quotad binary: adds the fleet-mode variants (Redis beside it)")
    args = parser.parse_args()
    if "shipped" not in dict(args.tollgate):
        parser.error("--tollgate needs shipped=PATH, the build tollgate ships")
    for tool in ("wrk", "h2load"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: `make bench` installs it")
    OUT.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    results = {"machine": machine(args), "sizes": {}, "runs": [], "startup": []}
    wasms = [("empty-wasm", args.empty), ("floor", args.floor)] + [(f"tollgate-{l}", p) for l, p in args.tollgate]
    results["sizes"] = {label: path.stat().st_size for label, path in wasms}
    todo = variants(args)
    store = FleetStore(args.quotad) if args.quotad else contextlib.nullcontext()
    # The upstream of the proxied variants: one Envoy answering directly, on the load's CPU.
    (OUT / "llm-body.json").write_text(LLM_BODY)
    with store, Envoy(args.envoy, "upstream", [], cpu=LOAD_CPU, answers=True) as upstream:
        for round_ in range(args.rounds):
            print(f"round {round_ + 1} of {args.rounds}", flush=True)
            shift = round_ % len(todo)
            for name, filters, status, proxied in todo[shift:] + todo[:shift]:
                port = upstream.port if proxied else None
                results["runs"] += measure(args, name, filters, status, port, round_)
    print("VM start + configuration", flush=True)
    for round_ in range(args.startup_rounds):
        for consumers in (10, 100_000):
            results["startup"].append(startup(args, consumers, round_))
    results["machine"]["elapsed_s"] = round(time.monotonic() - started)
    (OUT / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {OUT / 'results.json'} after {results['machine']['elapsed_s']} s")


if __name__ == "__main__":
    try:
        main()
    except (StartFailure, RuntimeError, subprocess.TimeoutExpired) as e:
        sys.exit(f"bench failed: {e}")
