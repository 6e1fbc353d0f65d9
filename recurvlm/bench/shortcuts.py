"""Shortcut baselines per task and level: pixel statistics, 7-px local CNN, marker window.

Criterion (DESIGN.md): every baseline within 5 points of chance, except the local CNN on
border ownership (global context legitimately decides ownership: reported only) and on
counting (local detectors plus pooling may legitimately count: exempt).
"""

from __future__ import annotations

import argparse
import json
import time

from ..data.shortcuts import BASELINES, run_baselines
from ..data.stimuli import TASK_NAMES, get_task

TOLERANCE = 5.0  # points above chance
EXEMPT = {("border_ownership", "local_cnn"), ("counting", "local_cnn")}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), choices=TASK_NAMES)
    p.add_argument("--levels", nargs="+", help="level names (default: every level of each task)")
    p.add_argument("--baselines", nargs="+", default=list(BASELINES), choices=BASELINES)
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=8, help="local CNN epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results to this JSON file")


def verdict(task: str, baseline: str, excess: float) -> str:
    if (task, baseline) in EXEMPT:
        return "reported"
    return "ok" if excess <= TOLERANCE else "LEAK"


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    print(f"# shortcut baselines: train set seed {args.seed} (n={args.n_train}), test set seed {args.seed + 1} "
          f"(n={args.n_test}); accuracy % ± 95% CI; chance in brackets")
    print("| task | level | baseline | accuracy | chance | excess (pts) | verdict | detail |")
    print("|---|---|---|---:|---:|---:|---|---|")
    for task in args.tasks:
        for level in args.levels or list(get_task(task).levels):
            t0 = time.perf_counter()
            for r in run_baselines(task, level, baselines=args.baselines, n_train=args.n_train, n_test=args.n_test,
                                   seed=args.seed, level=level, epochs=args.epochs):
                v = verdict(task, r.baseline, r.excess)
                rows.append({"task": task, "level": level, "baseline": r.baseline, "accuracy": r.accuracy,
                             "chance": r.chance, "ci95": r.ci95, "n_test": r.n_test, "train_accuracy": r.train_accuracy,
                             "verdict": v, "detail": r.detail, "seconds": time.perf_counter() - t0})
                print(f"| {task} | {level} | {r.baseline} | {100 * r.accuracy:.1f} ± {100 * r.ci95:.1f} | "
                      f"{100 * r.chance:.1f} | {r.excess:+.1f} | {v} | {r.detail} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows
