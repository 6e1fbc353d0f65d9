"""Learning curves of finished or running training runs, from their CSV logs.

    python analysis/curves.py logs/sanity-clip_tiny/runs/*            # -> curves.png
    python analysis/curves.py RUN [RUN ...] --metrics train/loss val/acc --out curves.pdf

A run is a run directory (`logs/<name>/runs/<timestamp>/`, holding `csv/version_*/metrics.csv`)
or a metrics.csv itself. One panel per metric, one line per run (labelled by its directory
name). A dashed line marks chance where it is known: ln 2 for a two-way choice loss, 0.5 for
two-way accuracy; a loss flat on ln 2 is the matching saddle, where neither tower has learned
anything about the answer. Reads only CSV files: no training code is imported.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

DEFAULT_METRICS = ("train/loss", "val/acc")
CHANCE = {"train/loss": math.log(2), "val/loss": math.log(2), "train/acc": 0.5, "val/acc": 0.5}


def find_csv(run: Path) -> Path:
    """The metrics.csv of a run directory (the newest version), or `run` if it is one."""
    if run.is_file():
        return run
    found = sorted(run.glob("csv/version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"{run}: no csv/version_*/metrics.csv (was the run logged with logger=csv?)")
    return found[-1]


def read_series(path: Path, metrics: list[str]) -> dict[str, tuple[list[int], list[float]]]:
    """{metric: (steps, values)} for every metric with at least one value in the file."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = reader.fieldnames or []
    unknown = [m for m in metrics if m not in columns]
    if unknown:
        options = ", ".join(c for c in columns if c not in ("epoch", "step"))
        raise KeyError(f"{path}: no column {', '.join(unknown)}; columns: {options}")
    out: dict[str, tuple[list[int], list[float]]] = {}
    for m in metrics:
        pts = [(int(r["step"]), float(r[m])) for r in rows if r.get(m) not in (None, "")]
        if pts:
            out[m] = ([s for s, _ in pts], [v for _, v in pts])
    return out


def plot(runs: list[Path], metrics: list[str], out: Path, labels: list[str] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    if labels is not None and len(labels) != len(runs):
        raise KeyError(f"--labels: {len(labels)} labels for {len(runs)} runs")
    for i, run in enumerate(runs):
        path = find_csv(run)
        label = labels[i] if labels else (run.name if run.is_dir() else path.parent.parent.parent.name)
        for ax, (m, (steps, values)) in zip(axes[0], ((m, s) for m, s in read_series(path, metrics).items())):
            ax.plot(steps, values, label=label, marker="." if len(steps) < 30 else None)
    for ax, m in zip(axes[0], metrics):
        if m in CHANCE:
            ax.axhline(CHANCE[m], color="0.5", ls="--", lw=1, label="chance")
        ax.set(title=m, xlabel="step")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run directories or metrics.csv files")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    p.add_argument("--labels", nargs="+", help="one legend label per run (default: the run directory's name)")
    p.add_argument("--out", type=Path, default=Path("curves.png"))
    args = p.parse_args(argv)
    try:
        print(plot(args.runs, args.metrics, args.out, args.labels))
    except (FileNotFoundError, KeyError) as e:
        raise SystemExit(f"curves: {e.args[0]}") from None


if __name__ == "__main__":
    main()
