#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Compares libattn's forward pass with PyTorch's nn.MultiheadAttention.

For each case, in one run and interleaved (libattn, then PyTorch with its
default threads, then PyTorch with --torch-threads), it times:
  - libattn through bench_forward (a C program; each case in its own
    process),
  - torch.nn.MultiheadAttention (batch_first, eval(), torch.no_grad(),
    need_weights=False unless the case asks for weights), each case in its
    own Python process so that one case's memory does not carry over,
and prints the medians, the speed-up of libattn over PyTorch (the ratio of
the medians, and the median of the per-round ratios with their min-max),
both as a fraction of a large cblas_sgemm measured in the same run, and
peak memory.

Run with Debian's python3 (python3-torch): see docs/PERFORMANCE.md.
  /usr/bin/python3 bench/compare_torch.py --bench build/bench/bench_forward
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

# The cases of issue 4's target table (same names as bench_forward's
# "targets" preset). B=1, L=16384 is skipped for PyTorch by the memory
# limit: its score matrix alone is 8 GiB.
TARGETS = [
    "name=self-B8-L64,B=8,L=64",
    "name=self-B4-L256,B=4,L=256",
    "name=self-B2-L1024,B=2,L=1024",
    "name=self-B1-L4096,B=1,L=4096",
    "name=causal-B1-L4096,B=1,L=4096,causal=1",
    "name=cross-B4-Lq256-Lk1024,B=4,Lq=256,Lk=1024,kdim=768,vdim=768",
    "name=self-B1-L16384,B=1,L=16384",
]


def parse_case(text):
    """A bench_forward case string as a dict with every field filled."""
    c = {"name": text, "B": 1, "E": 512, "H": 8, "causal": 0, "keylen": 0.0,
         "pad": 0.0, "bias": 0, "weights": 0, "threads": 0, "window": 0}
    L = 0
    for kv in text.split(","):
        key, _, val = kv.partition("=")
        if key == "name":
            c["name"] = val
        elif key == "L":
            L = int(val)
        elif key in ("keylen", "pad"):
            c[key] = float(val)
        else:
            c[key] = int(val)
    c.setdefault("Lq", L)
    c.setdefault("Lk", L)
    c.setdefault("kdim", c["E"])
    c.setdefault("vdim", c["E"])
    return c


def torch_bytes(c):
    """Rough peak of PyTorch's attention: a few score-sized buffers."""
    scores = 4 * c["B"] * c["H"] * c["Lq"] * c["Lk"]
    return 3 * scores + 4 * 8 * c["B"] * (c["Lq"] + c["Lk"]) * c["E"]


def run_torch_case(c, threads, reps, min_time, warmup):
    """Runs in a child process; prints one JSON line."""
    import torch
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    B, Lq, Lk, E, H = c["B"], c["Lq"], c["Lk"], c["E"], c["H"]
    kdim, vdim = c["kdim"], c["vdim"]
    self_attn = Lq == Lk and kdim == E and vdim == E
    mha = torch.nn.MultiheadAttention(E, H, batch_first=True, kdim=kdim,
                                      vdim=vdim).eval()
    q = torch.rand(B, Lq, E) * 2 - 1
    if self_attn:
        k = v = q
    else:
        k = torch.rand(B, Lk, kdim) * 2 - 1
        v = k if kdim == vdim else torch.rand(B, Lk, vdim) * 2 - 1
    attn_mask = None
    if c["causal"]:
        # Top-left (1) or bottom-right (2) aligned, as libattn's modes.
        shift = 0 if c["causal"] == 1 else Lk - Lq
        i = torch.arange(Lq).unsqueeze(1)
        j = torch.arange(Lk).unsqueeze(0)
        attn_mask = torch.zeros(Lq, Lk).masked_fill(j > i + shift,
                                                    float("-inf"))
    if c["bias"]:
        bias = torch.rand(Lq, Lk) * 2 - 1
        attn_mask = bias if attn_mask is None else attn_mask + bias
    key_padding_mask = None
    if c["pad"] > 0 or c["keylen"] > 0:
        key_padding_mask = torch.zeros(B, Lk, dtype=torch.bool)
        if c["keylen"] > 0:
            key_padding_mask[:, round(c["keylen"] * Lk):] = True
        if c["pad"] > 0:
            key_padding_mask[1::2, Lk - round(c["pad"] * Lk):] = True
    need_weights = c["weights"] > 0

    def forward():
        return mha(q, k, v, key_padding_mask=key_padding_mask,
                   need_weights=need_weights, attn_mask=attn_mask,
                   average_attn_weights=c["weights"] == 2)

    with torch.no_grad():
        first = 0.0
        for _ in range(warmup + 1):
            t0 = time.perf_counter()
            forward()
            first = time.perf_counter() - t0
        n = reps if reps > 0 else max(5, min(10000, int(min_time / first) + 1))
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            forward()
            times.append(time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"case": c["name"], "ok": True, "reps": n,
                      "threads": torch.get_num_threads(),
                      "median_ms": 1e3 * statistics.median(times),
                      "min_ms": 1e3 * min(times), "max_ms": 1e3 * max(times),
                      "peak_rss_mib": rss}))


def cpu_jiffies():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[3] + v[4], sum(v)


def wait_idle(fraction):
    """Waits (up to 10 minutes) until the CPUs were idle for at least
    `fraction` of one second: on a shared machine, a measurement should not
    start while other programs are busy."""
    if fraction <= 0:
        return
    for _ in range(600):
        i0, t0 = cpu_jiffies()
        time.sleep(1.0)
        i1, t1 = cpu_jiffies()
        if t1 > t0 and (i1 - i0) / (t1 - t0) >= fraction:
            return
    sys.stderr.write("compare_torch: CPUs still busy; measuring anyway\n")


def run_json(cmd, max_foreign=0.0):
    """Runs cmd; returns its JSON lines (lines starting with '{'). With
    max_foreign > 0, a run during which other programs used more than that
    many CPUs is repeated (up to 4 times)."""
    for attempt in range(5):
        i0, t0 = cpu_jiffies()
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        w0 = time.monotonic()
        res = subprocess.run(cmd, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        wall = time.monotonic() - w0
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        i1, t1 = cpu_jiffies()
        tick = os.sysconf("SC_CLK_TCK")
        busy = ((t1 - i1) - (t0 - i0)) / tick
        mine = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
        foreign = (busy - mine) / wall if wall > 0 else 0.0
        if max_foreign <= 0 or foreign <= max_foreign or attempt == 4:
            break
        sys.stderr.write(f"compare_torch: other programs used "
                         f"{foreign:.2f} CPUs during a measurement; "
                         f"repeating it\n")
    lines = [json.loads(x) for x in res.stdout.splitlines()
             if x.startswith("{")]
    if res.returncode != 0 and not lines:
        sys.stderr.write(res.stdout + res.stderr)
    return lines


def flops(c):
    B, Lq, Lk, E = c["B"], c["Lq"], c["Lk"], c["E"]
    return (2 * B * Lq * E * E + 2 * B * Lk * E * (c["kdim"] + c["vdim"]) +
            2 * B * Lq * E * E + 4 * B * Lq * Lk * E)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default="build/bench/bench_forward",
                    help="path of the bench_forward program")
    ap.add_argument("--case", action="append", default=[],
                    help="a bench_forward case string (repeatable); default: "
                         "the issue's target cases")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every case this many times, interleaved; "
                         "the median of the rounds is reported")
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="seconds of timed runs per case and round")
    ap.add_argument("--reps", type=int, default=0,
                    help="timed runs per case (0: enough for --min-time)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--torch-threads", type=int, default=os.cpu_count(),
                    help="also time PyTorch with this many threads "
                         "(0: only its default)")
    ap.add_argument("--torch-max-gib", type=float, default=4.0,
                    help="skip PyTorch where its attention would need more "
                         "memory than this")
    ap.add_argument("--ref-size", type=int, default=2048,
                    help="n of the n*n*n reference sgemm")
    ap.add_argument("--json", help="also write every result line here")
    ap.add_argument("--wait-idle", type=float, default=0.0,
                    help="before each measurement, wait until the CPUs were "
                         "idle for this fraction of a second (shared "
                         "machines; 0 = do not wait)")
    ap.add_argument("--max-foreign", type=float, default=0.0,
                    help="repeat a measurement (up to 4 times) when other "
                         "programs used more than this many CPUs meanwhile "
                         "(e.g. 0.05; 0 = never)")
    ap.add_argument("--torch-case", help=argparse.SUPPRESS)
    ap.add_argument("--torch-threads-now", type=int, default=0,
                    help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.torch_case:  # child process
        run_torch_case(json.loads(a.torch_case), a.torch_threads_now, a.reps,
                       a.min_time, a.warmup)
        return 0

    cases = [parse_case(t) for t in (a.case or TARGETS)]
    texts = a.case or TARGETS
    out = open(a.json, "w") if a.json else None

    def record(obj):
        if out:
            out.write(json.dumps(obj) + "\n")

    import torch  # only for its version and default thread count
    default_threads = torch.get_num_threads()
    torch_settings = [0]
    if a.torch_threads and a.torch_threads != default_threads:
        torch_settings.append(a.torch_threads)

    refs = []

    def reference():
        for r in run_json([a.bench, "--ref-only", "--ref-size",
                           str(a.ref_size), "--wait-idle",
                           str(a.wait_idle), "--max-foreign",
                           str(a.max_foreign)]):
            if r.get("reference_sgemm"):
                refs.append(r["median_gflops"])
                record(r)

    common = ["--ref-size", "0", "--min-time", str(a.min_time), "--warmup",
              str(a.warmup), "--wait-idle", str(a.wait_idle), "--max-foreign",
              str(a.max_foreign)]
    if a.reps:
        common += ["--reps", str(a.reps)]
    lib = {c["name"]: [] for c in cases}
    tch = {(c["name"], t): [] for c in cases for t in torch_settings}
    reference()
    for rnd in range(a.rounds):
        for c, text in zip(cases, texts):
            for r in run_json([a.bench, text] + common):
                if r.get("ok"):
                    r["round"] = rnd
                    lib[c["name"]].append(r)
                    record(dict(r, impl="libattn", round=rnd))
            if torch_bytes(c) > a.torch_max_gib * 2**30:
                continue
            for t in torch_settings:
                cmd = [sys.executable, os.path.abspath(__file__),
                       "--torch-case", json.dumps(c), "--torch-threads-now",
                       str(t), "--min-time", str(a.min_time), "--warmup",
                       str(a.warmup), "--reps", str(a.reps)]
                wait_idle(a.wait_idle)
                for r in run_json(cmd, a.max_foreign):
                    if r.get("ok"):
                        r["round"] = rnd
                        tch[(c["name"], t)].append(r)
                        record(dict(r, impl="torch", round=rnd,
                                    torch_threads_setting=t))
    reference()
    ref = statistics.median(refs) if refs else float("nan")

    def med(rs):
        return statistics.median(r["median_ms"] for r in rs) if rs else None

    print(f"PyTorch {torch.__version__} (default threads: {default_threads}),"
          f" reference sgemm {a.ref_size}^3: {ref:.1f} GFLOP/s "
          f"(median of {len(refs)} runs of 5), {a.rounds} round(s)")
    head = f"{'case':<30} {'libattn ms':>11} {'frac':>6} {'peak MiB':>9}"
    for t in torch_settings:
        label = f"torch({default_threads if t == 0 else t}t)"
        head += (f" {label + ' ms':>15} {'frac':>6} {'speed-up':>9}"
                 f" {'per round (min-max)':>22}")
    head += f" {'torch MiB':>10}"
    print(head)
    for c in cases:
        m = med(lib[c["name"]])
        if m is None:
            print(f"{c['name']:<30} {'failed':>11}")
            continue
        gf = flops(c) / (m * 1e-3) * 1e-9
        rss = max(r["peak_rss_mib"] for r in lib[c["name"]])
        line = f"{c['name']:<30} {m:11.2f} {gf / ref:6.3f} {rss:9.1f}"
        torch_rss = None
        for t in torch_settings:
            tm = med(tch[(c["name"], t)])
            if tm is None:
                line += f" {'skipped':>15} {'':>6} {'':>9} {'':>22}"
                continue
            tgf = flops(c) / (tm * 1e-3) * 1e-9
            # The ratio of each round's times (the rounds interleave).
            mine = {r["round"]: r["median_ms"] for r in lib[c["name"]]}
            per = [r["median_ms"] / mine[r["round"]]
                   for r in tch[(c["name"], t)] if r["round"] in mine]
            line += f" {tm:15.2f} {tgf / ref:6.3f} {tm / m:8.2f}x"
            line += (f" {statistics.median(per):8.2f} ({min(per):.2f}-"
                     f"{max(per):.2f})" if per else f" {'no common round':>22}")
            torch_rss = max([torch_rss or 0] +
                            [r["peak_rss_mib"] for r in tch[(c["name"], t)]])
        line += f" {torch_rss:10.1f}" if torch_rss else f" {'-':>10}"
        print(line)
        record({"summary": c["name"], "libattn_ms": m, "fraction": gf / ref,
                "torch_ms": {str(t): med(tch[(c["name"], t)])
                             for t in torch_settings}})
    if any(torch_bytes(c) > a.torch_max_gib * 2**30 for c in cases):
        print(f"skipped: PyTorch would need more than --torch-max-gib "
              f"{a.torch_max_gib:g} GiB for its score matrices")
    return 0


if __name__ == "__main__":
    sys.exit(main())
