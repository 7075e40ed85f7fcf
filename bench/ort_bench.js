// SPDX-License-Identifier: MIT
// Runs an attention layer's ONNX model (built by compare_ort.py) with
// onnxruntime-node: times it, or computes one output for the agreement
// check. Prints one JSON line.
//
// usage: node ort_bench.js SPEC_JSON
//   SPEC_JSON: {"model": path, "ort": dir holding node_modules,
//               "inputs": {name: [dims...]}, "threads": N,
//               "min_time": s, "reps": n, "warmup": n,
//               "check_in": {name: file}, "check_out": file}
//   With check_in, the inputs are read from those files (raw float32) and
//   the output is written to check_out; otherwise the inputs are random
//   and the run is timed.
'use strict';
const fs = require('fs');
const path = require('path');

function uniformInputs(shape, seed) {
  const n = shape.reduce((a, b) => a * b, 1);
  const x = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    x[i] = (s >>> 8) / 16777216 - 0.5;
  }
  return x;
}

async function main() {
  const spec = JSON.parse(process.argv[2]);
  const ort = require(path.join(spec.ort, 'node_modules', 'onnxruntime-node'));
  const session = await ort.InferenceSession.create(spec.model, {
    intraOpNumThreads: spec.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const feeds = {};
  let seed = 12345;
  for (const [name, dims] of Object.entries(spec.inputs)) {
    const data = spec.check_in
      ? new Float32Array(fs.readFileSync(spec.check_in[name]).buffer.slice(0))
      : uniformInputs(dims, seed++);
    feeds[name] = new ort.Tensor('float32', data, dims);
  }
  if (spec.check_in) {
    const out = await session.run(feeds);
    const y = out[session.outputNames[0]].data;
    fs.writeFileSync(spec.check_out, Buffer.from(y.buffer, y.byteOffset,
                                                 y.byteLength));
    console.log(JSON.stringify({ok: true, check: true}));
    return;
  }
  for (let i = 0; i < (spec.warmup || 1); i++)
    await session.run(feeds);
  const times = [];
  const start = process.hrtime.bigint();
  for (;;) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    const t1 = process.hrtime.bigint();
    times.push(Number(t1 - t0) / 1e6);
    const spent = Number(t1 - start) / 1e9;
    if (spec.reps > 0 ? times.length >= spec.reps
                      : times.length >= 5 && spent >= spec.min_time)
      break;
  }
  times.sort((a, b) => a - b);
  const m = times.length;
  const median = m % 2 ? times[(m - 1) / 2]
                       : 0.5 * (times[m / 2 - 1] + times[m / 2]);
  console.log(JSON.stringify({
    ok: true, reps: m, median_ms: median, min_ms: times[0],
    max_ms: times[m - 1], ort_version: ort.env.versions.common,
  }));
}

main().catch((e) => {
  console.log(JSON.stringify({ok: false, error: String(e)}));
  process.exit(1);
});
