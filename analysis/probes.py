"""Probe decodability heatmaps: held-out linear-probe accuracy per (ViT block, iteration),
feedforward vs recurrent, from training checkpoints.

    python analysis/probes.py --ckpt logs/curve_tracing-clip_tiny/runs/*/checkpoints/last.ckpt \\
        --ckpt logs/curve_tracing-recurrent_tiny-gru/runs/*/checkpoints/last.ckpt \\
        --label clip_tiny --label recurrent_tiny --task curve_tracing --target target_curve --out probes/

Several checkpoints may share a label (seeds): the heatmap shows their mean, the CSV every
checkpoint. Probe images come from generated sets whose seeds (--train-seed, --test-seed)
differ from the training, validation and test sets' seeds. Writes probes.csv and
probes.{png,pdf} into --out. Reads checkpoints through `load_model` and features through the
models' `features` API only.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from recurvlm.report import add_checkpoint_args, guarded, labels_of, mean_ci, save_figure, write_rows


def run(ckpts: list[Path], labels: list[str], task: str, level: str, target: str, n_train: int, n_test: int,
        train_seed: int, test_seed: int, iterations: int | None) -> list[dict]:
    from recurvlm.probes import decodability, probe_set
    from recurvlm.training.checkpoints import load_model

    rows = []
    sets: dict[int, tuple] = {}
    for ckpt, label in zip(ckpts, labels):
        model, tokenizer, context_length = load_model(ckpt)
        patch = model.vision_model.patch_size
        if patch not in sets:
            sets[patch] = (probe_set(task, level, target, n_train, train_seed, patch),
                           probe_set(task, level, target, n_test, test_seed, patch))
        train, test = sets[patch]
        for r in decodability(model, tokenizer, context_length, train, test, iterations=iterations):
            rows.append({"model": label, "checkpoint": str(ckpt), "task": task, "level": level, "target": target, **r})
    return rows


def plot(rows: list[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    n_its = [len({r["iteration"] for r in rows if r["model"] == m}) for m in models]
    widths = [1.2 + 0.45 * n for n in n_its]
    fig, axes = plt.subplots(1, len(models), figsize=(1.2 + sum(widths), 3.2), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, m in zip(axes[0], models):
        acc: dict[tuple[int, int], list[float]] = defaultdict(list)
        for r in rows:
            if r["model"] == m:
                acc[(r["block"], r["iteration"])].append(r["test_acc"])
        blocks = sorted({b for b, _ in acc})
        its = sorted({t for _, t in acc})
        stats = {k: mean_ci(v) for k, v in acc.items()}  # mean and 95% t-interval over checkpoints
        grid = np.array([[stats[(b, t)][0] for t in its] for b in blocks])
        im = ax.imshow(grid, origin="lower", vmin=0.5, vmax=1.0, cmap="viridis", aspect="auto")
        for i, b in enumerate(blocks):
            for j, t in enumerate(its):
                ci = stats[(b, t)][1]
                ax.text(j, i, f"{grid[i, j]:.2f}" + (f"\n±{ci:.2f}" if len(acc[(b, t)]) > 1 else ""),
                        ha="center", va="center", fontsize=5.5, color="white" if grid[i, j] < 0.8 else "black")
        n_ckpt = len(acc[(blocks[0], its[0])])
        ax.set(xticks=range(len(its)), xticklabels=its, yticks=range(len(blocks)), yticklabels=blocks,
               xlabel="iteration", ylabel="ViT block (after)")
        ax.set_title(f"{m}\n({n_ckpt} checkpoint{'s' if n_ckpt > 1 else ''}"
                     + (", mean ± 95% CI)" if n_ckpt > 1 else ")"), fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), label="held-out balanced accuracy")
    fig.suptitle(title, fontsize=9, y=1.12)
    save_figure(fig, out, "probes", bbox_inches="tight")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_checkpoint_args(p)
    p.add_argument("--task", required=True)
    p.add_argument("--level", default="easy")
    p.add_argument("--target", required=True, help="figure | boundary | ownership | path | target_curve")
    p.add_argument("--n-train", type=int, default=200, help="probe-training images")
    p.add_argument("--n-test", type=int, default=100, help="held-out probe images")
    p.add_argument("--train-seed", type=int, default=5000)
    p.add_argument("--test-seed", type=int, default=6000)
    p.add_argument("--iterations", type=int, default=None, help="T for recurrent models (default: training T)")
    p.add_argument("--out", type=Path, default=Path("probes"))
    a = p.parse_args(argv)
    labels = labels_of(a, "probes")
    rows = guarded("probes", run, a.ckpt, labels, a.task, a.level, a.target, a.n_train, a.n_test, a.train_seed,
                   a.test_seed, a.iterations)
    write_rows(rows, a.out / "probes.csv")
    plot(rows, a.out, f"{a.task}/{a.level}: linear probe for {a.target}\n"
                      f"({a.n_train} probe-train / {a.n_test} held-out images; chance 0.5)")
    print(a.out / "probes.csv")


if __name__ == "__main__":
    main()
