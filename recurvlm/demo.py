"""`make demo`: the stimulus suite at a glance, a small shortcut audit, and the head-to-head
comparison at its smallest size.

Writes `outputs/demo/<task>_gallery.png` (one row per difficulty level), runs the three
shortcut baselines on every task at its medium level with small sets, prints the table
and draws `outputs/demo/shortcut_audit.png` (accuracy with 95% CI against chance); then
trains the feedforward CLIP-style baseline and the recurrent top-down variant (GRU state) on
curve tracing (`python -m recurvlm.experiments.head_to_head scale=demo`), prints their table
and writes `outputs/demo/head_to_head/*.png`. Minutes on a laptop CPU. The full audit is
`python -m recurvlm.bench shortcuts`; the full comparison `... head_to_head scale=cpu|paper`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .data.shortcuts import BASELINES, BaselineResult, run_baselines
from .data.stimuli import TASK_NAMES, get_task
from .stimuli_cli import gallery


def audit_figure(results: list[BaselineResult], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r.task for r in results))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.26
    colors = {"pixel_stats": "#4c72b0", "local_cnn": "#dd8452", "marker_window": "#55a868"}
    for j, b in enumerate(BASELINES):
        xs, ys, es = [], [], []
        for i, t in enumerate(tasks):
            r = next((r for r in results if r.task == t and r.baseline == b), None)
            if r is not None:
                xs.append(i + (j - 1) * width), ys.append(100 * r.accuracy), es.append(100 * r.ci95)
        ax.bar(xs, ys, width, yerr=es, capsize=3, color=colors[b], label=b.replace("_", " "))
    for i, t in enumerate(tasks):
        chance = 100 * next(r.chance for r in results if r.task == t)
        ax.hlines([chance, chance + 5], i - 0.45, i + 0.45, colors=["k", "grey"], linestyles=["-", ":"], lw=1)
    ax.set_xticks(range(len(tasks)), [t.replace("_", "\n") for t in tasks])
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Shortcut audit (medium level): baselines vs chance (black) and chance + 5 points (dotted)", fontsize=9)
    ax.legend(fontsize=8, loc="upper right", ncols=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m recurvlm.demo", description=__doc__)
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--n-train", type=int, default=1200)
    p.add_argument("--n-test", type=int, default=800)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--no-train", action="store_true", help="galleries and the shortcut audit only")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for task in TASK_NAMES:
        print(f"wrote {gallery(task, dict(get_task(task).levels), out / f'{task}_gallery.png')}")
    results: list[BaselineResult] = []
    print("\n| task | baseline | accuracy (%) | chance (%) |\n|---|---|---:|---:|")
    for task in TASK_NAMES:
        for r in run_baselines(task, "medium", n_train=args.n_train, n_test=args.n_test, seed=0, level="medium",
                               epochs=args.epochs):
            results.append(r)
            print(f"| {task} | {r.baseline} | {100 * r.accuracy:.1f} ± {100 * r.ci95:.1f} | {100 * r.chance:.1f} |", flush=True)
    print(f"\nwrote {audit_figure(results, out / 'shortcut_audit.png')}  ({time.perf_counter() - t0:.0f} s)")
    if not args.no_train:
        from .experiments import head_to_head

        print("\nhead to head (scale=demo): feedforward baseline vs recurrent top-down variant on curve tracing")
        head_to_head.main(["scale=demo", f"out={out / 'head_to_head'}"])


if __name__ == "__main__":
    main()
