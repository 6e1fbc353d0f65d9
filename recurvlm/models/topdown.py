"""The top-down loop shared by the recurrent variants (DESIGN.md, one iteration t):

    v_t = vision(image, feedback=f_t)        # f_1 = 0: the first sweep is the feedforward sweep
    s_t = state(s_{t-1}, query, v_t)         # per-token state grid, gated by the query
    f_{t+1} = feedback(s_t)                  # per-token signal into the chosen ViT layers
    y_t = readout(v_t, s_t, query)           # an answer at every iteration

`TopDown` owns the query gate, the state module, the feedback and the state's contribution
to the readout. The layers below the first feedback layer see no feedback, so they run once
per image (`Sweep.low`); each iteration re-runs only the layers from there up, which keeps an
iteration cheaper than a feedforward pass.

Start near zero: the feedback projections and the state readout are zero-initialised, so at
initialisation every model's first iteration equals its feedforward baseline (the `tokens`
and `xattn` mechanisms: iteration 1 only; `add` and `gain`: every iteration).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from .feedback import Feedback
from .losses import choice_loss
from .state import SCAN_ORDERS, GridScan, build_state
from .vit import VisionTransformer, ViTOutput

LOSSES = ("last", "mean", "progressive")


@dataclass
class Carry:
    """Everything one iteration hands to the next (and the recorded maps)."""

    low: Tensor  # [B, N, D] the stream entering the first feedback layer (fixed per image)
    grid_size: tuple[int, int]
    query: Tensor | None  # [B, S] the query gate input, or None
    recall: Tensor | None = None  # [B, N_patches, S] the first sweep's tokens (input recall)
    state: Tensor | None = None  # [B, N_patches, S] s_{t-1}
    memory: Any = None  # the state module's own recurrent memory
    t: int = 0  # iterations done
    record: bool = False
    maps: dict[str, list[Any]] = field(default_factory=dict)
    low_outputs: list[Tensor] | None = None  # outputs of the blocks below the first feedback layer (kept on request)
    outputs: list[Tensor] | None = None  # the last iteration's outputs of the blocks from there up
    dense: Tensor | None = None  # [B, h, w] the dense head's logits of this iteration (a model with one)


class TopDown(nn.Module):
    """Query-gated per-token state + spatial feedback for a `VisionTransformer`.

    state: gru | mamba | xlstm | none (kwargs in `state_kwargs`); mechanism: add | gain |
    tokens | xattn; layers: ViT blocks that receive feedback; recall: feed the first sweep's
    tokens to the state at every iteration (DeepThinking's input recall); scan: none | raster
    | cross, a sequence model of the state's kind along the token grid within each iteration
    (`state.GridScan`), added to the state's input.
    """

    def __init__(self, *, vision: VisionTransformer, query_width: int, embed_dim: int, state: str = "gru",
                 state_dim: int = 64, state_kwargs: dict[str, Any] | None = None, mechanism: str = "add",
                 layers: Sequence[int] = (1,), recall: bool = False, scan: str = "none") -> None:
        super().__init__()
        width = vision.width
        self.state_dim = state_dim
        self.token_in = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, state_dim))
        self.query_in = nn.Linear(query_width, 2 * state_dim)  # FiLM of the state input: scale and shift
        self.recall_in = nn.Linear(width, state_dim) if recall else None
        self.state = build_state(state, state_dim, **dict(state_kwargs or {}))
        if scan not in SCAN_ORDERS:
            raise ValueError(f"unknown top_down.scan {scan!r}; valid: {', '.join(SCAN_ORDERS)}")
        self.scan = (GridScan(kind=state, order=scan, dim=state_dim, grid_size=vision.grid_size,
                              **dict(state_kwargs or {})) if scan != "none" else None)
        self.feedback = Feedback(mechanism=mechanism, layers=layers, state_dim=state_dim, width=width,
                                 depth=vision.depth, num_prefix_tokens=vision.num_prefix_tokens,
                                 num_patches=vision.num_patches, heads=vision.heads)
        self.readout = nn.Linear(state_dim, embed_dim, bias=False)
        nn.init.zeros_(self.readout.weight)
        nn.init.zeros_(self.query_in.weight)
        nn.init.zeros_(self.query_in.bias)

    def start(self, vision: VisionTransformer, pixel_values: Tensor, query: Tensor | None, *,
              record: bool = False, keep_outputs: bool = False) -> Carry:
        """The loop's start; `keep_outputs` keeps every block's output stream (`low_outputs`
        once, `outputs` of the latest iteration: what the features API reads)."""
        grid_size = vision._input_grid(pixel_values, False)
        x = vision.embed(pixel_values, grid_size)
        low_outputs: list[Tensor] | None = [] if keep_outputs else None
        low, _, attn = vision.run_layers(x, 0, self.feedback.first_layer, return_attention=record,
                                         outputs=low_outputs)
        carry = Carry(low=low, grid_size=grid_size, query=query, record=record, low_outputs=low_outputs)
        if record:
            carry.maps = {"attentions": [], "feedback": [], "state_norm": [], "low_attentions": attn}
        return carry

    def iterate(self, vision: VisionTransformer, carry: Carry) -> tuple[ViTOutput, Tensor, Carry]:
        """One iteration: (vision output v_t, state grid s_t, the carry for t+1)."""
        fb_maps: dict[int, Tensor] | None = {} if carry.record else None
        hook = None if carry.state is None else self.feedback.hook(carry.state, fb_maps)
        n = carry.low.shape[1]
        outputs: list[Tensor] | None = [] if carry.low_outputs is not None else None
        x, _, attn = vision.run_layers(carry.low, self.feedback.first_layer, vision.depth, layer_hook=hook,
                                       return_attention=carry.record, outputs=outputs)
        v = vision.finish(x[:, :n], carry.grid_size)
        u = self.token_in(v.tokens)  # [B, N, S]
        if carry.query is not None:
            scale, shift = rearrange(self.query_in(carry.query), "b (two s) -> two b 1 s", two=2)
            u = u * (1 + scale) + shift
        recall = carry.recall
        if self.recall_in is not None:
            recall = self.recall_in(v.tokens) if recall is None else recall
            u = u + recall
        if self.scan is not None:
            u = u + self.scan(u, carry.grid_size)
        s, memory = self.state.step(u, carry.memory)
        nxt = Carry(low=carry.low, grid_size=carry.grid_size, query=carry.query, recall=recall, state=s,
                    memory=memory, t=carry.t + 1, record=carry.record, maps=carry.maps,
                    low_outputs=carry.low_outputs, outputs=outputs)
        if carry.record:
            nxt.maps["attentions"].append(attn)
            nxt.maps["feedback"].append(fb_maps)
            nxt.maps["state_norm"].append(s.norm(dim=-1))
        return v, s, nxt

    def read(self, state: Tensor) -> Tensor:
        """The state's contribution to the image embedding [B, E] (zero at initialisation)."""
        return self.readout(state.mean(dim=1))


# --- the loop's bookkeeping, shared by the recurrent variants (CLIPPair, LlavaPair) -------------


def check_loop(top_down: dict[str, Any] | None, iterations: int, loss: str) -> None:
    """Validate a pair's loop settings: `loss` one of LOSSES, `iterations` an integer >= 1,
    and T > 1 only with a top_down module (a feedforward model has T = 1)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)}")
    if not (isinstance(iterations, int) and iterations >= 1):
        raise ValueError(f"iterations={iterations!r}; valid: an integer >= 1")
    if top_down is None and iterations != 1:
        raise ValueError(f"iterations={iterations} needs a top_down module (a feedforward model has T = 1)")


def run_loop(step: Callable[[Carry], tuple[Any, Carry]], carry: Carry, steps: int,
             progressive: tuple[int, int] | None = None) -> tuple[list[Any], Carry]:
    """`steps` iterations of `step(carry) -> (output, next carry)`: (the outputs, the last carry).
    `progressive=(n, k)` (Bansal et al. 2022): n iterations without gradient, then k with (`steps`
    is ignored), returning the k outputs."""
    if progressive is not None:
        n, steps = progressive
        with torch.no_grad():
            for _ in range(n):
                _, carry = step(carry)
    outs = []
    for _ in range(steps):
        out, carry = step(carry)
        outs.append(out)
    return outs, carry


def iteration_loss(logits: Tensor, labels: Tensor, mode: str) -> dict[str, Tensor]:
    """The choice loss of per-iteration logits [T, B, K]: on the last iteration (`last`, and
    `progressive`, whose own term the training step adds) or the mean over iterations (`mean`)."""
    if mode == "mean" and logits.shape[0] > 1:
        return {"choice_loss": torch.stack([choice_loss(lg, labels)["choice_loss"] for lg in logits]).mean()}
    return choice_loss(logits[-1], labels)
