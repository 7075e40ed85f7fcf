#!/usr/bin/python3
"""Compares libattn's forward pass with ONNX Runtime's fused attention layer.

For each case it builds the equivalent ONNX model of the layer (Q, K and V
projections as MatMul + Add, the com.microsoft MultiHeadAttention operator,
the output projection as MatMul + Add; causal cases set its unidirectional
attribute), with weights drawn from one seed and loaded into libattn too,
and checks that both give the same output on the same input. Then, in one
run and interleaved case by case for --rounds rounds, it times libattn
through bench_forward and ONNX Runtime through onnxruntime-node
(bench/ort_bench.js, its CPU execution provider with --ort-threads intra-op
threads), and prints for each case the median over the rounds of each
side's median time with the min-max over rounds, the ratio ORT / libattn
(> 1: libattn is faster) likewise, and both as a fraction of a large
cblas_sgemm measured in the same run.

Needs Debian's python3 with python3-onnx and python3-numpy, node and npm.
onnxruntime-node is installed on first use with npm into --ort-dir (its
CPU library ships inside the npm package; nothing else is downloaded):
  /usr/bin/python3 bench/compare_ort.py --bench build/bench/bench_forward
See docs/PERFORMANCE.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_torch as ct  # noqa: E402  (case strings, timing helpers)

ORT_VERSION = "1.30.0"
HERE = os.path.dirname(os.path.abspath(__file__))

# The cases of issue 11's table.
CASES = [
    "name=self-B8-L64,B=8,L=64",
    "name=self-B4-L256,B=4,L=256",
    "name=self-B2-L1024,B=2,L=1024",
    "name=self-B1-L4096,B=1,L=4096",
    "name=cross-B4-Lq256-Lk1024,B=4,Lq=256,Lk=1024,kdim=768,vdim=768",
    "name=causal-B1-L4096,B=1,L=4096,causal=1",
    "name=self-B1-L16384,B=1,L=16384",
]


def ensure_ort(ort_dir):
    """onnxruntime-node in ort_dir/node_modules, installed with npm when
    missing (ONNXRUNTIME_NODE_INSTALL=skip: the CPU binary inside the
    package is all it needs)."""
    mod = os.path.join(ort_dir, "node_modules", "onnxruntime-node")
    if os.path.isdir(mod):
        return
    os.makedirs(ort_dir, exist_ok=True)
    env = dict(os.environ, ONNXRUNTIME_NODE_INSTALL="skip",
               ONNXRUNTIME_NODE_INSTALL_CUDA="skip")
    subprocess.run(["npm", "install", "--prefix", ort_dir, "--no-audit",
                    "--no-fund", f"onnxruntime-node@{ORT_VERSION}"],
                   check=True, env=env, stdout=sys.stderr)


def is_self(c):
    return c["Lq"] == c["Lk"] and c["kdim"] == c["E"] and c["vdim"] == c["E"]


def make_weights(c, seed):
    """torch.nn.MultiheadAttention's weights (its names and layouts),
    uniform in +-sqrt(3 / fan_in), biases in +-0.5."""
    import numpy as np
    rng = np.random.default_rng(seed)
    E, kdim, vdim = c["E"], c["kdim"], c["vdim"]

    def u(shape, fan_in):
        b = (3.0 / fan_in) ** 0.5
        return rng.uniform(-b, b, shape).astype(np.float32)

    w = {}
    if kdim == E and vdim == E:
        w["in_proj_weight"] = u((3 * E, E), E)
    else:
        w["q_proj_weight"] = u((E, E), E)
        w["k_proj_weight"] = u((E, kdim), kdim)
        w["v_proj_weight"] = u((E, vdim), vdim)
    w["in_proj_bias"] = rng.uniform(-0.5, 0.5, 3 * E).astype(np.float32)
    w["out_proj.weight"] = u((E, E), E)
    w["out_proj.bias"] = rng.uniform(-0.5, 0.5, E).astype(np.float32)
    return w


def projection_weights(c, w):
    E = c["E"]
    if "in_proj_weight" in w:
        wq, wk, wv = (w["in_proj_weight"][i * E:(i + 1) * E] for i in range(3))
    else:
        wq, wk, wv = w["q_proj_weight"], w["k_proj_weight"], w["v_proj_weight"]
    b = w["in_proj_bias"]
    return [(wq, b[:E]), (wk, b[E:2 * E]), (wv, b[2 * E:])]


def input_names(c):
    """The model's inputs and their shapes: one x for self-attention, a
    query and a memory (serving as keys and values) for cross-attention
    with kdim == vdim, else query, key and value."""
    B, Lq, Lk, E = c["B"], c["Lq"], c["Lk"], c["E"]
    if is_self(c):
        return {"x": [B, Lq, E]}, ("x", "x", "x")
    if c["kdim"] == c["vdim"]:
        return ({"query": [B, Lq, E], "memory": [B, Lk, c["kdim"]]},
                ("query", "memory", "memory"))
    return ({"query": [B, Lq, E], "key": [B, Lk, c["kdim"]],
             "value": [B, Lk, c["vdim"]]}, ("query", "key", "value"))


def build_model(c, w, path):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper, save
    inputs, roles = input_names(c)
    inits, nodes = [], []
    names = ["q", "k", "v"]
    for (wt, b), src, nm in zip(projection_weights(c, w), roles, names):
        inits.append(numpy_helper.from_array(
            np.ascontiguousarray(wt.T), f"w_{nm}"))
        inits.append(numpy_helper.from_array(b, f"b_{nm}"))
        nodes.append(helper.make_node("MatMul", [src, f"w_{nm}"], [f"{nm}0"]))
        nodes.append(helper.make_node("Add", [f"{nm}0", f"b_{nm}"], [nm]))
    attrs = {"num_heads": c["H"]}
    if c["causal"]:
        attrs["unidirectional"] = 1
    nodes.append(helper.make_node("MultiHeadAttention", names, ["ctx"],
                                  domain="com.microsoft", **attrs))
    inits.append(numpy_helper.from_array(
        np.ascontiguousarray(w["out_proj.weight"].T), "w_o"))
    inits.append(numpy_helper.from_array(w["out_proj.bias"], "b_o"))
    nodes.append(helper.make_node("MatMul", ["ctx", "w_o"], ["y0"]))
    nodes.append(helper.make_node("Add", ["y0", "b_o"], ["y"]))
    graph = helper.make_graph(
        nodes, "attention",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
         for n, s in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                       [c["B"], c["Lq"], c["E"]])],
        inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17),
                              helper.make_opsetid("com.microsoft", 1)])
    save(model, path)


def run_node(a, spec):
    cmd = ["node", os.path.join(HERE, "ort_bench.js"), json.dumps(spec)]
    return ct.run_json(cmd, a.max_foreign)


def check_agreement(a, c, w, model, tmp):
    """libattn (through the Python binding) and ONNX Runtime on the same
    random inputs; returns the largest absolute difference of the outputs
    and the largest |output|."""
    import numpy as np
    os.environ.setdefault("ATTN_LIBRARY", a.lib)
    sys.path.insert(0, os.path.join(HERE, "..", "bindings", "python"))
    import attn
    inputs, roles = input_names(c)
    rng = np.random.default_rng(7)
    data = {n: rng.uniform(-1, 1, s).astype(np.float32)
            for n, s in inputs.items()}
    layer = attn.MultiheadAttention(c["E"], c["H"], kdim=c["kdim"],
                                    vdim=c["vdim"], seed=0)
    layer.load_state_dict(w)
    mine, _ = layer(data[roles[0]], data[roles[1]], data[roles[2]],
                    need_weights=False, is_causal=bool(c["causal"]))
    files = {}
    for n, x in data.items():
        files[n] = os.path.join(tmp, f"in_{n}.bin")
        x.tofile(files[n])
    out = os.path.join(tmp, "out.bin")
    spec = {"model": model, "ort": a.ort_dir, "inputs": inputs,
            "threads": a.ort_threads, "check_in": files, "check_out": out}
    if not run_node(a, spec):
        raise RuntimeError("onnxruntime-node failed on " + c["name"])
    theirs = np.fromfile(out, dtype=np.float32).reshape(mine.shape)
    return float(np.abs(mine - theirs).max()), float(np.abs(mine).max())


def spread(xs, fmt):
    return (f"{fmt.format(statistics.median(xs))} "
            f"({fmt.format(min(xs))}-{fmt.format(max(xs))})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default="build/bench/bench_forward")
    ap.add_argument("--lib", help="libattn.so for the agreement check "
                    "(default: next to the bench directory)")
    ap.add_argument("--case", action="append", default=[],
                    help="a bench_forward case string (repeatable)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--ort-threads", type=int, default=os.cpu_count())
    ap.add_argument("--ort-dir", default=os.path.expanduser(
        "~/.cache/libattn-bench/ort-" + ORT_VERSION))
    ap.add_argument("--ref-size", type=int, default=2048)
    ap.add_argument("--wait-idle", type=float, default=0.0)
    ap.add_argument("--max-foreign", type=float, default=0.0)
    ap.add_argument("--no-check", action="store_true",
                    help="skip the output agreement check")
    ap.add_argument("--json", help="also write every result line here")
    a = ap.parse_args()
    a.lib = a.lib or os.path.join(os.path.dirname(
        os.path.dirname(os.path.abspath(a.bench))), "libattn.so")
    ensure_ort(a.ort_dir)
    texts = a.case or CASES
    cases = [ct.parse_case(t) for t in texts]
    out = open(a.json, "w") if a.json else None
    tmp = tempfile.mkdtemp(prefix="compare_ort.")
    models = {}
    for c in cases:
        models[c["name"]] = os.path.join(tmp, c["name"] + ".onnx")
        w = make_weights(c, 1)
        build_model(c, w, models[c["name"]])
        if not a.no_check:
            diff, top = check_agreement(a, c, w, models[c["name"]], tmp)
            print(f"{c['name']}: outputs agree to {diff:.2e} "
                  f"(largest |output| {top:.2f})")

    refs = []

    def reference():
        for r in ct.run_json([a.bench, "--ref-only", "--ref-size",
                              str(a.ref_size), "--wait-idle",
                              str(a.wait_idle)]):
            if r.get("reference_sgemm"):
                refs.append(r["median_gflops"])

    common = ["--ref-size", "0", "--min-time", str(a.min_time), "--warmup",
              str(a.warmup), "--wait-idle", str(a.wait_idle),
              "--max-foreign", str(a.max_foreign)]
    lib = {c["name"]: [] for c in cases}
    ort = {c["name"]: [] for c in cases}
    reference()
    for rnd in range(a.rounds):
        for c, text in zip(cases, texts):
            r1 = [r for r in ct.run_json([a.bench, text] + common)
                  if r.get("ok")]
            ct.wait_idle(a.wait_idle)
            spec = {"model": models[c["name"]], "ort": a.ort_dir,
                    "inputs": input_names(c)[0], "threads": a.ort_threads,
                    "min_time": a.min_time, "reps": 0, "warmup": a.warmup}
            r2 = [r for r in run_node(a, spec) if r.get("ok")]
            if not r1 or not r2:
                print(f"{c['name']}: round {rnd} failed", file=sys.stderr)
                continue
            lib[c["name"]].append(r1[0]["median_ms"])
            ort[c["name"]].append(r2[0]["median_ms"])
            if out:
                out.write(json.dumps({"case": c["name"], "round": rnd,
                                      "libattn": r1[0], "ort": r2[0]}) + "\n")
                out.flush()
    reference()
    ref = statistics.median(refs) if refs else float("nan")
    print(f"ONNX Runtime {ORT_VERSION} ({a.ort_threads} intra-op threads), "
          f"reference sgemm {a.ref_size}^3: {ref:.1f} GFLOP/s, "
          f"{a.rounds} interleaved rounds; medians over rounds (min-max)")
    print(f"{'case':<30} {'libattn ms':>22} {'ORT ms':>22} "
          f"{'ORT / libattn':>20} {'frac lib':>8} {'frac ORT':>8}")
    for c in cases:
        n = c["name"]
        if not lib[n]:
            print(f"{n:<30} failed")
            continue
        ratios = [o / m for o, m in zip(ort[n], lib[n])]
        fl = ct.flops(c) * 1e-9
        print(f"{n:<30} {spread(lib[n], '{:.1f}'):>22} "
              f"{spread(ort[n], '{:.1f}'):>22} "
              f"{spread(ratios, '{:.2f}'):>20} "
              f"{fl / (statistics.median(lib[n]) * 1e-3) / ref:8.2f} "
              f"{fl / (statistics.median(ort[n]) * 1e-3) / ref:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
