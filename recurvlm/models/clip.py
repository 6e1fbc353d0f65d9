"""The CLIP-style pair: image and text encoded independently, answers chosen by matching.

Feedforward baseline (late fusion, as in CLIP): the image embedding never sees the question.
Each answer choice is written as "<question> <answer>", encoded by the text tower, and
scored against the image embedding; training is cross-entropy over the choices. The same
class exposes CLIP's contrastive (InfoNCE) and SigLIP's sigmoid losses for image-text
pretraining on paired data. Parameter names follow Hugging Face's `CLIPModel`
(`vision_model`, `text_model`, `visual_projection`, `text_projection`, `logit_scale`), so
pretrained CLIP weights load by plain copy.

Recurrent top-down variant: the same class with a `top_down` module (`topdown.TopDown`). The
question alone, encoded by the text tower, gates a per-token state that feeds back into the
ViT for `iterations` sweeps; every sweep gives an image embedding (the pooled vision output
plus the state's zero-initialised readout) and so an answer. Without `top_down` the model
is the feedforward baseline (T = 1): the baseline is this model with no feedback, not a
second copy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from . import losses
from .outputs import Features, VLMOutput
from .topdown import Carry, TopDown, check_loop, iteration_loss, run_loop

# OpenAI CLIP's preprocessing statistics; towers trained here from scratch use 0.5 / 0.5, as SigLIP does.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


def pixel_values(images: Tensor, mean: Tensor, std: Tensor, size: int | None = None) -> Tensor:
    """uint8 [B, 3, H, W] (or float in [0, 1]) -> (x - mean) / std, mean and std [1, 3, 1, 1].

    `size`: first resize to size x size (bicubic, antialiased, as HF's CLIP / SigLIP image
    processors resample; our stimuli are square, so no crop), so a pretrained tower sees its
    own resolution; None leaves the input as it is."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    return (x - mean) / std


class CLIPPair(nn.Module):
    """Vision tower + text tower + projections into one embedding space.

    vision: maps pixel values [B, 3, H, W] to an output with `.pooled` [B, Dv].
    text: maps (input_ids [N, L], attention_mask [N, L]) to an output with `.pooled` [N, Dt].
    """

    def __init__(self, *, vision: nn.Module, text: nn.Module, vision_width: int, text_width: int, embed_dim: int,
                 logit_scale_init: float = math.log(1 / 0.07), logit_bias_init: float | None = None,
                 image_mean: Sequence[float] = (0.5, 0.5, 0.5), image_std: Sequence[float] = (0.5, 0.5, 0.5),
                 image_resize: int | None = None, top_down: dict[str, Any] | None = None, iterations: int = 1, loss: str = "last",
                 progressive_alpha: float = 0.5, dense_weight: float = 0.0) -> None:
        super().__init__()
        check_loop(top_down, iterations, loss)
        self.vision_model = vision
        self.text_model = text
        self.visual_projection = nn.Linear(vision_width, embed_dim, bias=False)
        self.text_projection = nn.Linear(text_width, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        # SigLIP's learned bias; None for CLIP (InfoNCE is invariant to it).
        self.logit_bias = nn.Parameter(torch.tensor(float(logit_bias_init))) if logit_bias_init is not None else None
        self.register_buffer("image_mean", torch.tensor(image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std).view(1, 3, 1, 1), persistent=False)
        self.image_resize = image_resize  # inputs resized to this size first (pretrained towers); None: as given
        for proj in (self.visual_projection, self.text_projection):
            nn.init.normal_(proj.weight, std=proj.in_features**-0.5)
        self.top_down = (TopDown(vision=vision, query_width=text_width, embed_dim=embed_dim, **top_down)
                         if top_down is not None else None)
        self.iterations, self.loss_mode, self.progressive_alpha = iterations, loss, progressive_alpha
        # Optional auxiliary dense supervision (a per-patch linear head on the final vision tokens,
        # the same for feedforward and recurrent models); the loss needs maps (data.dense_maps).
        if not (isinstance(dense_weight, (int, float)) and dense_weight >= 0):
            raise ValueError(f"dense_weight={dense_weight!r}; valid: a number >= 0 (0: no dense head)")
        self.dense_weight = float(dense_weight)
        self.dense_head = nn.Linear(vision_width, 1) if dense_weight > 0 else None

    @property
    def recurrent(self) -> bool:
        return self.top_down is not None

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 [B, 3, H, W] (or float in [0, 1]) -> normalised float pixel values."""
        return pixel_values(images, self.image_mean, self.image_std, self.image_resize)

    def dense(self, v: Any) -> Tensor | None:
        """Per-patch logits [B, h, w] of the dense head from a vision output, or None without one."""
        if self.dense_head is None:
            return None
        return rearrange(self.dense_head(v.tokens)[..., 0], "b (h w) -> b h w", h=v.grid_size[0])

    def encode_image(self, images: Tensor) -> Tensor:
        """L2-normalised image embeddings [B, E]."""
        return F.normalize(self.visual_projection(self.vision_model(self.preprocess(images)).pooled), dim=-1)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """L2-normalised text embeddings [N, E] for token ids [N, L]."""
        return F.normalize(self.text_projection(self.text_model(input_ids, attention_mask).pooled), dim=-1)

    def encode_choices(self, choice_ids: Tensor, choice_mask: Tensor) -> Tensor:
        """Text embeddings [B, K, E] of every "<question> <answer>" choice [B, K, L]."""
        b = choice_ids.shape[0]
        txt = self.encode_text(rearrange(choice_ids, "b k l -> (b k) l"), rearrange(choice_mask, "b k l -> (b k) l"))
        return rearrange(txt, "(b k) e -> b k e", b=b)

    def score(self, image_embeds: Tensor, text_embeds: Tensor, choice_valid: Tensor) -> Tensor:
        """Scaled cosine similarity [B, K] of image [B, E] and choices [B, K, E]; padding -inf."""
        logits = self.logit_scale.exp() * torch.einsum("be,bke->bk", image_embeds, text_embeds)
        return logits.masked_fill(~choice_valid, float("-inf"))

    def forward(self, images: Tensor, choice_ids: Tensor, choice_mask: Tensor, choice_valid: Tensor,
                question_ids: Tensor | None = None, question_mask: Tensor | None = None, *,
                iterations: int | None = None, record: bool = False,
                progressive: tuple[int, int] | None = None) -> VLMOutput:
        """Score every choice against the image, at every iteration.

        images [B, 3, H, W]; choice_ids / choice_mask [B, K, L] (tokens of "<question> <answer>");
        choice_valid [B, K] (False for padding choices); question_ids / question_mask [B, L]
        (the question alone: the recurrent variant's query). `iterations` overrides T (any T at
        test time). `record` keeps per-iteration, per-layer attention maps (eager path),
        feedback maps and state norms in `maps`. `progressive=(n, k)`: n iterations without
        gradient, then k with, returning the k (Bansal et al. 2022). Returns logits [T, B, K].
        """
        txt = self.encode_choices(choice_ids, choice_mask)  # [B, K, E]
        if self.top_down is None:
            if iterations not in (None, 1) or progressive is not None:
                raise ValueError("a feedforward model runs one iteration; iterations/progressive need top_down")
            v = self.vision_model(self.preprocess(images), return_attention=record)
            img = F.normalize(self.visual_projection(v.pooled), dim=-1)
            maps = {"attentions": [list(v.attentions)]} if record else {}
            dense = self.dense(v)
            return VLMOutput(logits=self.score(img, txt, choice_valid)[None], image_embeds=img[None],
                             text_embeds=txt, maps=maps, dense_logits=None if dense is None else dense[None])
        carry = self.start(images, question_ids, question_mask, record=record)

        def step(c: Carry) -> tuple[tuple[Tensor, Tensor, Tensor | None], Carry]:
            (lg, emb), c = self.step(c, txt, choice_valid)
            return (lg, emb, c.dense), c

        outs, carry = run_loop(step, carry, self.iterations if iterations is None else iterations, progressive)
        logits, embeds, dense = zip(*outs)
        return VLMOutput(logits=torch.stack(logits), image_embeds=torch.stack(embeds), text_embeds=txt,
                         state=carry.state, maps=carry.maps,
                         dense_logits=torch.stack(dense) if self.dense_head is not None else None)

    @torch.no_grad()
    def features(self, images: Tensor, question_ids: Tensor | None = None, question_mask: Tensor | None = None,
                 *, iterations: int | None = None, layers: Sequence[int] | None = None) -> Features:
        """Per-block, per-iteration patch-token features of images [B, 3, H, W] (no gradient);
        the one entry point probes and analysis use. `layers`: ViT blocks to keep (0-based,
        negative counts from the end; default all). A recurrent model needs the question (its
        query) and runs `iterations` sweeps (default: the training T)."""
        vit = self.vision_model
        keep = vit.select_blocks(layers)
        if self.top_down is None:
            if iterations not in (None, 1):
                raise ValueError("a feedforward model runs one iteration; iterations needs top_down")
            outs, x, grid = vit.block_outputs(self.preprocess(images))
            img = F.normalize(self.visual_projection(vit.finish(x, grid).pooled), dim=-1)
            return Features(layers=keep, tokens=vit.patch_stack(outs, keep, grid)[None], grid_size=grid,
                            image_embeds=img[None])
        if question_ids is None or question_mask is None:
            raise ValueError("the recurrent variant needs question_ids and question_mask (the query)")
        query = self.text_model(question_ids, question_mask).pooled
        carry = self.top_down.start(vit, self.preprocess(images), query, keep_outputs=True)
        tokens, states, embeds = [], [], []
        for _ in range(self.iterations if iterations is None else iterations):
            v, s, carry = self.top_down.iterate(vit, carry)
            assert carry.low_outputs is not None and carry.outputs is not None
            tokens.append(vit.patch_stack(carry.low_outputs + carry.outputs, keep, carry.grid_size))
            states.append(s)
            embeds.append(F.normalize(self.visual_projection(v.pooled) + self.top_down.read(s), dim=-1))
        return Features(layers=keep, tokens=torch.stack(tokens), grid_size=carry.grid_size,
                        image_embeds=torch.stack(embeds), state=torch.stack(states))

    def start(self, images: Tensor, question_ids: Tensor | None, question_mask: Tensor | None, *,
              record: bool = False) -> Carry:
        """Begin the recurrent loop: the feedback-free lower layers and the query."""
        if self.top_down is None:
            raise ValueError("start/step need a top_down module")
        if question_ids is None or question_mask is None:
            raise ValueError("the recurrent variant needs question_ids and question_mask (the query)")
        query = self.text_model(question_ids, question_mask).pooled  # [B, Dt]
        return self.top_down.start(self.vision_model, self.preprocess(images), query, record=record)

    def step(self, carry: Carry, text_embeds: Tensor, choice_valid: Tensor) -> tuple[tuple[Tensor, Tensor], Carry]:
        """One iteration: ((logits [B, K], image embedding [B, E]), the next carry)."""
        assert self.top_down is not None
        v, s, carry = self.top_down.iterate(self.vision_model, carry)
        img = F.normalize(self.visual_projection(v.pooled) + self.top_down.read(s), dim=-1)
        carry.dense = self.dense(v)
        return (self.score(img, text_embeds, choice_valid), img), carry

    def loss(self, out: VLMOutput, labels: Tensor) -> dict[str, Tensor]:
        """Named loss terms for answer matching; `loss` is their sum. With T > 1 iterations the
        choice loss is on the last iteration (`last`) or the mean over iterations (`mean`);
        `progressive` adds its own term in the training step (see `progressive_loss`)."""
        terms = iteration_loss(out.logits, labels, self.loss_mode)
        return {"loss": sum(terms.values()), **terms}

    def contrastive_loss(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        """Image-text pretraining on paired data: InfoNCE (CLIP) or sigmoid (SigLIP, when
        the model has a logit bias)."""
        img, txt = self.encode_image(images), self.encode_text(input_ids, attention_mask)
        if self.logit_bias is None:
            return losses.clip_loss(img, txt, self.logit_scale)
        return losses.siglip_loss(img, txt, self.logit_scale, self.logit_bias)

    def logits_per_image(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Image-text logits [B, N] of images [B, 3, H, W] and texts [N, L], as HF's `CLIPModel` /
        `SiglipModel` give them: scaled cosine similarity, plus SigLIP's bias. Feedforward
        embeddings (the recurrent variant's image embedding depends on its query: `forward`)."""
        logits = self.logit_scale.exp() * self.encode_image(images) @ self.encode_text(input_ids, attention_mask).T
        return logits if self.logit_bias is None else logits + self.logit_bias

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, top_down: dict[str, Any] | None = None, iterations: int = 1,
                        resize: bool = True, **kwargs: Any) -> CLIPPair:
        """A full HF CLIP (`CLIPModel`) or SigLIP (`SiglipModel`) checkpoint, by hub name or local
        directory (no `trust_remote_code`), as a CLIPPair; `top_down` (and `iterations`, `loss`,
        ... in `kwargs`) make it the recurrent variant, whose new parts keep their zero init.

        Weights are copied strictly: a checkpoint that does not fill every weight of the HF
        model, or holds one the pair has no place for, is a one-line `StateDictMismatchError`
        naming the keys. CLIP brings its projections; SigLIP has none (its text `head` lives in
        the text tower, as in HF, and its image embedding is the MAP-pooled output), so both
        projections are identities, to be frozen with `lr_mult` (conf/model/siglip_b16.yaml).
        Pixel mean / std come from the checkpoint's preprocessor_config.json when it has one,
        else CLIP's / SigLIP's standard values; `resize` resizes inputs to the tower's size.
        """
        from transformers import AutoConfig, CLIPModel, SiglipModel

        from .pretrained import StateDictMismatchError, _first_few, image_statistics, load_state_dict_strict
        from .pretrained import vision_kwargs_from_hf_config
        from .text import TextTransformer, text_kwargs_from_hf_config
        from .vit import VisionTransformer

        families = {"clip": (CLIPModel, CLIP_MEAN, CLIP_STD), "siglip": (SiglipModel, SIGLIP_MEAN, SIGLIP_STD)}
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
        if config.model_type not in families:
            raise ValueError(f"{name_or_path} is a {config.model_type!r} checkpoint; CLIPPair.from_pretrained takes "
                             f"a full clip or siglip model (a vision tower alone: pretrained.load_vision_tower)")
        hf_class, mean, std = families[config.model_type]
        hf, info = hf_class.from_pretrained(name_or_path, output_loading_info=True, trust_remote_code=False)
        bad = list(info["missing_keys"]) + [str(m) for m in info["mismatched_keys"]]
        if bad:
            raise StateDictMismatchError(f"{name_or_path} does not fill {hf_class.__name__}: "
                                         f"missing or mismatched keys [{_first_few(bad)}]")
        # position_ids are index buffers, not weights
        state = {k: v for k, v in hf.state_dict().items() if not k.endswith("position_ids")}
        del hf
        source = str(name_or_path)

        def part(prefix: str) -> dict[str, Tensor]:
            return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}

        # the towers get their weights before the pair is built, so a top_down module starts from them
        vision = VisionTransformer(**vision_kwargs_from_hf_config(config))
        load_state_dict_strict(vision, part("vision_model."), source=source)
        text = TextTransformer(**text_kwargs_from_hf_config(config))
        load_state_dict_strict(text, part("text_model."), source=source)
        siglip = config.model_type == "siglip"
        if siglip and text.output_width != vision.width:
            raise ValueError(f"{name_or_path}: text projection_size {text.output_width} != vision hidden_size "
                             f"{vision.width}; SigLIP compares the two embeddings directly")
        embed_dim = vision.width if siglip else config.projection_dim
        heads = ("logit_scale", "logit_bias") if siglip else ("logit_scale", "visual_projection.weight",
                                                            "text_projection.weight")
        used = set(heads) | {k for k in state if k.startswith(("vision_model.", "text_model."))}
        if set(state) - used:
            raise StateDictMismatchError(f"cannot load {source} into CLIPPair: unexpected keys "
                                         f"[{_first_few(set(state) - used)}]")
        pair = cls(vision=vision, text=text, vision_width=vision.width, text_width=text.output_width,
                   embed_dim=embed_dim, logit_scale_init=float(state["logit_scale"]),
                   logit_bias_init=float(state["logit_bias"]) if siglip else None,
                   image_resize=vision.image_size if resize else None, top_down=top_down, iterations=iterations,
                   **{**image_statistics(name_or_path, mean=mean, std=std), **kwargs})
        for name in ("visual_projection", "text_projection"):
            proj = getattr(pair, name)
            weight = torch.eye(*proj.weight.shape) if siglip else state[f"{name}.weight"]
            load_state_dict_strict(proj, {"weight": weight}, source=source)
        return pair.eval()
