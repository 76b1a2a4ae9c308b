#!/usr/bin/env node
// A proxy-wasm filter's own cost per request, without Envoy: the module runs in Node's V8 with
// host functions written in JavaScript (headers and shared data in plain Maps), so that the time
// per request is the module's code plus a cheap, identical host for every module. `make bench`
// runs it on the empty filter, the floor filter and tollgate with the benchmark's configuration
// (the same keys and the same host calls as the Envoy runs): tollgate minus the floor is what
// tollgate's own code costs, measured far more steadily than through Envoy.
//
// usage: node bench/vm-only.js NAME=PATH... [--config FILE] [--requests N] [--rounds R]
// Prints one JSON object: {NAME: {ns_per_request, host_calls_per_request, ...}}.
"use strict";
const fs = require("fs");

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : fallback;
};
const configFile = option("--config", null);
const requests = Number(option("--requests", "200000"));
const rounds = Number(option("--rounds", "5"));
const keys = Number(option("--keys", "10000"));
const modules = args.map((a) => a.split("="));
const configuration = configFile ? fs.readFileSync(configFile) : Buffer.alloc(0);

const OK = 0, NOT_FOUND = 1, CAS_MISMATCH = 8;

function run(path) {
  const bytes = fs.readFileSync(path);
  let memory, exports;
  const shared = new Map(); // key -> [Buffer, cas]
  let nextCas = 1;
  let request = new Map(), response = new Map();
  let calls = 0;
  const enc = new TextEncoder(), dec = new TextDecoder();
  const mem = () => new Uint8Array(memory.buffer);
  const str = (ptr, len) => dec.decode(mem().subarray(ptr, ptr + len));
  const buf = (ptr, len) => Buffer.from(mem().subarray(ptr, ptr + len));
  const view = () => new DataView(memory.buffer);
  // Hands `data` to the module the way Envoy does: memory allocated by proxy_on_memory_allocate.
  const give = (data, ptrPtr, sizePtr) => {
    const p = exports.proxy_on_memory_allocate(data.length || 1);
    mem().set(data, p);
    view().setUint32(ptrPtr, p, true);
    view().setUint32(sizePtr, data.length, true);
  };
  const map = (type) => (type === 0 ? request : response);
  const env = {
    proxy_log: (level, p, n) => { calls++; if (level >= 3) process.stderr.write(str(p, n) + "\n"); return OK; },
    proxy_get_log_level: (p) => { calls++; view().setUint32(p, 2, true); return OK; },
    proxy_get_current_time_nanoseconds: (p) => {
      calls++;
      view().setBigUint64(p, BigInt(Date.now()) * 1000000n, true);
      return OK;
    },
    proxy_get_buffer_bytes: (type, start, len, pp, sp) => {
      calls++;
      give(configuration.subarray(start, start + len), pp, sp);
      return OK;
    },
    proxy_get_header_map_value: (type, kp, kn, pp, sp) => {
      calls++;
      const v = map(type).get(str(kp, kn));
      if (v === undefined) return NOT_FOUND;
      give(v, pp, sp);
      return OK;
    },
    proxy_replace_header_map_value: (type, kp, kn, vp, vn) => { calls++; map(type).set(str(kp, kn), buf(vp, vn)); return OK; },
    proxy_add_header_map_value: (type, kp, kn, vp, vn) => { calls++; map(type).set(str(kp, kn), buf(vp, vn)); return OK; },
    proxy_remove_header_map_value: (type, kp, kn) => { calls++; map(type).delete(str(kp, kn)); return OK; },
    proxy_get_shared_data: (kp, kn, pp, sp, casp) => {
      calls++;
      const e = shared.get(str(kp, kn));
      if (e === undefined) return NOT_FOUND;
      give(e[0], pp, sp);
      view().setUint32(casp, e[1], true);
      return OK;
    },
    proxy_set_shared_data: (kp, kn, vp, vn, cas) => {
      calls++;
      const k = str(kp, kn), e = shared.get(k);
      if (e !== undefined && cas !== 0 && cas !== e[1]) return CAS_MISMATCH;
      shared.set(k, [buf(vp, vn), nextCas++]);
      return OK;
    },
    proxy_define_metric: (t, p, n, idp) => { calls++; view().setUint32(idp, 1, true); return OK; },
    proxy_increment_metric: () => { calls++; return OK; },
    proxy_set_tick_period_milliseconds: () => { calls++; return OK; },
    proxy_send_local_response: () => { calls++; return OK; },
  };
  const stubs = new Proxy(env, {
    get: (target, name) => target[name] || (() => { calls++; return OK; }),
  });
  const wasi = {
    fd_write: () => 0, proc_exit: () => 0, environ_get: () => 0,
    environ_sizes_get: (a, b) => { view().setUint32(a, 0, true); view().setUint32(b, 0, true); return 0; },
    random_get: (p, n) => { mem().fill(7, p, p + n); return 0; },
    clock_time_get: (id, prec, p) => { view().setBigUint64(p, BigInt(Date.now()) * 1000000n, true); return 0; },
  };
  const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), {
    env: stubs,
    wasi_snapshot_preview1: new Proxy(wasi, { get: (t, n) => t[n] || (() => 0) }),
  });
  exports = instance.exports;
  memory = exports.memory;
  if (exports._initialize) exports._initialize();
  exports.proxy_on_context_create(1, 0);
  exports.proxy_on_vm_start(1, 0);
  if (!exports.proxy_on_configure(1, configuration.length)) throw new Error(`${path}: configuration refused`);
  const keyBytes = Array.from({ length: keys }, (_, i) => Buffer.from(`key-${i}`));
  let id = 2;
  const one = (i) => {
    request = new Map([["x-api-key", keyBytes[i % keys]], [":path", Buffer.from("/")], [":method", Buffer.from("GET")]]);
    response = new Map([[":status", Buffer.from("200")]]);
    exports.proxy_on_context_create(id, 1);
    exports.proxy_on_request_headers(id, 3, 1);
    exports.proxy_on_response_headers(id, 1, 1);
    exports.proxy_on_done(id);
    exports.proxy_on_delete(id);
    id++;
  };
  for (let i = 0; i < requests; i++) one(i); // warm-up: V8 tiers up the hot functions
  const times = [];
  let perRequest = 0;
  for (let r = 0; r < rounds; r++) {
    calls = 0;
    const t = process.hrtime.bigint();
    for (let i = 0; i < requests; i++) one(i);
    times.push(Number(process.hrtime.bigint() - t) / requests);
    perRequest = calls / requests;
  }
  times.sort((a, b) => a - b);
  return {
    ns_per_request: Math.round(times[0]),
    ns_median: Math.round(times[Math.floor(times.length / 2)]),
    host_calls_per_request: Math.round(perRequest * 100) / 100,
    request_headers: [...request.keys()].filter((k) => k.startsWith("x-tollgate")),
    response_headers: [...response.keys()].filter((k) => k !== ":status"),
  };
}

const out = {};
for (const [name, path] of modules) out[name] = run(path);
console.log(JSON.stringify(out, null, 1));
