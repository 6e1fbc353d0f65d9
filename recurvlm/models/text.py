"""CLIP / SigLIP text transformer and loading of HF CLIP / SigLIP text weights.

Parameter names follow Hugging Face's `CLIPTextModel` / `SiglipTextModel` (`embeddings.*`,
`encoder.layers.{i}.*`, `final_layer_norm`, SigLIP's `head`), so their weights load by plain
copy (`load_text_tower`). CLIP's tower is causal and pools the final-norm state at the EOS
token (`pool="eos"`), chosen exactly as HF chooses it:

    eos_token_id=None: the position of the largest id (OpenAI CLIP's end-of-text is the last
                       id of its vocabulary; HF keeps this rule for configs with the legacy
                       eos_token_id == 2, see transformers PR #24773)
    eos_token_id=k:    the first position holding k (pad may equal EOS, so not the last)

A row without EOS pools position 0, as HF does; tokenizers always write one.

SigLIP's tower (Zhai et al. 2023) is bidirectional (`causal=False`), pools the last position
(`pool="last"`) and projects it with a linear `head` (`projection_size`). It was trained on
token sequences padded to 64 with no attention mask (the pad token is its EOS, so the last
position holds an EOS state; big_vision's text_transformer.py, open_clip issue #984), so
`mask_padding=False` ignores the padding mask as SigLIP did; HF applies a mask when given one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from recurvlm.models.pretrained import StateDictMismatchError, load_state_dict_strict
from recurvlm.models.vit import MLP, Activation, Encoder

# HF `hidden_act` -> our `act` (gelu_new is the tanh formula written out by hand)
_HF_ACTIVATIONS = {
    "quick_gelu": "quick_gelu",
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
}
# what a full CLIPModel / CLIPTextModelWithProjection checkpoint holds besides the text tower
_NON_TEXT_TOWER_PREFIXES = ("vision_model.", "visual_projection.", "text_projection.", "logit_scale", "logit_bias")
# model_type in an HF config -> (family, whether the text settings sit under `text_config`)
_TEXT_MODEL_TYPES: dict[str, tuple[str, bool]] = {
    "clip_text_model": ("clip", False),
    "clip": ("clip", True),
    "siglip_text_model": ("siglip", False),
    "siglip": ("siglip", True),
}
POOLS = ("eos", "last")
# HF configs before PR #24773 carry eos_token_id == 2 and pool at the largest id
_LEGACY_EOS_TOKEN_ID = 2


@dataclass(frozen=True)
class TextOutput:
    """What one forward pass returns; the type is the same in train and eval."""

    last_hidden_state: Tensor  # [B, L, D] after the final layer norm
    pooled: Tensor  # [B, D] the state at each row's pooled token (EOS, or last), through the head if any


class TextEmbeddings(nn.Module):
    """Token embeddings plus learned absolute position embeddings (positions 0..L-1, also
    under padding: CLIP pads on the right)."""

    def __init__(self, *, vocab_size: int, context_length: int, width: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(context_length, width)

    def forward(self, input_ids: Tensor) -> Tensor:
        pos = self.position_embedding.weight[: input_ids.shape[1]]  # [L, D]
        return self.token_embedding(input_ids) + pos  # [B, L, D]


class MaskedAttention(nn.Module):
    """Multi-head self-attention (HF CLIP's q/k/v/out layout) under a boolean mask, via SDPA."""

    def __init__(self, *, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor, *, mask: Tensor | None, causal: bool = True) -> Tensor:
        """x [B, L, D]; mask [B, 1, L, L] (True = may attend), or None for a plain causal
        (`causal=True`) or full (`causal=False`) mask."""
        q, k, v = (
            rearrange(proj(x), "b n (h d) -> b h n d", h=self.heads)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=self.scale)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        out = rearrange(out, "b h n d -> b n (h d)")  # [B, L, D]
        return self.out_proj(out)


class TextBlock(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, *, width: int, heads: int, mlp_dim: int, act: Activation, layer_norm_eps: float) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(width, eps=layer_norm_eps)
        self.self_attn = MaskedAttention(width=width, heads=heads)
        self.layer_norm2 = nn.LayerNorm(width, eps=layer_norm_eps)
        self.mlp = MLP(width=width, mlp_dim=mlp_dim, act=act)

    def forward(self, x: Tensor, *, mask: Tensor | None, causal: bool = True) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask=mask, causal=causal)
        return x + self.mlp(self.layer_norm2(x))


def attention_mask_4d(attention_mask: Tensor, *, causal: bool = True) -> Tensor:
    """Causal (unless `causal=False`) AND key-padding mask [B, 1, L, L] (True = may attend)
    from a padding mask [B, L].

    A query whose row would be empty (a pad token before any real token, under left
    padding) may attend to itself. HF leaves such rows empty; SDPA then returns zeros on
    some backends and NaN on others, and a NaN in a pad token's value poisons every row at
    the next layer (0 * NaN). Only pad positions' states differ from HF; with right padding
    (CLIP's) no row is empty and every state matches.
    """
    b, n = attention_mask.shape
    allowed = torch.ones(n, n, dtype=torch.bool, device=attention_mask.device)  # [L, L]
    if causal:
        allowed = allowed.tril()
    mask = allowed & rearrange(attention_mask.bool(), "b m -> b 1 1 m")  # [B, 1, L, L]
    empty = ~mask.any(dim=-1, keepdim=True)  # [B, 1, L, 1]
    eye = torch.eye(n, dtype=torch.bool, device=attention_mask.device)
    return mask | (empty & eye)


class TextTransformer(nn.Module):
    """The CLIP text encoder: embeddings, causal pre-norm blocks, final layer norm, EOS pooling;
    with `causal=False, pool="last", projection_size=..., mask_padding=False`, SigLIP's.

    `pad_token_id` is recorded for tokenizers and checks; the padding mask always comes from
    `attention_mask`, never from the ids, because CLIP tokenizers pad with the EOS id.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        context_length: int,
        width: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        act: Activation = "quick_gelu",
        layer_norm_eps: float = 1e-5,
        eos_token_id: int | None = None,
        pad_token_id: int = 0,
        causal: bool = True,
        pool: str = "eos",
        projection_size: int | None = None,
        mask_padding: bool = True,
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; valid: {', '.join(POOLS)}")
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.width = width
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.causal, self.pool, self.mask_padding = causal, pool, mask_padding
        self.embeddings = TextEmbeddings(vocab_size=vocab_size, context_length=context_length, width=width)
        self.encoder = Encoder(
            [
                TextBlock(width=width, heads=heads, mlp_dim=mlp_dim, act=act, layer_norm_eps=layer_norm_eps)
                for _ in range(depth)
            ]
        )
        self.final_layer_norm = nn.LayerNorm(width, eps=layer_norm_eps)
        # SigLIP's linear projection of the pooled state (HF `SiglipTextModel.head`)
        self.head = nn.Linear(width, projection_size) if projection_size is not None else None
        self.reset_parameters()

    @property
    def output_width(self) -> int:
        """Width of `pooled`: the head's output when there is a head, else the tower's width."""
        return self.head.out_features if self.head is not None else self.width

    def reset_parameters(self) -> None:
        """OpenAI CLIP's initialisation (Radford et al. 2021, as open_clip writes it): residual
        branch outputs (out_proj, fc2) scaled by 1/sqrt(2 * depth), as GPT-2 does, so the
        residual stream's variance does not grow with depth."""
        depth = len(self.encoder.layers)
        attn_std = self.width**-0.5
        proj_std = attn_std * (2 * depth) ** -0.5
        fc_std = (2 * self.width) ** -0.5
        nn.init.normal_(self.embeddings.token_embedding.weight, std=0.02)
        nn.init.normal_(self.embeddings.position_embedding.weight, std=0.01)
        for block in self.encoder.layers:
            attn, mlp = block.self_attn, block.mlp
            for linear, std in ((attn.q_proj, attn_std), (attn.k_proj, attn_std), (attn.v_proj, attn_std),
                                (attn.out_proj, proj_std), (mlp.fc1, fc_std), (mlp.fc2, proj_std)):
                nn.init.normal_(linear.weight, std=std)
                nn.init.zeros_(linear.bias)
            for norm in (block.layer_norm1, block.layer_norm2):
                norm.reset_parameters()
        self.final_layer_norm.reset_parameters()
        if self.head is not None:
            nn.init.normal_(self.head.weight, std=attn_std)
            nn.init.zeros_(self.head.bias)

    def eos_positions(self, input_ids: Tensor) -> Tensor:
        """Index [B] of the token each row is pooled at (see the module docstring)."""
        if self.pool == "last":
            return torch.full(input_ids.shape[:1], input_ids.shape[1] - 1, dtype=torch.long, device=input_ids.device)
        if self.eos_token_id is None:
            return input_ids.argmax(dim=-1)  # argmax returns the first maximal position
        return (input_ids == self.eos_token_id).int().argmax(dim=-1)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> TextOutput:
        """input_ids [B, L] (L <= context_length); attention_mask [B, L], True/1 for real tokens."""
        b, n = input_ids.shape
        if n > self.context_length:
            raise ValueError(f"sequence length {n} exceeds the context length {self.context_length}")
        x = self.embeddings(input_ids)  # [B, L, D]
        use_mask = attention_mask is not None and self.mask_padding
        mask = attention_mask_4d(attention_mask, causal=self.causal) if use_mask else None
        for block in self.encoder.layers:
            x = block(x, mask=mask, causal=self.causal)
        x = self.final_layer_norm(x)
        pooled = x[torch.arange(b, device=x.device), self.eos_positions(input_ids).to(x.device)]  # [B, D]
        if self.head is not None:
            pooled = self.head(pooled)  # [B, projection_size]
        return TextOutput(last_hidden_state=x, pooled=pooled)


def _text_config(config: Any) -> tuple[str, Any]:
    """(family, text config) of a CLIP / SigLIP config, full model or text tower."""
    if config.model_type not in _TEXT_MODEL_TYPES:
        raise ValueError(f"model_type {config.model_type!r} is not a CLIP or SigLIP text tower; "
                         f"supported: {', '.join(_TEXT_MODEL_TYPES)}")
    family, nested = _TEXT_MODEL_TYPES[config.model_type]
    return family, (config.text_config if nested else config)


def text_kwargs_from_hf_config(config: Any) -> dict[str, Any]:
    """`TextTransformer` keyword arguments from an HF CLIP / SigLIP text config (or a full
    model's config, whose text tower is used). CLIP: a legacy eos_token_id of 2 becomes None
    (pool at the largest id). SigLIP: bidirectional, last-position pooling through its head,
    padding not masked (see the module docstring)."""
    family, tc = _text_config(config)
    if tc.hidden_act not in _HF_ACTIVATIONS:
        raise ValueError(f"hidden_act {tc.hidden_act!r} has no equivalent; supported: {', '.join(_HF_ACTIVATIONS)}")
    if family == "clip":
        eos = None if tc.eos_token_id == _LEGACY_EOS_TOKEN_ID else tc.eos_token_id
        arch: dict[str, Any] = dict(eos_token_id=eos)
    else:
        arch = dict(eos_token_id=tc.eos_token_id, causal=False, pool="last", projection_size=tc.projection_size,
                    mask_padding=False)
    return dict(
        vocab_size=tc.vocab_size,
        context_length=tc.max_position_embeddings,
        width=tc.hidden_size,
        depth=tc.num_hidden_layers,
        heads=tc.num_attention_heads,
        mlp_dim=tc.intermediate_size,
        act=_HF_ACTIVATIONS[tc.hidden_act],
        layer_norm_eps=tc.layer_norm_eps,
        pad_token_id=tc.pad_token_id if tc.pad_token_id is not None else 0,
        **arch,
    )


def _first_few(keys: Iterable[str], n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n} more)" if len(keys) > n else "")


def load_text_tower(name_or_path: str) -> TextTransformer:
    """A `TextTransformer` with the weights of an HF CLIP / SigLIP text tower.

    `name_or_path` is a hub name or a local directory holding a `CLIPTextModel` /
    `SiglipTextModel` checkpoint or a full `CLIPModel` / `SiglipModel` one (whose vision
    weights are skipped). HF builds the tower and reports what the checkpoint lacked; we then
    copy its state dict with strict keys, so a mismatch anywhere raises a one-line error
    instead of leaving random weights. The parameters stay float32 whatever the checkpoint's
    dtype.
    """
    from transformers import AutoConfig, CLIPTextModel, SiglipTextModel

    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    kwargs = text_kwargs_from_hf_config(config)
    family, text_config = _text_config(config)
    hf_class = CLIPTextModel if family == "clip" else SiglipTextModel
    hf_model, info = hf_class.from_pretrained(
        name_or_path, config=text_config, output_loading_info=True, trust_remote_code=False
    )
    # missing keys would be random weights; unexpected ones are fine only outside the text tower
    # (a full model's vision tower and projections), else the config and weights disagree
    unexpected = [k for k in info["unexpected_keys"] if not k.startswith(_NON_TEXT_TOWER_PREFIXES)]
    problems = [
        f"{what} keys [{_first_few(keys)}]"
        for what, keys in (("missing", info["missing_keys"]), ("unexpected", unexpected),
                           ("mismatched", [str(k) for k in info["mismatched_keys"]]))
        if keys
    ]
    if problems:
        raise StateDictMismatchError(f"{name_or_path} does not match {hf_class.__name__}: " + "; ".join(problems))
    # transformers 4.x nests the tower under `text_model.`; position_ids are index buffers, not weights
    state_dict = {
        k.removeprefix("text_model."): v for k, v in hf_model.state_dict().items() if not k.endswith("position_ids")
    }
    model = TextTransformer(**kwargs)
    load_state_dict_strict(model, state_dict, source=str(name_or_path))
    return model.eval()
