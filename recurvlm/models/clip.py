"""The CLIP-style pair: image and text encoded independently, answers chosen by matching.

Feedforward baseline (late fusion, as in CLIP): the image embedding never sees the question.
Each answer choice is written as "<question> <answer>", encoded by the text tower, and
scored against the image embedding; training is cross-entropy over the choices. The same
class exposes CLIP's contrastive (InfoNCE) and SigLIP's sigmoid losses for image-text
pretraining on paired data. Parameter names follow Hugging Face's `CLIPModel`
(`vision_model`, `text_model`, `visual_projection`, `text_projection`, `logit_scale`), so
pretrained CLIP weights load by plain copy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from . import losses
from .outputs import VLMOutput

# OpenAI CLIP's preprocessing statistics; towers trained here from scratch use 0.5 / 0.5.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPPair(nn.Module):
    """Vision tower + text tower + projections into one embedding space.

    vision: maps pixel values [B, 3, H, W] to an output with `.pooled` [B, Dv].
    text: maps (input_ids [N, L], attention_mask [N, L]) to an output with `.pooled` [N, Dt].
    """

    def __init__(self, *, vision: nn.Module, text: nn.Module, vision_width: int, text_width: int, embed_dim: int,
                 logit_scale_init: float = math.log(1 / 0.07), logit_bias_init: float | None = None,
                 image_mean: Sequence[float] = (0.5, 0.5, 0.5), image_std: Sequence[float] = (0.5, 0.5, 0.5)) -> None:
        super().__init__()
        self.vision_model = vision
        self.text_model = text
        self.visual_projection = nn.Linear(vision_width, embed_dim, bias=False)
        self.text_projection = nn.Linear(text_width, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        # SigLIP's learned bias; None for CLIP (InfoNCE is invariant to it).
        self.logit_bias = nn.Parameter(torch.tensor(float(logit_bias_init))) if logit_bias_init is not None else None
        self.register_buffer("image_mean", torch.tensor(image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std).view(1, 3, 1, 1), persistent=False)
        for proj in (self.visual_projection, self.text_projection):
            nn.init.normal_(proj.weight, std=proj.in_features**-0.5)

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 [B, 3, H, W] (or float in [0, 1]) -> normalised float pixel values."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images
        return (x - self.image_mean) / self.image_std

    def encode_image(self, images: Tensor) -> Tensor:
        """L2-normalised image embeddings [B, E]."""
        return F.normalize(self.visual_projection(self.vision_model(self.preprocess(images)).pooled), dim=-1)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """L2-normalised text embeddings [N, E] for token ids [N, L]."""
        return F.normalize(self.text_projection(self.text_model(input_ids, attention_mask).pooled), dim=-1)

    def forward(self, images: Tensor, choice_ids: Tensor, choice_mask: Tensor, choice_valid: Tensor) -> VLMOutput:
        """Score every choice against the image.

        images [B, 3, H, W]; choice_ids / choice_mask [B, K, L] (tokens of "<question> <answer>");
        choice_valid [B, K] (False for padding choices). Returns logits [T=1, B, K].
        """
        b = choice_ids.shape[0]
        img = self.encode_image(images)  # [B, E]
        txt = self.encode_text(rearrange(choice_ids, "b k l -> (b k) l"), rearrange(choice_mask, "b k l -> (b k) l"))
        txt = rearrange(txt, "(b k) e -> b k e", b=b)  # [B, K, E]
        logits = self.logit_scale.exp() * torch.einsum("be,bke->bk", img, txt)  # [B, K]
        logits = logits.masked_fill(~choice_valid, float("-inf"))
        return VLMOutput(logits=logits[None], image_embeds=img[None], text_embeds=txt)

    def loss(self, out: VLMOutput, labels: Tensor) -> dict[str, Tensor]:
        """Named loss terms for answer matching; `loss` is their sum."""
        terms = losses.choice_loss(out.final_logits, labels)
        return {"loss": sum(terms.values()), **terms}

    def contrastive_loss(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        """Image-text pretraining on paired data: InfoNCE (CLIP) or sigmoid (SigLIP, when
        the model has a logit bias)."""
        img, txt = self.encode_image(images), self.encode_text(input_ids, attention_mask)
        if self.logit_bias is None:
            return losses.clip_loss(img, txt, self.logit_scale)
        return losses.siglip_loss(img, txt, self.logit_scale, self.logit_bias)
