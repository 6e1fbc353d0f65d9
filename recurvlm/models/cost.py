"""Fair-comparison costs: parameter counts and forward FLOPs (torch.utils.flop_counter)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def dummy_batch(model: nn.Module, batch_size: int = 1, choices: int = 2, context_length: int = 24) -> dict[str, Any]:
    """A batch of the right shapes for either pair (uint8 images, one <eos> per text; for the
    LLaVA pair, whose question is the choice's prefix, a one-token answer)."""
    vision = model.vision_model
    size = vision.image_size
    ids = torch.full((batch_size, choices, context_length), 5, dtype=torch.long)
    text = getattr(model, "text_model", None)
    eos = getattr(text, "eos_token_id", None)
    ids[..., -1] = eos if eos is not None else ids.max() + 1
    mask = torch.ones_like(ids, dtype=torch.bool)
    q_ids, q_mask = ids[:, 0].clone(), mask[:, 0].clone()
    if text is None:  # the answer is what follows the question
        q_ids[:, -1], q_mask[:, -1] = 0, False
    return {"images": torch.zeros(batch_size, 3, size, size, dtype=torch.uint8), "choice_ids": ids,
            "choice_mask": mask, "choice_valid": torch.ones(batch_size, choices, dtype=torch.bool),
            "question_ids": q_ids, "question_mask": q_mask}


@torch.no_grad()
def forward_flops(model: nn.Module, iterations: int | None = None, **batch_kwargs: Any) -> int:
    """FLOPs of one forward pass on one image (matrix multiplies and attention, as counted by
    torch.utils.flop_counter), at `iterations` for a recurrent model (default: its T)."""
    b = dummy_batch(model, **batch_kwargs)
    kwargs = {"iterations": iterations} if getattr(model, "recurrent", False) else {}
    counter = FlopCounterMode(display=False)
    with counter:
        model(b["images"], b["choice_ids"], b["choice_mask"], b["choice_valid"], b["question_ids"],
              b["question_mask"], **kwargs)
    return int(counter.get_total_flops())
