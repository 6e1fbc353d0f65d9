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

    @property
    def final_logits(self) -> torch.Tensor:
        """The last iteration's scores [B, K]."""
        return self.logits[-1]
