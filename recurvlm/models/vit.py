"""Vision transformer (CLIP / SigLIP towers) with a per-layer hook for top-down feedback.

Parameter names follow Hugging Face's `CLIPVisionModel` and `SiglipVisionModel`, so their
weights load by plain copy (`recurvlm.models.pretrained.load_vision_tower`). The two
families differ in four switches:

    CLIP:   class_token=True,  pre_norm=True,  pool="cls", act="quick_gelu", patch conv without bias
    SigLIP: class_token=False, pre_norm=False, pool="map", act="gelu_tanh",  patch conv with bias

The patch convolution has a bias exactly when there is no class token (that is how both
families are built). `layer_hook(i, x)` replaces the residual stream right before block i;
the recurrent variant uses it to inject per-token feedback, and without it the model is
the plain feedforward ViT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

Activation = Literal["quick_gelu", "gelu", "gelu_tanh"]
Pool = Literal["cls", "mean", "map"]
LayerHook = Callable[[int, Tensor], Tensor]


def quick_gelu(x: Tensor) -> Tensor:
    """CLIP's sigmoid approximation of GELU (Hendrycks & Gimpel 2016); OpenAI trained with it."""
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "quick_gelu": quick_gelu,
    "gelu": F.gelu,
    "gelu_tanh": partial(F.gelu, approximate="tanh"),
}


@dataclass(frozen=True)
class ViTOutput:
    """What one forward pass returns; the type is the same in train and eval.

    `last_hidden_state` follows Hugging Face per family: with `pool="cls"` (CLIP) it is the
    encoder output before the post-layernorm, because CLIP normalises only the pooled class
    token; with `pool="map"` or `"mean"` (SigLIP) it is after the post-layernorm, which
    SigLIP applies to every token before pooling. `tokens` is always post-layernorm.
    """

    last_hidden_state: Tensor  # [B, N, D], N = prefix (class) tokens + patches
    pooled: Tensor  # [B, D]
    tokens: Tensor  # [B, H*W, D] patch tokens after the post-layernorm, row-major over the grid
    grid_size: tuple[int, int]  # (H, W) in patches of this input (differs from the model's when interpolating)
    hidden_states: tuple[Tensor, ...] | None = None  # L + 1 of [B, N, D] when return_hidden
    attentions: tuple[Tensor, ...] | None = None  # L of [B, heads, N, N] when return_attention


class Embeddings(nn.Module):
    """Patch embedding, optional class token and learned position embeddings."""

    def __init__(self, *, image_size: int, patch_size: int, width: int, class_token: bool, in_channels: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.grid_size = (image_size // patch_size, image_size // patch_size)
        self.num_prefix_tokens = 1 if class_token else 0
        self.class_embedding = nn.Parameter(torch.zeros(width)) if class_token else None
        self.patch_embedding = nn.Conv2d(
            in_channels, width, kernel_size=patch_size, stride=patch_size, bias=not class_token
        )
        num_positions = self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]
        self.position_embedding = nn.Embedding(num_positions, width)

    def positions(self, grid_size: tuple[int, int]) -> Tensor:
        """Position embeddings [N, D] for a patch grid, bicubically resized from the trained grid
        when it differs (as DINO and HF CLIP do); the class token's position is kept as is."""
        pos = self.position_embedding.weight  # [N, D]
        if grid_size == self.grid_size:
            return pos
        prefix, patch = pos[: self.num_prefix_tokens], pos[self.num_prefix_tokens :]
        patch = rearrange(patch, "(h w) d -> 1 d h w", h=self.grid_size[0])
        # bicubic is not implemented for half precision on every device, so resize in float32
        patch = F.interpolate(patch.float(), size=grid_size, mode="bicubic", align_corners=False).to(pos.dtype)
        patch = rearrange(patch, "1 d h w -> (h w) d")  # [H*W, D]
        return torch.cat([prefix, patch])

    def forward(self, pixel_values: Tensor, *, grid_size: tuple[int, int]) -> Tensor:
        weight = self.patch_embedding.weight
        x = self.patch_embedding(pixel_values.to(weight.dtype))  # [B, D, H, W]
        x = rearrange(x, "b d h w -> b (h w) d")
        if self.class_embedding is not None:
            cls = self.class_embedding.expand(x.shape[0], 1, -1)  # [B, 1, D]
            x = torch.cat([cls, x], dim=1)  # [B, N, D]
        return x + self.positions(grid_size)


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (HF CLIP/SigLIP layout)."""

    def __init__(self, *, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor, *, return_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        q, k, v = (
            rearrange(proj(x), "b n (h d) -> b h n d", h=self.heads)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        if return_weights:
            # eager path: SDPA fuses the softmax and never materialises the weights.
            # softmax in float32 so bf16 towers give the same maps (as HF does).
            logits = torch.einsum("bhnd,bhmd->bhnm", q, k) * self.scale  # [B, heads, N, N]
            weights = logits.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
            out = torch.einsum("bhnm,bhmd->bhnd", weights, v)
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = rearrange(out, "b h n d -> b n (h d)")
        return self.out_proj(out), weights


class MLP(nn.Module):
    def __init__(self, *, width: int, mlp_dim: int, act: Activation) -> None:
        super().__init__()
        self.act = ACTIVATIONS[act]
        self.fc1 = nn.Linear(width, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, *, width: int, heads: int, mlp_dim: int, act: Activation, layer_norm_eps: float) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(width, eps=layer_norm_eps)
        self.self_attn = Attention(width=width, heads=heads)
        self.layer_norm2 = nn.LayerNorm(width, eps=layer_norm_eps)
        self.mlp = MLP(width=width, mlp_dim=mlp_dim, act=act)

    def forward(self, x: Tensor, *, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        attn, weights = self.self_attn(self.layer_norm1(x), return_weights=return_attention)
        x = x + attn
        x = x + self.mlp(self.layer_norm2(x))
        return x, weights


class Encoder(nn.Module):
    """Holds the blocks under `encoder.layers.{i}` (HF's names). The loop over them lives in
    `VisionTransformer.forward`, where the feedback hook is visible."""

    def __init__(self, blocks: list[Block]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(blocks)


class MAPHead(nn.Module):
    """Multihead attention pooling (Lee et al. 2019; SigLIP): one learned probe attends over
    the tokens, then a residual MLP. Uses `nn.MultiheadAttention` because SigLIP checkpoints
    store its packed `in_proj_weight`."""

    def __init__(self, *, width: int, heads: int, mlp_dim: int, act: Activation, layer_norm_eps: float) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(1, 1, width))
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.layernorm = nn.LayerNorm(width, eps=layer_norm_eps)
        self.mlp = MLP(width=width, mlp_dim=mlp_dim, act=act)

    def forward(self, x: Tensor) -> Tensor:
        probe = self.probe.expand(x.shape[0], -1, -1)  # [B, 1, D]
        h = self.attention(probe, x, x, need_weights=False)[0]  # [B, 1, D]
        h = h + self.mlp(self.layernorm(h))
        return h[:, 0]  # [B, D]


class VisionTransformer(nn.Module):
    """ViT image encoder; see the module docstring for the CLIP and SigLIP settings."""

    def __init__(
        self,
        *,
        image_size: int,
        patch_size: int,
        width: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        act: Activation = "quick_gelu",
        class_token: bool = True,
        pre_norm: bool = True,
        pool: Pool = "cls",
        layer_norm_eps: float = 1e-5,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown act {act!r}; valid: {', '.join(ACTIVATIONS)}")
        if pool not in ("cls", "mean", "map"):
            raise ValueError(f"unknown pool {pool!r}; valid: cls, mean, map")
        if pool == "cls" and not class_token:
            raise ValueError("pool='cls' needs class_token=True")
        self.image_size = image_size
        self.patch_size = patch_size
        self.width = width
        self.depth = depth
        self.heads = heads
        self.pool = pool

        self.embeddings = Embeddings(
            image_size=image_size, patch_size=patch_size, width=width, class_token=class_token, in_channels=in_channels
        )
        # HF's spelling ("layrnorm"), kept so CLIP checkpoints load by plain copy
        self.pre_layrnorm = nn.LayerNorm(width, eps=layer_norm_eps) if pre_norm else None
        self.encoder = Encoder(
            [
                Block(width=width, heads=heads, mlp_dim=mlp_dim, act=act, layer_norm_eps=layer_norm_eps)
                for _ in range(depth)
            ]
        )
        self.post_layernorm = nn.LayerNorm(width, eps=layer_norm_eps)
        self.head = (
            MAPHead(width=width, heads=heads, mlp_dim=mlp_dim, act=act, layer_norm_eps=layer_norm_eps)
            if pool == "map"
            else None
        )
        self.reset_parameters()

    @property
    def grid_size(self) -> tuple[int, int]:
        """(H, W) of the patch grid at the configured image size."""
        return self.embeddings.grid_size

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens (1 for the class token, else 0)."""
        return self.embeddings.num_prefix_tokens

    def reset_parameters(self) -> None:
        """From-scratch init: truncated normal (std 0.02, cut at 2 std) for weights and
        embeddings, zero biases, identity layernorms."""
        init = partial(nn.init.trunc_normal_, std=0.02, a=-0.04, b=0.04)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                init(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                init(module.weight)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.MultiheadAttention):
                # packed q/k/v projection is a bare Parameter; its out_proj is an nn.Linear above
                init(module.in_proj_weight)
                nn.init.zeros_(module.in_proj_bias)
        if self.embeddings.class_embedding is not None:
            init(self.embeddings.class_embedding)
        if self.head is not None:
            init(self.head.probe)

    def _input_grid(self, pixel_values: Tensor, interpolate_pos_encoding: bool) -> tuple[int, int]:
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must be [B, C, H, W], got shape {tuple(pixel_values.shape)}")
        h, w = pixel_values.shape[-2:]
        if (h, w) != (self.image_size, self.image_size) and not interpolate_pos_encoding:
            raise ValueError(
                f"input is {h}x{w} pixels but the model was built for {self.image_size}x{self.image_size}; "
                "pass interpolate_pos_encoding=True to resize the position embeddings"
            )
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"input size {h}x{w} is not divisible by patch_size {self.patch_size}")
        return h // self.patch_size, w // self.patch_size

    def forward(
        self,
        pixel_values: Tensor,
        *,
        layer_hook: LayerHook | None = None,
        return_attention: bool = False,
        return_hidden: bool = False,
        interpolate_pos_encoding: bool = False,
    ) -> ViTOutput:
        """Encode images [B, C, H, W].

        `layer_hook(i, x)` gets the residual stream [B, N, D] right before block i
        (i = 0..depth-1, in order) and returns the stream block i reads. `hidden_states[i]`
        is that stream (after the hook) and `hidden_states[depth]` the encoder output, so
        without a hook they match HF's `output_hidden_states`. `return_attention` switches
        every block to the eager path (SDPA gives no weights).
        """
        grid_size = self._input_grid(pixel_values, interpolate_pos_encoding)
        x = self.embed(pixel_values, grid_size)
        n = x.shape[1]
        x, hidden, attentions = self.run_layers(x, 0, self.depth, layer_hook=layer_hook,
                                                return_attention=return_attention, return_hidden=return_hidden)
        if return_hidden:
            hidden.append(x)
        return self.finish(x[:, :n], grid_size, hidden=hidden if return_hidden else None,
                           attentions=attentions if return_attention else None)

    def select_blocks(self, layers: Sequence[int] | None) -> tuple[int, ...]:
        """Block indices (0-based; negative counts from the end; None: all) as 0..depth-1."""
        keep = tuple(range(self.depth)) if layers is None else tuple(int(i) for i in layers)
        if not keep or any(not -self.depth <= i < self.depth for i in keep):
            raise ValueError(f"layers={list(keep)}: valid blocks are 0..{self.depth - 1} (or -{self.depth}..-1)")
        return tuple(i % self.depth for i in keep)

    def block_outputs(self, pixel_values: Tensor) -> tuple[list[Tensor], Tensor, tuple[int, int]]:
        """(each block's output stream [B, N, D], the encoder output, the patch grid)."""
        grid = self._input_grid(pixel_values, False)
        outputs: list[Tensor] = []
        x, _, _ = self.run_layers(self.embed(pixel_values, grid), 0, self.depth, outputs=outputs)
        return outputs, x, grid

    def patch_stack(self, outputs: list[Tensor], blocks: Sequence[int], grid: tuple[int, int]) -> Tensor:
        """The patch tokens of the chosen blocks' outputs: [L, B, H*W, D] (prefix and appended
        tokens dropped)."""
        p = self.num_prefix_tokens
        return torch.stack([outputs[i][:, p : p + grid[0] * grid[1]] for i in blocks])

    def embed(self, pixel_values: Tensor, grid_size: tuple[int, int]) -> Tensor:
        """Patch + position embeddings (and the pre-layernorm): the stream block 0 reads."""
        x = self.embeddings(pixel_values, grid_size=grid_size)  # [B, N, D]
        return self.pre_layrnorm(x) if self.pre_layrnorm is not None else x

    def run_layers(self, x: Tensor, start: int, stop: int, *, layer_hook: LayerHook | None = None,
                   return_attention: bool = False, return_hidden: bool = False,
                   outputs: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Blocks start..stop-1 on the stream x [B, N, D]; the hook may replace the stream before
        each block, keeping its shape or appending tokens after the first N (feedback tokens,
        dropped again by `finish`). Returns (x, streams read by each block, attention maps);
        `outputs`, if given, receives each block's output stream (before any hook acts on it)."""
        hidden: list[Tensor] = []
        attentions: list[Tensor] = []
        for i in range(start, stop):
            if layer_hook is not None:
                fed = layer_hook(i, x)
                if fed.shape[0] != x.shape[0] or fed.shape[2] != x.shape[2] or fed.shape[1] < x.shape[1]:
                    raise ValueError(
                        f"layer_hook at layer {i} returned shape {tuple(fed.shape)}, expected {tuple(x.shape)} "
                        f"(or more tokens appended)"
                    )
                x = fed
            if return_hidden:
                hidden.append(x)
            x, weights = self.encoder.layers[i](x, return_attention=return_attention)
            if outputs is not None:
                outputs.append(x)
            if weights is not None:
                attentions.append(weights)
        return x, hidden, attentions

    def finish(self, x: Tensor, grid_size: tuple[int, int], *, hidden: list[Tensor] | None = None,
               attentions: list[Tensor] | None = None) -> ViTOutput:
        """Post-layernorm and pooling of the encoder output x [B, N, D] (appended tokens removed)."""
        # layernorm is per token, so normalising every token once serves all pools
        normed = self.post_layernorm(x)  # [B, N, D]
        tokens = normed[:, self.num_prefix_tokens :]  # [B, H*W, D]
        if self.pool == "cls":
            # CLIP: the post-layernorm belongs to the pooled class token; HF CLIP's
            # last_hidden_state is the un-normalised encoder output
            pooled, last_hidden_state = normed[:, 0], x
        elif self.pool == "mean":
            pooled, last_hidden_state = tokens.mean(dim=1), normed
        else:
            assert self.head is not None
            pooled, last_hidden_state = self.head(normed), normed

        return ViTOutput(
            last_hidden_state=last_hidden_state,
            pooled=pooled,
            tokens=tokens,
            grid_size=grid_size,
            hidden_states=tuple(hidden) if hidden is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        )
