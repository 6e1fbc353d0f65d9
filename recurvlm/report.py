"""What the analysis scripts share: checkpoint arguments, labels, one-line failures, and the
files a figure leaves (CSV of its numbers, PNG and PDF)."""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}$")


def add_checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", type=Path, action="append", required=True, help="a checkpoint (repeat)")
    p.add_argument("--label", action="append", help="a label per --ckpt (default: the run's name)")


def default_label(ckpt: Path) -> str:
    """The run's name: `<name>` of logs/<name>/runs/<timestamp>/checkpoints/x.ckpt, else the
    run directory's own name (e.g. curve_tracing-clip_tiny-s0)."""
    run = ckpt.parent.parent
    return run.parent.parent.name if TIMESTAMP.match(run.name) else run.name


def labels_of(a: argparse.Namespace, prog: str) -> list[str]:
    labels = a.label or [default_label(c) for c in a.ckpt]
    if len(labels) != len(a.ckpt):
        raise SystemExit(f"{prog}: {len(labels)} --label for {len(a.ckpt)} --ckpt")
    return labels


def guarded(prog: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs), with a bad checkpoint, task, level or value as a one-line exit."""
    from .training.checkpoints import CheckpointError

    try:
        return fn(*args, **kwargs)
    except (CheckpointError, KeyError, ValueError) as e:
        raise SystemExit(f"{prog}: {e.args[0] if e.args else e}") from None


def write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def save_figure(fig: Any, out: Path, stem: str, **kwargs: Any) -> list[Path]:
    """fig as <out>/<stem>.png and .pdf (then closed)."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.{ext}" for ext in ("png", "pdf")]
    for p in paths:
        fig.savefig(p, dpi=130, **kwargs)
    plt.close(fig)
    return paths


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval (over seeds, images, ...); 0 for one value."""
    import math

    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
