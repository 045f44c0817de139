#!/usr/bin/env python3
"""Checks the power that heat-work receipts imply, from a receipts export alone.

Usage: check_power.py RECEIPTS.json --max-watts W

For every receipt, the energy it credits over its window (mJ / ms = W) must not exceed W, and
for every household, the receipts whose windows overlap at any instant must not together
exceed W (windows are half-open: start <= t < end). W is the rating of the households'
radiators (1200 W for the simulated radiators of `hearth demo`). The energy checked is the
credited figure when the export carries one (`credited_mj`), else the claimed `energy_mj`.
Integers may be JSON numbers or decimal strings. Exits 1 if any check fails.

Written from docs/receipts.md; it imports nothing from hearth.
"""
import argparse
import json
import sys
from collections import defaultdict


def mean_watts(start, end, energy):
    if energy == 0:
        return 0.0
    if end <= start:
        return float("inf")
    return energy / (end - start)


def peak_overlap(windows):
    edges = []
    for start, end, energy in windows:
        if energy == 0:
            continue
        p = mean_watts(start, end, energy)
        edges.append((start, 1, p))
        edges.append((max(end, start), 0, p))
    edges.sort(key=lambda e: (e[0], e[1]))  # ends before starts at the same instant
    now = peak = 0.0
    for _, starts, p in edges:
        if starts:
            now += p
            peak = max(peak, now)
        else:
            now -= p
    return peak


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export")
    ap.add_argument("--max-watts", type=float, required=True)
    args = ap.parse_args()
    with open(args.export) as f:
        doc = json.load(f)
    by_household = defaultdict(list)
    failures = 0
    for r in doc["receipts"]:
        start, end = int(r["start_ms"]), int(r["end_ms"])
        energy = int(r["credited_mj"]) if "credited_mj" in r else int(r["energy_mj"])
        w = mean_watts(start, end, energy)
        if w > args.max_watts:
            print(f"receipt {r['id']}: {w:.1f} W over its window exceeds {args.max_watts} W")
            failures += 1
        by_household[r["worker"]].append((start, end, energy))
    print(f"{'household':<18} {'receipts':>8} {'energy J':>10} {'peak W':>8}")
    for household, windows in sorted(by_household.items()):
        peak = peak_overlap(windows)
        total = sum(e for _, _, e in windows) / 1000.0
        print(f"{household[:16] + '…':<18} {len(windows):>8} {total:>10.1f} {peak:>8.1f}")
        if peak > args.max_watts:
            print(f"household {household}: overlapping receipts imply {peak:.1f} W > {args.max_watts} W")
            failures += 1
    if failures:
        print(f"{failures} power check(s) FAILED")
        sys.exit(1)
    print(f"{len(doc['receipts'])} receipts: no receipt and no instant implies more than {args.max_watts} W")


if __name__ == "__main__":
    main()
