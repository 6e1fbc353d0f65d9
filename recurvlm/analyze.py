"""recurvlm-analyze: how a model's attention, feedback and state evolve over iterations.

For each stimulus, one forward pass with `record=True` (the eager attention path) gives,
per iteration t and ViT block l:
    attention [T, L, B, h, w]  the class token's attention to every patch (mean over heads;
                               the mean query's attention for models without a class token)
    feedback  [T, B, h, w]     the norm of the top-down signal entering each patch (summed over
                               feedback layers; zero at t = 1, before any feedback)
    state     [T, B, h, w]     the norm of the state grid after iteration t
    probs     [T, B, K]        the answer probabilities at every iteration
Feedforward models have T = 1 and no feedback or state. Blocks below a recurrent model's
first feedback layer run once per image; their attention repeats over T.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from .config import CONFIG_DIR, register_resolvers, wandb_offline
from .training.checkpoints import CheckpointError, load_model

log = logging.getLogger(__name__)
register_resolvers()


def _patch_attention(attn: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """[B, heads, N, N] -> [B, h, w]: the class token's (or the mean query's) attention to patches."""
    n = grid[0] * grid[1]
    rows = attn[:, :, 0] if prefix else attn[:, :, prefix : prefix + n].mean(2)
    return rows[:, :, prefix : prefix + n].mean(1).unflatten(-1, grid)


@torch.no_grad()
def record_dynamics(model, tokenizer, context_length: int, samples: list[Any], *,
                    iterations: int | None = None) -> dict[str, np.ndarray]:
    """The per-iteration maps of `samples` (stimulus `Sample`s) as numpy arrays (see module doc)."""
    from .data.datamodule import choice_texts
    from .probes import image_batch

    images = image_batch(samples)
    k = max(len(s.choices) for s in samples)
    texts, valid = [], torch.zeros(len(samples), k, dtype=torch.bool)
    for i, s in enumerate(samples):
        texts += choice_texts(s.question, s.choices) + [""] * (k - len(s.choices))
        valid[i, : len(s.choices)] = True
    ids, mask = tokenizer.encode(texts, context_length=context_length)
    q_ids, q_mask = tokenizer.encode([s.question for s in samples], context_length=context_length)
    recurrent = getattr(model, "recurrent", False)
    out = model(images, ids.view(len(samples), k, -1), mask.view(len(samples), k, -1), valid, q_ids, q_mask,
                iterations=iterations if recurrent else None, record=True)
    vit = model.vision_model
    grid = (images.shape[-2] // vit.patch_size, images.shape[-1] // vit.patch_size)
    prefix = vit.num_prefix_tokens
    maps = out.maps
    t = out.logits.shape[0]
    low = [_patch_attention(a, prefix, grid) for a in maps.get("low_attentions", [])]
    attention = torch.stack([torch.stack(low + [_patch_attention(a, prefix, grid) for a in per_t])
                             for per_t in maps["attentions"]])  # [T, L, B, h, w]
    b = len(samples)
    feedback = torch.zeros(t, b, *grid)
    state = torch.zeros(t, b, *grid)
    for i, fb in enumerate(maps.get("feedback", [])):
        for m in fb.values():
            feedback[i] += m.unflatten(-1, grid)
    for i, s in enumerate(maps.get("state_norm", [])):
        state[i] = s.unflatten(-1, grid)
    return {"images": images.permute(0, 2, 3, 1).numpy(), "attention": attention.numpy(),
            "feedback": feedback.numpy(), "state": state.numpy(),
            "probs": out.logits.softmax(-1).nan_to_num(0.0).numpy(), "labels": np.array([s.label for s in samples]),
            "recurrent": np.array(recurrent)}


def _overlay(ax, image: np.ndarray, m: np.ndarray, vmax: float, title: str) -> None:
    h, w = image.shape[:2]
    ax.imshow(image, interpolation="nearest")
    ax.imshow(m, cmap="magma", alpha=0.6, extent=(0, w, h, 0), vmin=0.0, vmax=vmax if vmax > 0 else 1.0,
              interpolation="nearest")
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def _rows(d: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """(row name, maps [T, B, h, w]) of what to draw: last-block attention, then feedback and state."""
    rows = [(f"attention, block {d['attention'].shape[1] - 1}", d["attention"][:, -1])]
    if bool(d["recurrent"]):
        rows += [("feedback |f|", d["feedback"]), ("state |s|", d["state"])]
    return rows


def shown_iterations(t: int, most: int = 8) -> list[int]:
    """0-based iterations drawn in the PNG grid: all up to `most`, else log-spaced from the
    first to the last (the GIF has every iteration)."""
    if t <= most:
        return list(range(t))
    return sorted({int(round(x)) - 1 for x in np.geomspace(1, t, most)})


def draw(d: dict[str, np.ndarray], i: int, question: str, out: Path) -> list[Path]:
    """dynamics_<i>.png and .pdf (rows x iterations, at most 8 columns) and dynamics_<i>.gif
    (a frame per iteration)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    image = d["images"][i]
    rows = _rows(d)
    t = d["attention"].shape[0]
    label = int(d["labels"][i])
    p_correct = d["probs"][:, i, label]
    scale = {name: float(m[:, i].max()) for name, m in rows}  # one colour scale per row, over iterations
    cols = shown_iterations(t)
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.6 * len(cols) + 0.4, 1.7 * len(rows) + 0.5),
                             squeeze=False)
    for r, (name, m) in enumerate(rows):
        for j, c in enumerate(cols):
            _overlay(axes[r][j], image, m[c, i], scale[name], f"t={c + 1}  P(correct)={p_correct[c]:.2f}" if r == 0
                     else "")
        axes[r][0].set_ylabel(name, fontsize=7)
    fig.suptitle(question, fontsize=8)
    fig.tight_layout()
    png = out / f"dynamics_{i}.png"
    fig.savefig(png, dpi=110)
    fig.savefig(png.with_suffix(".pdf"))
    plt.close(fig)

    fig, axes = plt.subplots(1, len(rows), figsize=(2.2 * len(rows), 2.5), squeeze=False)

    def frame(c: int):
        for ax, (name, m) in zip(axes[0], rows):
            ax.clear()
            _overlay(ax, image, m[c, i], scale[name], f"{name}\nt={c + 1}  P(correct)={p_correct[c]:.2f}")
        return []

    gif = out / f"dynamics_{i}.gif"
    FuncAnimation(fig, frame, frames=t).save(gif, writer=PillowWriter(fps=2))
    plt.close(fig)
    return [png, png.with_suffix(".pdf"), gif]


def analyze(cfg: DictConfig) -> list[Path]:
    from .data.stimuli import generate, get_task

    tasks = list(cfg.task.tasks)
    for task in tasks:
        get_task(task).level(cfg.level)  # raises naming the valid tasks or levels
    if not (isinstance(cfg.n, int) and cfg.n >= 1):
        raise ValueError(f"n={cfg.n!r}; valid: an integer >= 1")
    model, tokenizer, context_length = load_model(str(cfg.ckpt_path))
    if cfg.iterations is not None and not getattr(model, "recurrent", False) and cfg.iterations != 1:
        raise ValueError(f"iterations={cfg.iterations}: {cfg.ckpt_path} is a feedforward model (T = 1)")
    samples = [generate(task, cfg.seed, i, cfg.level) for task in tasks for i in range(cfg.n)]
    d = record_dynamics(model, tokenizer, context_length, samples, iterations=cfg.iterations)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "dynamics.npz", questions=np.array([s.question for s in samples]), **d)
    written = [out / "dynamics.npz"]
    for i, s in enumerate(samples):
        written += draw(d, i, s.question, out)
    if cfg.wandb:
        import wandb

        run = wandb.init(project="recurvlm", name=f"analyze-{cfg.task.name}-{cfg.level}", dir=str(out),
                         mode="offline" if wandb_offline() else None, job_type="analyze")
        run.log({f"dynamics/{p.stem}": wandb.Image(str(p)) for p in written if p.suffix == ".png"})
        run.finish()
    for p in written:
        print(p)
    return written


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="analyze")
def main(cfg: DictConfig) -> None:
    try:
        analyze(cfg)
    except (CheckpointError, KeyError, ValueError) as e:
        raise SystemExit(f"recurvlm-analyze: {e.args[0] if e.args else e}") from None


if __name__ == "__main__":
    main()
