"""The one output type of every recurvlm model, in training and evaluation alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class VLMOutput:
    """What a model returns for a batch of images and answer choices.

    `logits` holds one score per choice at every iteration: [T, B, K]. Feedforward models
    have T = 1. Invalid (padding) choices are -inf. `state` is the final recurrent state
    (None for feedforward models); `maps` holds recorded per-iteration maps on request.
    """

    logits: torch.Tensor  # [T, B, K]
    image_embeds: torch.Tensor | None = None  # [T, B, E]
    text_embeds: torch.Tensor | None = None  # [B, K, E]
    state: Any = None
    maps: dict[str, Any] = field(default_factory=dict)
    dense_logits: torch.Tensor | None = None  # [T, B, h, w] per-patch logits of the optional dense head

    @property
    def final_logits(self) -> torch.Tensor:
        """The last iteration's scores [B, K]."""
        return self.logits[-1]


@dataclass
class Features:
    """Frozen features for probes and analysis (`CLIPPair.features`), in the spirit of timm's
    `forward_intermediates`: the residual stream after each selected ViT block, at every
    iteration, patch tokens only (class token and appended feedback tokens dropped).

    tokens [T, L, B, H*W, D] for blocks `layers` (0-based) on a grid of `grid_size` (H, W);
    feedforward models have T = 1. Blocks below a recurrent model's first feedback layer run
    once per image, so their features repeat over T. `state` is the recurrent state grid after
    each iteration [T, B, H*W, S] (None for feedforward models); `image_embeds` the image
    embedding of each iteration [T, B, E] (what the choices are matched against).
    """

    layers: tuple[int, ...]
    tokens: torch.Tensor  # [T, L, B, H*W, D]
    grid_size: tuple[int, int]
    image_embeds: torch.Tensor  # [T, B, E]
    state: torch.Tensor | None = None  # [T, B, H*W, S]

    def grid(self) -> torch.Tensor:
        """tokens as feature maps [T, L, B, D, H, W] (NCHW per layer and iteration)."""
        h, w = self.grid_size
        return self.tokens.unflatten(-2, (h, w)).movedim(-1, -3)

    def layer(self, block: int) -> torch.Tensor:
        """The features of one block [T, B, H*W, D]."""
        if block not in self.layers:
            raise KeyError(f"block {block} was not kept; kept: {list(self.layers)}")
        return self.tokens[:, self.layers.index(block)]
