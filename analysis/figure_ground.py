"""Figure-ground modulation over iterations (Poort et al. 2012: the boundary signal comes
before region filling): modulation index at the figure centre and edge vs the ground, per
iteration, feedforward vs recurrent, with a latency estimate (half-maximum).

    python analysis/figure_ground.py --ckpt <ff>/checkpoints/last.ckpt --ckpt <rec>/checkpoints/last.ckpt \\
        --label clip_tiny --label recurrent_tiny --n 200 --iterations 16 --out fgm/

The index per image is (R_region - R_ground) / (R_region + R_ground), R the mean norm of the
patch tokens after --block (default: the last) in the region; the figure is texture-defined
and placed at random, so local content is the same on average in every region. Writes
figure_ground.csv (per checkpoint, region and iteration: mean, 95% interval over images,
latency) and figure_ground.{png,pdf}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from recurvlm.report import add_checkpoint_args, guarded, labels_of, mean_ci, save_figure, write_rows


def run(ckpts: list[Path], labels: list[str], n: int, seed: int, level: str, iterations: int | None,
        block: int) -> list[dict]:
    """One row per checkpoint, region and iteration: the mean index over images, its 95%
    interval over images, and the checkpoint's latency."""
    from recurvlm.neuro import fgm_time_course, latency
    from recurvlm.training.checkpoints import load_model

    rows = []
    for ckpt, label in zip(ckpts, labels):
        model, tokenizer, context_length = load_model(ckpt)
        courses, layers = fgm_time_course(model, tokenizer, context_length, n, seed, level, iterations=iterations)
        j = layers.index(block % len(layers))
        for region, v in courses.items():
            per_t = v[:, j]  # [T, n]
            lat = latency(np.nanmean(per_t, axis=1))
            for t in range(per_t.shape[0]):
                x = per_t[t][~np.isnan(per_t[t])].tolist()
                mean, half = mean_ci(x)
                rows.append({"model": label, "checkpoint": str(ckpt), "region": region, "block": layers[j],
                             "iteration": t + 1, "index": mean, "ci95": half, "n_images": len(x), "latency": lat})
    return rows


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    n_ckpt = 1
    for k, label in enumerate(dict.fromkeys(r["model"] for r in rows)):
        for region, ls in (("edge", "-"), ("centre", "--")):
            mine = [r for r in rows if r["model"] == label and r["region"] == region]
            ckpts = list(dict.fromkeys(r["checkpoint"] for r in mine))
            n_ckpt = len(ckpts)
            its = sorted({r["iteration"] for r in mine})
            if n_ckpt > 1:  # mean and 95% interval over checkpoints (seeds) of the per-checkpoint means
                stats = [mean_ci([r["index"] for r in mine if r["iteration"] == t]) for t in its]
            else:  # one checkpoint: the interval over images
                stats = [(r["index"], r["ci95"]) for r in sorted(mine, key=lambda r: r["iteration"])]
            lats = [next(r["latency"] for r in mine if r["checkpoint"] == c) for c in ckpts]
            finite = [x for x in lats if np.isfinite(x)]
            lat = float(np.mean(finite)) if finite else float("nan")  # over checkpoints with a rising curve
            ax.errorbar(its, [m for m, _ in stats], yerr=[c for _, c in stats], ls=ls, marker="o", ms=3,
                        color=colours[k % len(colours)], capsize=2,
                        label=f"{label}: {region} (n={n_ckpt}, latency {lat:.1f})")
    ax.axhline(0, color="0.5", lw=1)
    ax.set(xlabel="iteration", ylabel="modulation index vs ground",
           title=f"figure-ground modulation, block {rows[0]['block']} ({rows[0]['n_images']} images; "
                 f"95% CI over {'seeds' if n_ckpt > 1 else 'images'})")
    ax.title.set_fontsize(8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, out, "figure_ground")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_checkpoint_args(p)
    p.add_argument("--n", type=int, default=200, help="figure_ground images")
    p.add_argument("--level", default="easy")
    p.add_argument("--seed", type=int, default=9000)
    p.add_argument("--block", type=int, default=-1, help="ViT block whose output is read (default: the last)")
    p.add_argument("--iterations", type=int, default=None, help="T for recurrent models (default: training T)")
    p.add_argument("--out", type=Path, default=Path("figure_ground"))
    a = p.parse_args(argv)
    labels = labels_of(a, "figure_ground")
    rows = guarded("figure_ground", run, a.ckpt, labels, a.n, a.seed, a.level, a.iterations, a.block)
    write_rows(rows, a.out / "figure_ground.csv")
    plot(rows, a.out)
    print(a.out / "figure_ground.csv")


if __name__ == "__main__":
    main()
