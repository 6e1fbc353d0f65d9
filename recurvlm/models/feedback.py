"""Top-down feedback: the state grid s_t [B, N, S] -> a per-token signal into chosen ViT layers.

The signal is spatial (one value per patch token), so it can enhance one figure or spread
along one curve. Mechanisms (DESIGN.md), each starting at zero (the layer is untouched):

    add        x_i <- x_i + W s_i                       (W zero-initialised)
    gain       x_i <- x_i * (1 + tanh(W s_i))           (FiLM-like multiplicative gain)
    tokens     feedback tokens W s + position are appended to the sequence at the first
               feedback layer; vision tokens attend to them from there on (W zero-initialised;
               appended tokens change the softmax, so only iteration 1 is exactly feedforward)
    xattn      x_i <- x_i + tanh(g) * CrossAttn(LN(x_i), LN(s))   (gate g zero-initialised,
               as Flamingo's gated cross-attention)

`Feedback.hook(state)` returns the ViT `layer_hook` for one iteration, and records the
per-token feedback magnitude per layer when asked (the feedback maps of analysis).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

MECHANISMS = ("add", "gain", "tokens", "xattn")


class Feedback(nn.Module):
    def __init__(self, *, mechanism: str, layers: Sequence[int], state_dim: int, width: int, depth: int,
                 num_prefix_tokens: int, num_patches: int, heads: int = 4) -> None:
        super().__init__()
        if mechanism not in MECHANISMS:
            raise ValueError(f"unknown feedback mechanism {mechanism!r}; valid: {', '.join(MECHANISMS)}")
        layers = sorted(set(int(i) for i in layers))
        if not layers or any(not 0 <= i < depth for i in layers):
            raise ValueError(f"feedback layers {list(layers)} out of range; valid: a non-empty subset of 0..{depth - 1}")
        self.mechanism = mechanism
        self.layers = layers
        self.prefix = num_prefix_tokens
        if mechanism == "tokens":
            self.layers = layers[:1]  # appended once; later blocks carry them
            self.proj = nn.ModuleDict({str(layers[0]): nn.Linear(state_dim, width)})
            self.position = nn.Parameter(torch.zeros(1, num_patches, width))
            nn.init.trunc_normal_(self.position, std=0.02)
        else:
            self.proj = nn.ModuleDict({str(i): nn.Linear(state_dim, width) for i in self.layers})
        if mechanism == "xattn":
            self.norm_x = nn.ModuleDict({str(i): nn.LayerNorm(width) for i in self.layers})
            self.norm_s = nn.ModuleDict({str(i): nn.LayerNorm(state_dim) for i in self.layers})
            self.attn = nn.ModuleDict({str(i): nn.MultiheadAttention(width, heads, kdim=width, vdim=width,
                                                                     batch_first=True) for i in self.layers})
            self.gate = nn.Parameter(torch.zeros(len(self.layers)))
            for lin in self.proj.values():  # keys/values come from the projected state; the gate starts shut
                nn.init.trunc_normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)
        else:
            for lin in self.proj.values():
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    @property
    def first_layer(self) -> int:
        return self.layers[0]

    def signal(self, layer: int, state: Tensor) -> Tensor:
        """The projected feedback [B, N_patches, D] into `layer` (before the mechanism applies it)."""
        return self.proj[str(layer)](state)

    def hook(self, state: Tensor, record: dict[int, Tensor] | None = None):
        """The ViT layer hook for one iteration, given the state grid [B, N_patches, S]."""

        def apply(i: int, x: Tensor) -> Tensor:
            if str(i) not in self.proj:
                return x
            p, n = self.prefix, state.shape[1]
            if self.mechanism == "xattn":
                k = self.signal(i, self.norm_s[str(i)](state))
                j = self.layers.index(i)
                upd = self.attn[str(i)](self.norm_x[str(i)](x[:, p:p + n]), k, k, need_weights=False)[0]
                delta = torch.tanh(self.gate[j]) * upd
            else:
                delta = self.signal(i, state)
            if record is not None:
                record[i] = delta.norm(dim=-1)  # [B, N_patches]
            if self.mechanism == "tokens":
                return torch.cat([x, delta + self.position[:, :n]], dim=1)
            patches = x[:, p:p + n]
            if self.mechanism == "gain":
                patches = patches * (1 + torch.tanh(delta))
            else:  # add, xattn
                patches = patches + delta
            return torch.cat([x[:, :p], patches, x[:, p + n:]], dim=1)

        return apply
