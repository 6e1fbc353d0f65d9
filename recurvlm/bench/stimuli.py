"""Stimulus generation speed: samples per second per task and level, on one core.

Each (task, level) is timed over `--n` consecutive indices of set 0 after a short warm-up,
at every `--sizes` image size (the level's knobs with `image_size` overridden).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

from ..data.stimuli import TASK_NAMES, generate, get_task


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), choices=TASK_NAMES)
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    p.add_argument("--n", type=int, default=2000, help="samples timed per (task, level, size)")
    p.add_argument("--json", help="also write the rows to this JSON file")


def measure(task: str, difficulty, n: int) -> float:
    """Samples per second generating indices 0..n-1 of set 0 (after 20 warm-up samples)."""
    for i in range(20):
        generate(task, 1, i, difficulty)
    t0 = time.perf_counter()
    for i in range(n):
        generate(task, 0, i, difficulty)
    return n / (time.perf_counter() - t0)


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    print(f"# stimuli/s on one core ({platform.processor() or platform.machine()}, python {platform.python_version()})")
    print("| task | level | " + " | ".join(f"{s}x{s} /s" for s in args.sizes) + " |")
    print("|---|---|" + "---:|" * len(args.sizes))
    for task in args.tasks:
        spec = get_task(task)
        for level in spec.levels:
            rates = [measure(task, {"level": level, "image_size": size}, args.n) for size in args.sizes]
            rows.append({"task": task, "level": level, **{f"{s}px": r for s, r in zip(args.sizes, rates)}})
            print(f"| {task} | {level} | " + " | ".join(f"{r:,.0f}" for r in rates) + " |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows
