#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Per-round time ratios of pairs of bench_forward cases.

bench_forward --rounds N writes, per case, the median time of each round
("round_ms" in its JSON lines); the rounds are interleaved, so the ratio of
two cases taken round by round cancels most of a shared machine's drift.
For each pair A/B given, prints the median of the per-round ratios
time(A) / time(B) with their min-max.

usage: bench_forward --rounds 5 ... | forward_ratios.py causal/self [...]
"""
import json
import statistics
import sys


def main():
    pairs = sys.argv[1:]
    if not pairs:
        sys.exit(__doc__)
    cases = {}
    for line in sys.stdin:
        if line.startswith('{"case"'):
            d = json.loads(line)
            if d.get("ok"):
                cases[d["case"]] = d["round_ms"]
    for p in pairs:
        a, b = p.split("/")
        if a not in cases or b not in cases:
            print(f"{p}: missing case")
            continue
        r = [x / y for x, y in zip(cases[a], cases[b])]
        print(f"{a} / {b}: {statistics.median(r):.3f} "
              f"({min(r):.3f}-{max(r):.3f}) over {len(r)} rounds")


if __name__ == "__main__":
    main()
