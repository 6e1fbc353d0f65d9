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
