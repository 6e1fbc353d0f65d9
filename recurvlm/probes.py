"""Linear probes on frozen features: which block, at which iteration, makes a stimulus map
linearly decodable from its patch tokens?

Per (block, iteration) one logistic-regression probe reads a patch token's features and
predicts that patch's label from a stimulus map (e.g. "is this patch on the target curve?").
Probes are fitted on the features of one set of images and scored on another, disjoint set
(held-out images, not just held-out tokens), with balanced accuracy (chance 0.5 whatever the
class balance: curve patches are ~10% of a grid). Features come only from the model's
`features` API.

Targets (stimulus map, how a patch's pixels become its label):
    figure        figure_ground / border_ownership `figure`: majority of the patch's pixels
    boundary      figure_ground `boundary`: any pixel
    ownership     border_ownership `ownership` (+1 / -1 side of the figure at border pixels):
                  the sign of the patch's sum; patches without border are left out
    path          maze `path`: any pixel
    target_curve  curve_tracing `target_curve`: any pixel, among patches that hold a curve
                  (`curves`): target vs distractor curve, not curve vs background
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .models.outputs import Features

IGNORE = -1
TARGETS: dict[str, tuple[str, str, str | None]] = {  # target -> (map, patch rule, only patches where)
    "figure": ("figure", "majority", None),
    "boundary": ("boundary", "any", None),
    "ownership": ("ownership", "sign", None),
    "path": ("path", "any", None),
    "target_curve": ("target_curve", "any", "curves"),
}
RULES = ("any", "majority", "sign")


def patch_labels(maps: Tensor, patch_size: int, rule: str) -> Tensor:
    """Per-patch labels [B, h*w] (0/1, or IGNORE) from pixel maps [B, H, W], row-major like the
    ViT's tokens. any: 1 if any pixel is set; majority: 1 if at least half are; sign: 1 / 0 for
    a positive / negative sum of a signed map, IGNORE where the patch is all zero."""
    if rule not in RULES:
        raise ValueError(f"unknown patch rule {rule!r}; valid: {', '.join(RULES)}")
    m = maps.float()[:, None]
    if rule == "sign":
        s = F.avg_pool2d(m, patch_size).flatten(1)
        return torch.where(s > 0, 1, torch.where(s < 0, 0, IGNORE)).long()
    frac = F.avg_pool2d((m != 0).float(), patch_size).flatten(1)
    return (frac > 0).long() if rule == "any" else (frac >= 0.5).long()


def balanced_accuracy(pred: Tensor, y: Tensor) -> Tensor:
    """Mean of the per-class recalls over the last axis; pred [P, N] (0/1), y [N] (0/1)."""
    recalls = [((pred == c) & (y == c)).sum(-1).float() / (y == c).sum().clamp(min=1) for c in (0, 1)]
    return (recalls[0] + recalls[1]) / 2


def fit_probes(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, *, l2: float = 1e-3,
               steps: int = 300, lr: float = 0.05, seed: int = 0) -> tuple[Tensor, Tensor]:
    """P logistic-regression probes at once: x [P, N, D] (one feature set per probe), y [N] (0/1).
    Features are standardised with the training set's statistics; the loss weighs both classes
    equally. Returns balanced accuracy (train [P], held-out test [P])."""
    if x_train.ndim != 3 or x_test.ndim != 3:
        raise ValueError(f"features must be [P, N, D]; got {tuple(x_train.shape)} and {tuple(x_test.shape)}")
    for name, y in (("train", y_train), ("test", y_test)):
        if not ((y == 0).any() and (y == 1).any()):
            raise ValueError(f"probe {name} labels have one class only ({int(y.numel())} patches): "
                             "use more images or another target")
    mean, std = x_train.mean(1, keepdim=True), x_train.std(1, keepdim=True).clamp(min=1e-6)
    xs, xt = (x_train - mean) / std, (x_test - mean) / std
    p, _, d = xs.shape
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(p, d, generator=g) * 0.01).requires_grad_(True)
    b = torch.zeros(p, 1, requires_grad=True)
    pos = y_train.float().mean()
    weight = torch.where(y_train == 1, 0.5 / pos, 0.5 / (1 - pos))  # balanced classes
    opt = torch.optim.Adam([w, b], lr=lr)
    yf = y_train.float().expand(p, -1)
    for _ in range(steps):
        opt.zero_grad()
        logits = torch.einsum("pnd,pd->pn", xs, w) + b
        loss = (F.binary_cross_entropy_with_logits(logits, yf, reduction="none") * weight).mean(-1).sum()
        (loss + l2 * (w**2).sum()).backward()
        opt.step()
    with torch.no_grad():
        pred_train = (torch.einsum("pnd,pd->pn", xs, w) + b > 0).long()
        pred_test = (torch.einsum("pnd,pd->pn", xt, w) + b > 0).long()
    return balanced_accuracy(pred_train, y_train), balanced_accuracy(pred_test, y_test)


@dataclass
class ProbeSet:
    """Images, questions and one target's patch labels for a probe split."""

    images: Tensor  # [B, 3, H, W] uint8
    questions: list[str]
    labels: Tensor  # [B, h*w]


def probe_set(task: str, level: str | dict, target: str, n: int, seed: int, patch_size: int) -> ProbeSet:
    """n generated stimuli of `task` at `level` (a level name or knob overrides) from the set
    `seed`, with `target`'s patch labels."""
    from .data.stimuli import generate

    if target not in TARGETS:
        raise KeyError(f"unknown probe target {target!r}; valid: {', '.join(TARGETS)}")
    map_name, rule, within = TARGETS[target]
    samples = [generate(task, seed, i, level) for i in range(n)]
    if map_name not in (samples[0].maps or {}):
        raise KeyError(f"task {task!r} has no {map_name!r} map for target {target!r}; "
                       f"its maps: {', '.join(sorted(samples[0].maps or {}))}")
    images = image_batch(samples)
    maps = torch.from_numpy(np.stack([np.asarray(s.maps[map_name]) for s in samples]))
    labels = patch_labels(maps, patch_size, rule)
    if within is not None:
        where = patch_labels(torch.from_numpy(np.stack([np.asarray(s.maps[within]) for s in samples])),
                             patch_size, "any")
        labels = labels.masked_fill(where == 0, IGNORE)
    return ProbeSet(images=images, questions=[s.question for s in samples], labels=labels)


def image_batch(samples) -> Tensor:
    """uint8 [B, 3, H, W] of stimulus `Sample`s (their images are [H, W, 3])."""
    return torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def iter_features(model, tokenizer, context_length: int, images: Tensor, questions: list[str], *,
                  iterations: int | None = None, batch_size: int = 64) -> Iterator[tuple[slice, Features]]:
    """(rows, `model.features`) batch by batch; a recurrent model gets each question as its
    query and runs `iterations` sweeps (None: its training T), a feedforward one T = 1."""
    recurrent = getattr(model, "recurrent", False)
    for i in range(0, len(images), batch_size):
        rows = slice(i, i + batch_size)
        q = tokenizer.encode(questions[rows], context_length=context_length) if recurrent else (None, None)
        yield rows, model.features(images[rows], *q, iterations=iterations if recurrent else None)


def token_features(model, tokenizer, context_length: int, data: ProbeSet, *, iterations: int | None = None,
                   batch_size: int = 64) -> tuple[Tensor, tuple[int, ...]]:
    """Features of every patch token: [T, L, B * h*w, D] (all blocks), and the blocks."""
    chunks, layers = [], ()
    for _, f in iter_features(model, tokenizer, context_length, data.images, data.questions, iterations=iterations,
                              batch_size=batch_size):
        chunks.append(f.tokens)
        layers = f.layers
    return torch.cat(chunks, dim=2).flatten(2, 3), layers


def decodability(model, tokenizer, context_length: int, train: ProbeSet, test: ProbeSet, *,
                 iterations: int | None = None, **probe_kw) -> list[dict]:
    """Held-out balanced accuracy of a probe per (block, iteration): rows of a table."""
    x_train, layers = token_features(model, tokenizer, context_length, train, iterations=iterations)
    x_test, _ = token_features(model, tokenizer, context_length, test, iterations=iterations)
    y_train, y_test = train.labels.flatten(), test.labels.flatten()
    keep_train, keep_test = y_train != IGNORE, y_test != IGNORE
    t, l = x_train.shape[:2]
    acc_train, acc_test = fit_probes(x_train[:, :, keep_train].flatten(0, 1), y_train[keep_train],
                                     x_test[:, :, keep_test].flatten(0, 1), y_test[keep_test], **probe_kw)
    rows = []
    for k in range(t * l):
        rows.append({"iteration": k // l + 1, "block": layers[k % l], "train_acc": float(acc_train[k]),
                     "test_acc": float(acc_test[k]), "n_train_patches": int(keep_train.sum()),
                     "n_test_patches": int(keep_test.sum()),
                     "positive_rate": float(y_test[keep_test].float().mean())})
    return rows

