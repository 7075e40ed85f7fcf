#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Before/after: the same bench_forward cases (or bench_decode steps, with
--decode) run by two builds of libattn (two benchmark binaries, each
linked to its own library), interleaved round by round so that both see
the same machine load.

Each round runs every case once with each binary, alternating which goes
first. Per case it prints each build's median time over the rounds with
the min-max, its fraction of the large sgemm measured in the same process,
and the median (min-max) over rounds of the per-round time ratio
old / new (above 1: the new build is faster).

usage: compare_builds.py --old OLD/bench/bench_forward
                         --new NEW/bench/bench_forward
                         [--rounds 5] [--min-time 0.5] [CASE ...]
       compare_builds.py --decode --old OLD/bench/bench_decode
                         --new NEW/bench/bench_decode [--rounds 5]
                         [bench_decode options ...]
CASE as bench_forward takes it; default: its 'targets' preset plus short
calls that show per-call start-up costs. With --decode the binaries are
bench_decode and the arguments after the options go to it (default:
short contexts, where a step's fixed costs show); the fraction column is
then of the memory-bandwidth limit.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

SHORT_CASES = [
    "name=tiny-B1-L16-E256,B=1,L=16,E=256,H=4",
    "name=short-B1-L64-E256,B=1,L=64,E=256,H=4",
    "name=self-B8-L64,B=8,L=64",
]


DECODE_ARGS = ["--contexts", "64,512,4096", "--batches", "1,8", "--no-full",
               "--steps", "96"]


def run_decode(binary, args):
    done = subprocess.run([binary] + args, check=True, capture_output=True,
                          text=True)
    rows = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            name = "decode-B%d-ctx%d" % (r["batch"], r["context"])
            rows[name] = {"median_ms": 1e3 * r["step_s"],
                          "fraction": r["fraction_of_limit"]}
    return rows


def run(binary, cases, min_time, decode=False):
    if decode:
        return run_decode(binary, cases)
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        cmd = [binary, "--min-time", str(min_time), "--json", out.name]
        cmd += cases
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        rows = {}
        for line in out.read().splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                if r.get("ok"):
                    rows[r["case"]] = r
        return rows


def spread(values, fmt):
    return "%s (%s-%s)" % (fmt % statistics.median(values),
                           fmt % min(values), fmt % max(values))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", required=True)
    p.add_argument("--new", required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-time", type=float, default=0.5)
    p.add_argument("--decode", action="store_true")
    a, cases = p.parse_known_args()
    cases = cases or (DECODE_ARGS if a.decode else
                        SHORT_CASES + ["--preset", "targets"])
    times = {"old": {}, "new": {}}
    fracs = {"old": {}, "new": {}}
    ratios = {}
    for r in range(a.rounds):
        order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
        got = {}
        for which in order:
            got[which] = run(getattr(a, which), cases, a.min_time, a.decode)
            for name, row in got[which].items():
                times[which].setdefault(name, []).append(row["median_ms"])
                fracs[which].setdefault(name, []).append(row["fraction"])
        for name in got["new"]:
            if name in got["old"]:
                ratios.setdefault(name, []).append(
                    got["old"][name]["median_ms"] /
                    got["new"][name]["median_ms"])
        print("round %d/%d done" % (r + 1, a.rounds), file=sys.stderr)
    print("%-34s %-24s %-24s %-13s %-13s %s" % (
        "case", "old ms", "new ms", "old frac", "new frac",
        "old/new time"))
    for name in ratios:
        print("%-34s %-24s %-24s %-13s %-13s %s" % (
            name, spread(times["old"][name], "%.3f"),
            spread(times["new"][name], "%.3f"),
            "%.2f" % statistics.median(fracs["old"][name]),
            "%.2f" % statistics.median(fracs["new"][name]),
            spread(ratios[name], "%.2f")))


if __name__ == "__main__":
    main()
