"""Border-ownership selectivity per layer (Zhou et al. 2000's standard test), feedforward vs
recurrent, next to the biological reference (more than half of V2 cells).

    python analysis/border_ownership.py --ckpt <ff>/checkpoints/last.ckpt --ckpt <rec>/checkpoints/last.ckpt \\
        --label clip_tiny --label recurrent_tiny --n 100 --out bo/

Writes border_ownership.csv (per checkpoint, block and iteration: share of side-selective
units, its binomial p-value against chance, median |BOI|) and border_ownership.{png,pdf}
(share per block; recurrent models at their first and last iteration; mean and 95%
t-interval over checkpoints sharing a label). Test displays come from a generated set whose
seed (--seed) differs from every training and evaluation seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from recurvlm.report import add_checkpoint_args, guarded, labels_of, mean_ci, save_figure, write_rows


def run(ckpts: list[Path], labels: list[str], n: int, seed: int, level: str, iterations: int | None,
        alpha: float) -> list[dict]:
    from recurvlm.neuro import side_selectivity, zhou_responses, zhou_test_set
    from recurvlm.training.checkpoints import load_model

    data = zhou_test_set(n, seed, level)
    rows = []
    for ckpt, label in zip(ckpts, labels):
        model, tokenizer, context_length = load_model(ckpt)
        resp, layers = zhou_responses(model, tokenizer, context_length, data, iterations=iterations)
        for t in range(resp.shape[0]):
            for j, block in enumerate(layers):
                s = side_selectivity(resp[t, j], alpha=alpha)
                rows.append({"model": label, "checkpoint": str(ckpt), "iteration": t + 1, "block": block,
                             "iterations": resp.shape[0], "share_selective": s["share"], "share_p": s["share_p"],
                             "n_units": len(s["selective"]), "median_abs_boi": float(np.median(np.abs(s["boi"]))),
                             "n_instances": n, "alpha": alpha})
    return rows


def clipped(mean, half) -> np.ndarray:
    """Asymmetric error bars [2, n] of mean +- half, cut at the share's range [0, 1]."""
    m, h = np.asarray(mean), np.asarray(half)
    return np.stack([m - np.clip(m - h, 0, 1), np.clip(m + h, 0, 1) - m])


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.4, 3.4))
    for label in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == label]
        last = max(r["iteration"] for r in mine)
        for it in sorted({1, last}):
            blocks = sorted({r["block"] for r in mine})
            mean, half = zip(*(mean_ci([r["share_selective"] for r in mine if r["block"] == b
                                        and r["iteration"] == it]) for b in blocks))
            n_ck = len({r["checkpoint"] for r in mine})
            name = label if last == 1 else f"{label}, iteration {it}"
            ax.errorbar(blocks, mean, yerr=clipped(mean, half), marker="o", capsize=3, ls="-" if it == last else ":",
                        label=f"{name} (n={n_ck})")
    ax.axhline(0.5, color="0.4", ls="--", lw=1)
    ax.text(0.02, 0.52, "V2: more than half of cells (Zhou et al. 2000)", transform=ax.get_yaxis_transform(),
            fontsize=7, color="0.3")
    alpha = rows[0]["alpha"]
    ax.axhline(alpha / 2, color="0.7", ls=":", lw=1)
    ax.set_xticks(sorted({r["block"] for r in rows}))
    ax.set(xlabel="ViT block (after)", ylabel="share of side-selective units", ylim=(0, 1),
           title=f"border ownership, standard test ({rows[0]['n_instances']} instances x 2 sides x 2 polarities)")
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save_figure(fig, out, "border_ownership")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_checkpoint_args(p)
    p.add_argument("--n", type=int, default=100, help="stimulus instances (each gives 4 displays)")
    p.add_argument("--level", default="easy", help="border_ownership level the geometry comes from")
    p.add_argument("--seed", type=int, default=8000)
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--iterations", type=int, default=None, help="T for recurrent models (default: training T)")
    p.add_argument("--out", type=Path, default=Path("border_ownership"))
    a = p.parse_args(argv)
    labels = labels_of(a, "border_ownership")
    if a.n < 3:
        raise SystemExit(f"border_ownership: --n {a.n}; valid: >= 3 instances")
    rows = guarded("border_ownership", run, a.ckpt, labels, a.n, a.seed, a.level, a.iterations, a.alpha)
    write_rows(rows, a.out / "border_ownership.csv")
    plot(rows, a.out)
    print(a.out / "border_ownership.csv")


if __name__ == "__main__":
    main()
