"""Losses, each returning named terms (logged as `split/<name>`), as open_clip does."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def choice_loss(logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Cross-entropy over answer choices. logits [B, K] (padding choices -inf), labels [B]."""
    return {"choice_loss": F.cross_entropy(logits, labels)}


def clip_loss(image_embeds: Tensor, text_embeds: Tensor, logit_scale: Tensor) -> dict[str, Tensor]:
    """Symmetric InfoNCE over a batch of paired, L2-normalised embeddings [B, E] (Radford et al. 2021)."""
    logits = logit_scale.exp() * image_embeds @ text_embeds.t()  # [B, B]
    target = torch.arange(len(logits), device=logits.device)
    return {"contrastive_loss": 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))}


def siglip_loss(image_embeds: Tensor, text_embeds: Tensor, logit_scale: Tensor, logit_bias: Tensor) -> dict[str, Tensor]:
    """Pairwise sigmoid loss (Zhai et al. 2023): every pair is a binary problem, +1 on the diagonal."""
    logits = logit_scale.exp() * image_embeds @ text_embeds.t() + logit_bias  # [B, B]
    sign = 2 * torch.eye(len(logits), device=logits.device, dtype=logits.dtype) - 1
    return {"sigmoid_loss": -F.logsigmoid(sign * logits).sum() / len(logits)}


def dense_loss(logits: Tensor, maps: Tensor, valid: Tensor | None = None, mode: str = "mean") -> dict[str, Tensor]:
    """The optional auxiliary dense loss (DESIGN.md: identical for feedforward and recurrent
    models): per-patch binary cross-entropy of logits [T, B, h, w] against pixel maps [B, H, W]
    (a patch is positive where any of its pixels is), on the items with `valid` [B] (those whose
    task has a map); `mode` "mean" averages over iterations, "last" reads the last."""
    target = F.adaptive_max_pool2d(maps[:, None].float(), logits.shape[-2:])[:, 0]  # [B, h, w]
    if valid is not None:
        logits, target = logits[:, valid], target[valid]
    if target.numel() == 0:
        return {"dense_loss": logits.sum() * 0.0}
    per_t = torch.stack([F.binary_cross_entropy_with_logits(lg, target) for lg in logits])
    return {"dense_loss": per_t.mean() if mode == "mean" else per_t[-1]}
