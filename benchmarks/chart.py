"""Draw BENCHMARKS.md's chart: tensorforge's speed against each peer, one bar per workload and peer.

The data is benchmarks/current.csv, one row per workload and peer: the ratios (the peer's time over
ours; above 1x tensorforge is faster) of every run in the latest session that measured it (for the
GEMM, of every size in its one run), as logged in docs/benchmark-history.md, and the issue's target
where one was set. A bar runs from 1x to the median of those ratios, its whisker spans their range;
a dashed line marks 1x, a red tick the target (other than 1x). Colours name the machine. Nothing is
measured here. To regenerate after editing the CSV:

    python benchmarks/chart.py [--csv benchmarks/current.csv] [--out docs/benchmarks.svg]

The image format follows --out's suffix (.svg, .png). Needs matplotlib (the dev extras).
"""

from __future__ import annotations

import argparse
import csv
import statistics
from decimal import Decimal
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.hashsalt"] = "tensorforge"  # fixed ids in the SVG
matplotlib.rcParams["svg.fonttype"] = "none"  # text as text: a quarter of the size, searchable
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TICKS = [0.5, 1, 2, 3, 5, 10, 20, 50]


def load(path: Path) -> list[dict]:
    """The CSV's rows with their runs as Decimals (so 2.10 stays 2.10) and the median and range."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            runs = [Decimal(value) for value in row["ratios"].split()]
            rows.append(row | {"runs": runs, "median": statistics.median(runs), "low": min(runs), "high": max(runs)})
    return rows


def label(row: dict) -> str:
    """'2.24x (1.91-2.32x, 5 runs)', or '6.13x' for a single value (the CSV's 'over': runs, or sizes)."""
    text = f"{row['median']}x"
    count = len(row["runs"])
    return text if count == 1 else f"{text} ({row['low']}-{row['high']}x, {count} {row['over']})"


def draw(rows: list[dict], out: Path) -> None:
    machines = list(dict.fromkeys(row["machine"] for row in rows))
    colours = dict(zip(machines, ["#4c72b0", "#dd8452", "#8c8c8c", "#55a868"]))
    fig, ax = plt.subplots(figsize=(11, 0.3 * len(rows) + 1.6))
    ys = list(range(len(rows)))[::-1]  # the CSV's first row at the top
    for y, row in zip(ys, rows):
        median, low, high = float(row["median"]), float(row["low"]), float(row["high"])
        ax.barh(y, median - 1, left=1, height=0.65, color=colours[row["machine"]])  # from 1x: left = slower
        if high > low:
            ax.errorbar(median, y, xerr=[[median - low], [high - median]], fmt="none", ecolor="black",
                        elinewidth=1, capsize=3)
        if row["target"] and float(row["target"]) != 1:  # a 1x target is the dashed line
            ax.plot(float(row["target"]), y, marker="|", markersize=13, markeredgewidth=2.5, color="#c44e52")
        ax.text(high * 1.06, y, label(row), va="center", fontsize=8)
    for y, row, below in zip(ys, rows, rows[1:]):  # a thin line between groups
        if row["group"] != below["group"]:
            ax.axhline(y - 0.5, color="#cccccc", linewidth=0.8)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(ys, [f"{row['workload']}  vs  {row['peer']}" for row in rows], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xscale("log")
    ax.set_xlim(0.4, 250)
    ax.xaxis.set_major_locator(FixedLocator(TICKS))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{tick:g}x" for tick in TICKS])
    ax.set_xlabel("peer's time / tensorforge's time (log scale; above 1x tensorforge is faster)")
    ax.set_title("tensorforge against its peers: median of the latest session's runs, whisker = range", fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[machine]) for machine in machines]
    handles.append(plt.Line2D([], [], marker="|", markersize=10, markeredgewidth=2, linestyle="", color="#c44e52"))
    ax.legend(handles, [*machines, "the issue's target (1x: the dashed line)"], loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, metadata={"Date": None} if out.suffix == ".svg" else None)  # no date: the same CSV, the same file
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=ROOT / "benchmarks" / "current.csv")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.svg")
    args = parser.parse_args()
    draw(load(args.csv), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
