#!/usr/bin/env python3
"""Draws one serpens-bench table (CSV) as a PNG.  Called by serpens-bench;
generic on purpose, so a new subcommand needs no new plotting code.

  plot.py --csv T.csv --out T.png --kind bar|line --x COL --y COL[,COL...]
          [--group COL] [--lo COL --hi COL] [--logy] [--title T] [--ylabel L]
          [--ref Y --ref-label TEXT]

bar:  grouped bars, one group per row (labelled by --x), one bar per --y column;
      with --group: one cluster per --x value, one bar per --group value (first --y).
line: x numeric; one line per value of --group (or per --y column).
--lo/--hi: error bars (spread) for the first --y series.
--ref: a dashed horizontal reference line at Y (e.g. dpdk-testpmd io Mpps).
"""
import argparse
import csv
import sys

try:
    import matplotlib
    matplotlib.use("Agg")  # no display on build machines
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("plot.py: python3-matplotlib is not installed")


def num(value):
    try:
        return float(value)
    except ValueError:
        return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--kind", choices=["bar", "line"], default="bar")
    ap.add_argument("--x", required=True)
    ap.add_argument("--y", required=True)
    ap.add_argument("--group")
    ap.add_argument("--lo")
    ap.add_argument("--hi")
    ap.add_argument("--logy", action="store_true")
    ap.add_argument("--title", default="")
    ap.add_argument("--ylabel", default="")
    ap.add_argument("--ref", type=float)
    ap.add_argument("--ref-label", default="reference")
    args = ap.parse_args()

    with open(args.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"plot.py: {args.csv} has no rows")
    ys = args.y.split(",")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    if args.kind == "bar" and args.group:
        # One cluster per --x value, one bar (and legend entry) per --group value.
        cats = list(dict.fromkeys(r[args.x] for r in rows))
        groups = list(dict.fromkeys(r[args.group] for r in rows))
        width = 0.8 / len(groups)
        for k, g in enumerate(groups):
            rs = {r[args.x]: r for r in rows if r[args.group] == g}
            xs = [i + (k - (len(groups) - 1) / 2) * width for i, c in enumerate(cats) if c in rs]
            vals = [num(rs[c][ys[0]]) for c in cats if c in rs]
            err = None
            if args.lo and args.hi:
                err = [[v - num(rs[c][args.lo]) for v, c in zip(vals, [c for c in cats if c in rs])],
                       [num(rs[c][args.hi]) - v for v, c in zip(vals, [c for c in cats if c in rs])]]
            ax.bar(xs, vals, width, yerr=err, capsize=3, label=g)
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels(cats, rotation=15, ha="right")
    elif args.kind == "bar":
        labels = [r[args.x] for r in rows]
        width = 0.8 / len(ys)
        for k, col in enumerate(ys):
            xs = [i + (k - (len(ys) - 1) / 2) * width for i in range(len(rows))]
            vals = [num(r[col]) for r in rows]
            err = None
            if k == 0 and args.lo and args.hi:
                err = [[v - num(r[args.lo]) for v, r in zip(vals, rows)],
                       [num(r[args.hi]) - v for v, r in zip(vals, rows)]]
            ax.bar(xs, vals, width, yerr=err, capsize=3, label=col)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, rotation=15, ha="right")
    else:
        series = {}
        if args.group:
            for r in rows:
                series.setdefault(r[args.group], []).append(r)
            cols = {name: ys[0] for name in series}
        else:
            series = {col: rows for col in ys}
            cols = {col: col for col in ys}
        for n, (name, rs) in enumerate(series.items()):
            col = cols[name]
            xs = [num(r[args.x]) for r in rs]
            vals = [num(r[col]) for r in rs]
            err = None
            if (args.group or n == 0) and args.lo and args.hi:
                err = [[v - num(r[args.lo]) for v, r in zip(vals, rs)],
                       [num(r[args.hi]) - v for v, r in zip(vals, rs)]]
            ax.errorbar(xs, vals, yerr=err, marker="o", capsize=3, label=name)
        ax.set_xlabel(args.x)
        if len({num(r[args.x]) for r in rows}) > 2:
            ax.set_xscale("log", base=2)
    if args.ref is not None:
        ax.axhline(args.ref, color="black", linestyle="--", linewidth=1, label=args.ref_label)
    if args.logy:
        ax.set_yscale("log")
    ax.set_ylabel(args.ylabel)
    ax.set_title(args.title, fontsize=9)
    ax.grid(True, which="both", axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
