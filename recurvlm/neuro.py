"""Neuro metrics on frozen features: border-ownership selectivity (Zhou et al. 2000).

The standard test of Zhou, Friedman & von der Heydt (2000, J Neurosci 20:6594): for each
stimulus instance, four displays share one geometry and put one edge through the same
receptive field (the red dot): the figure on the left or on the right of the edge (side),
each with both contrast polarities. Within a polarity the two sides leave the local edge
IDENTICAL (figure A on background B on the left, or figure B on background A on the right),
so a unit whose response differs between them signals which side owns the border.

A unit here is one channel of the patch token at the dot, per ViT block and iteration (from
the features API). A unit is side-selective when the paired difference left - right (over
instances and both polarities) differs from zero (two-sided t-test, p < alpha) AND has the
same sign for both polarities; its border-ownership index is
(R_left - R_right) / (|R_left| + |R_right|) over the instance means. The share of
side-selective units per layer is tested against the share expected by chance with a
one-sided binomial test. Zhou et al. found border-ownership selectivity in more than half of
the orientation-selective cells of V2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .data.stimuli import get_task
from .data.stimuli.base import sample_rng
from .probes import image_batch, iter_features, patch_labels

SIDES = ("left", "right")  # side of the figure that owns the edge at the dot: conditions 1 and 0
POLARITIES = ("light", "dark")  # which side of the edge is lighter (the task's `polarity` knob)


@dataclass
class ZhouSet:
    """images [n, side, polarity, 3, H, W] uint8; markers [n, 2] (x, y) pixels; questions [n]."""

    images: Tensor
    markers: np.ndarray
    questions: list[str]


def zhou_test_set(n: int, seed: int, level: str = "easy") -> ZhouSet:
    """n instances of the 2 sides x 2 polarities test from border_ownership at `level`
    (vertical edges: the side is left or right of the dot)."""
    import dataclasses

    task = get_task("border_ownership")
    base = task.resolve(level)
    if base.orientation != 0:
        base = dataclasses.replace(base, orientation=0)
    images, markers, questions = [], [], []
    for k in range(n):
        per_side = []
        for side in SIDES:
            per_pol = []
            for pol in POLARITIES:
                d = dataclasses.replace(base, polarity=pol)
                s = task.make(sample_rng(seed, k, task.name), 1 if side == "left" else 0, d)
                per_pol.append(torch.from_numpy(s.image).permute(2, 0, 1))
                mk = s.info["markers"][0]
            per_side.append(torch.stack(per_pol))
        images.append(torch.stack(per_side))
        markers.append(mk)
        questions.append(s.question)
    return ZhouSet(images=torch.stack(images), markers=np.array(markers), questions=questions)


def side_selectivity(resp: np.ndarray, alpha: float = 0.01) -> dict[str, np.ndarray | float]:
    """resp [n, side, polarity, U] -> per unit: p-value of the side effect, selective (bool),
    preferred side (0 left, 1 right), border-ownership index; and the layer's share of
    selective units with its binomial p-value against chance (alpha / 2: a side effect with
    one sign across both polarities)."""
    from scipy import stats

    resp = np.asarray(resp, dtype=np.float64)
    diff = resp[:, 0] - resp[:, 1]  # [n, polarity, U]: left - right, local edge identical
    flat = diff.reshape(-1, diff.shape[-1])
    sd = flat.std(0, ddof=1)
    t = flat.mean(0) / np.where(sd > 0, sd / np.sqrt(len(flat)), np.inf)
    p = 2 * stats.t.sf(np.abs(t), df=len(flat) - 1)
    by_pol = diff.mean(0)  # [polarity, U]
    consistent = np.sign(by_pol[0]) == np.sign(by_pol[1])
    selective = (p < alpha) & consistent & (sd > 0)
    r_left, r_right = resp[:, 0].mean((0, 1)), resp[:, 1].mean((0, 1))
    denom = np.abs(r_left) + np.abs(r_right)
    boi = np.where(denom > 0, (r_left - r_right) / np.where(denom > 0, denom, 1), 0.0)
    n_sel, n_units = int(selective.sum()), selective.size
    binom_p = stats.binomtest(n_sel, n_units, alpha / 2, alternative="greater").pvalue
    return {"p": p, "selective": selective, "preferred": (by_pol.mean(0) < 0).astype(int), "boi": boi,
            "share": n_sel / n_units, "share_p": float(binom_p)}


@torch.no_grad()
def zhou_responses(model, tokenizer, context_length: int, data: ZhouSet, *, iterations: int | None = None,
                   batch_size: int = 64) -> tuple[np.ndarray, tuple[int, ...]]:
    """Responses [T, L, n, side, polarity, D] of the patch token at each instance's dot."""
    n, _, _, c, h, w = data.images.shape
    flat = data.images.reshape(n * 4, c, h, w)
    questions = [q for q in data.questions for _ in range(4)]
    patch = model.vision_model.patch_size
    gw = w // patch
    cols = np.clip(np.floor(data.markers[:, 0] / patch).astype(int), 0, gw - 1)
    rows = np.clip(np.floor(data.markers[:, 1] / patch).astype(int), 0, h // patch - 1)
    token = torch.from_numpy(np.repeat(rows * gw + cols, 4))  # [n * 4]
    chunks, layers = [], ()
    for sel, f in iter_features(model, tokenizer, context_length, flat, questions, iterations=iterations,
                                batch_size=batch_size):
        idx = token[sel]
        chunks.append(f.tokens[:, :, torch.arange(len(idx)), idx])  # [T, L, b, D]
        layers = f.layers
    r = torch.cat(chunks, dim=2)
    t, l, _, d = r.shape
    return r.reshape(t, l, n, 2, 2, d).numpy(), layers


# --- figure-ground modulation over iterations (Poort et al. 2012) ---------------------------

FGM_REGIONS = ("centre", "edge")  # compared with the ground


def fgm_regions(figure: Tensor, boundary: Tensor, patch_size: int) -> Tensor:
    """Patch classes [B, h*w] from pixel maps [B, H, W]: 0 ground (no figure, no boundary
    pixel), 1 figure centre (mostly figure, no boundary pixel), 2 figure edge (a boundary
    pixel), -1 neither (a patch mostly ground that touches the figure)."""
    inside = patch_labels(figure, patch_size, "majority")
    touches = patch_labels(figure, patch_size, "any")
    edge = patch_labels(boundary, patch_size, "any")
    out = torch.full_like(inside, -1)
    out[(touches == 0) & (edge == 0)] = 0
    out[(inside == 1) & (edge == 0)] = 1
    out[edge == 1] = 2
    return out


def modulation_index(tokens: Tensor, regions: Tensor) -> dict[str, Tensor]:
    """Per image, (R_region - R_ground) / (R_region + R_ground), R the mean token norm over the
    region's patches: tokens [..., B, N, D], regions [B, N] -> {region: [..., B]} (NaN where an
    image lacks the region)."""
    r = tokens.norm(dim=-1)  # [..., B, N]

    def mean_over(cls: int) -> Tensor:
        m = (regions == cls).float()
        return (r * m).sum(-1) / m.sum(-1)  # NaN when empty

    ground = mean_over(0)
    return {name: (mean_over(i + 1) - ground) / (mean_over(i + 1) + ground) for i, name in enumerate(FGM_REGIONS)}


def latency(curve: np.ndarray, fraction: float = 0.5) -> float:
    """The first iteration (1-based, linearly interpolated) at which a time course reaches
    `fraction` of its maximum; NaN if it never rises above zero."""
    curve = np.asarray(curve, dtype=float)
    peak = np.nanmax(curve)
    if not np.isfinite(peak) or peak <= 0:
        return float("nan")
    level = fraction * peak
    i = int(np.argmax(curve >= level))
    if i == 0:
        return 1.0
    a, b = curve[i - 1], curve[i]
    return float(i + (level - a) / (b - a))  # between iteration i and i + 1


@torch.no_grad()
def fgm_time_course(model, tokenizer, context_length: int, n: int, seed: int, level: str = "easy", *,
                    iterations: int | None = None, batch_size: int = 64) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
    """Modulation indices {region: [T, L, n]} of figure_ground stimuli (NaN where an image
    lacks the region), and the blocks."""
    from .data.stimuli import generate

    samples = [generate("figure_ground", seed, i, level) for i in range(n)]
    images = image_batch(samples)
    patch = model.vision_model.patch_size
    regions = fgm_regions(torch.from_numpy(np.stack([s.maps["figure"] for s in samples])),
                          torch.from_numpy(np.stack([s.maps["boundary"] for s in samples])), patch)
    out: dict[str, list[Tensor]] = {r: [] for r in FGM_REGIONS}
    layers: tuple[int, ...] = ()
    for sel, f in iter_features(model, tokenizer, context_length, images, [s.question for s in samples],
                                iterations=iterations, batch_size=batch_size):
        for name, v in modulation_index(f.tokens, regions[sel]).items():
            out[name].append(v)
        layers = f.layers
    return {k: torch.cat(v, dim=-1).numpy() for k, v in out.items()}, layers
