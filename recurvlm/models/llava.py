"""The LLaVA-style pair: our vision tower -> a projector -> any transformers causal LM.

As LLaVA-1.5 (Liu et al. 2023, "Improved Baselines with Visual Instruction Tuning"): the
vision tower's hidden state at `feature_layer` (default -2, the penultimate block), its
class token dropped (`select="default"`) or kept (`"full"`), is projected (`"linear"` or
`"mlp<N>x_gelu"`) into the LM's embedding space and spliced into the prompt's input
embeddings at the image placeholder tokens (one placeholder per image feature; batched, a
masked scatter, no per-sample loops). Composition around Hugging Face models: the LM is a
`transformers` causal LM used through its public `forward(inputs_embeds=...)`.

Answers: `choice_logprobs` scores every answer choice by its log-likelihood given the image
and the prompt (the matching-style readout of the CLIP pair, so the same training module
and metrics apply); `generate` decodes greedily.

`LlavaPair.from_pretrained` loads llava-hf-format LLaVA-1.5 checkpoints (a hub name or a
local directory; no `trust_remote_code`) by strict state-dict copy: a checkpoint that does
not fill every weight is a one-line error naming the keys, never a partial load.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .clip import CLIP_MEAN, CLIP_STD, SIGLIP_MEAN, SIGLIP_STD, pixel_values
from .losses import choice_loss
from .outputs import Features, VLMOutput
from .pretrained import (
    StateDictMismatchError,
    _first_few,
    image_statistics,
    load_state_dict_strict,
    vision_kwargs_from_hf_config,
)
from .vit import VisionTransformer

SELECT = ("default", "full")


class Projector(nn.Module):
    """LLaVA's multimodal projector: `linear`, or `mlp<N>x_gelu` (N linear layers with GELU
    between them). Layer names follow llava-hf (`linear_1`, `linear_2`, ...)."""

    def __init__(self, kind: str, in_dim: int, out_dim: int) -> None:
        super().__init__()
        m = re.fullmatch(r"mlp(\d+)x_gelu", kind)
        if kind == "linear":
            n = 1
        elif m and int(m.group(1)) >= 1:
            n = int(m.group(1))
        else:
            raise ValueError(f"unknown projector {kind!r}; valid: linear, mlp<N>x_gelu (e.g. mlp2x_gelu)")
        self.kind, self.n = kind, n
        for i in range(n):
            setattr(self, f"linear_{i + 1}", nn.Linear(in_dim if i == 0 else out_dim, out_dim))
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        for i in range(self.n):
            x = getattr(self, f"linear_{i + 1}")(x if i == 0 else self.act(x))
        return x


class LlavaPair(nn.Module):
    """Vision tower + projector + causal LM (see the module docstring)."""

    def __init__(self, *, vision: VisionTransformer, lm: nn.Module, image_token_id: int,
                 projector: str = "mlp2x_gelu", feature_layer: int = -2, select: str = "default",
                 image_mean: tuple[float, ...] = (0.5, 0.5, 0.5), image_std: tuple[float, ...] = (0.5, 0.5, 0.5),
                 image_resize: int | None = None) -> None:
        super().__init__()
        if select not in SELECT:
            raise ValueError(f"unknown select {select!r}; valid: {', '.join(SELECT)}")
        if not -(vision.depth + 1) <= feature_layer <= vision.depth:
            raise ValueError(f"feature_layer={feature_layer}: valid -{vision.depth + 1}..{vision.depth} "
                             f"(hidden states of a {vision.depth}-block tower)")
        self.vision_model = vision
        self.lm = lm
        self.image_token_id = int(image_token_id)
        self.feature_layer, self.select = feature_layer, select
        hidden = lm.get_input_embeddings().embedding_dim
        self.multi_modal_projector = Projector(projector, vision.width, hidden)
        self.register_buffer("image_mean", torch.tensor(image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std).view(1, 3, 1, 1), persistent=False)
        self.image_resize = image_resize  # inputs resized to this size first (pretrained towers); None: as given

    @property
    def recurrent(self) -> bool:
        return False

    @property
    def num_image_tokens(self) -> int:
        """Placeholders per image: one per patch (+1 with the class token kept)."""
        return self.vision_model.num_patches + (self.vision_model.num_prefix_tokens if self.select == "full" else 0)

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 [B, 3, H, W] (or float in [0, 1]) -> normalised float pixel values."""
        return pixel_values(images, self.image_mean, self.image_std, self.image_resize)

    def forward_choices(self, images: Tensor, choice_ids: Tensor, choice_mask: Tensor, choice_valid: Tensor,
                        question_ids: Tensor, question_mask: Tensor, record: bool = False) -> VLMOutput:
        """The matching interface of the CLIP pair (what the training module calls): each
        choice "<question> <answer>" [B, K, L] is scored by the log-likelihood of its answer
        tokens after [image tokens, question]. The answer is what follows the longest prefix the
        choice shares with the question alone [B, L], so any tokenizer that encodes
        "<question> <answer>" as the question's tokens followed by the answer's works.

        The image tokens go where the question holds the image placeholder (`image_token_id`
        once, as a prompt template such as LLaVA-1.5's "USER: <image>\n{question} ASSISTANT:"
        writes it), expanded to `num_image_tokens`; a question without one gets them in front."""
        b, k, _ = choice_ids.shape
        dev = choice_ids.device
        shared = ((choice_ids == question_ids[:, None]) & choice_mask.bool()).long().cumprod(-1).sum(-1)  # [B, K]
        p_len = shared.masked_fill(~choice_valid, 10**9).min(1).values.clamp(max=question_ids.shape[1])  # [B]
        c_len = choice_mask.long().sum(-1)  # [B, K]
        n_img = self.num_image_tokens
        placeholder = (question_ids == self.image_token_id) & (torch.arange(question_ids.shape[1], device=dev)
                                                               < p_len[:, None])  # [B, L]
        if bool((placeholder.sum(1) > 1).any()):
            raise ValueError(f"a question holds the image token (id {self.image_token_id}) more than once; "
                             f"a prompt template places one <image>")
        has = placeholder.any(1).long()  # [B]
        at = placeholder.long().argmax(1)  # [B] the placeholder's position (0 when none: image first)
        # prompt = question[:at], n_img image tokens, question[at + has:p_len]; left-padded so every
        # answer starts at one column
        lens = n_img + p_len - has
        width = int(lens.max())
        pos = torch.arange(width, device=dev)[None] - (width - lens)[:, None]  # [B, W] position in the prompt
        prompt_mask = pos >= 0
        image_pos = (pos >= at[:, None]) & (pos < (at + n_img)[:, None])
        src = torch.where(pos < at[:, None], pos, pos - n_img + has[:, None]).clamp(0, question_ids.shape[1] - 1)
        prompt = torch.where(image_pos, self.image_token_id, question_ids.gather(1, src)).masked_fill(~prompt_mask, 0)
        a_len = (c_len - p_len[:, None]).clamp(min=0).masked_fill(~choice_valid, 0)
        a_width = max(int(a_len.max()), 1)
        idx = (p_len[:, None, None] + torch.arange(a_width, device=dev)).expand(b, k, a_width)  # [B, K, A]
        answer_mask = torch.arange(a_width, device=dev) < a_len[..., None]
        answers = choice_ids.gather(2, idx.clamp(max=choice_ids.shape[2] - 1)).masked_fill(~answer_mask, 0)
        maps: dict[str, Any] | None = {} if record else None
        scores = self.choice_logprobs(self.preprocess(images), prompt, prompt_mask, answers, answer_mask, maps)
        logits = scores.masked_fill(~choice_valid, float("-inf"))
        return VLMOutput(logits=logits[None], maps=maps or {})

    @torch.no_grad()
    def features(self, images: Tensor, question_ids: Tensor | None = None, question_mask: Tensor | None = None,
                 *, iterations: int | None = None, layers: Sequence[int] | None = None) -> Features:
        """The features API of the CLIP pair (probes and analysis): the vision tower's block
        outputs, patch tokens only, T = 1; `image_embeds` is the mean projected image token."""
        if iterations not in (None, 1):
            raise ValueError("a feedforward model runs one iteration; iterations needs a recurrent model")
        vit = self.vision_model
        keep = vit.select_blocks(layers)
        pixels = self.preprocess(images)
        outs, _, grid = vit.block_outputs(pixels)
        img = self.image_features(pixels).mean(1)
        return Features(layers=keep, tokens=vit.patch_stack(outs, keep, grid)[None], grid_size=grid,
                        image_embeds=img[None])

    def loss(self, out: VLMOutput, labels: Tensor) -> dict[str, Tensor]:
        """Cross-entropy over the choices' log-likelihoods; `loss` is the sum of the terms."""
        terms = choice_loss(out.final_logits, labels)
        return {"loss": sum(terms.values()), **terms}

    def image_features(self, pixel_values: Tensor, maps: dict[str, Any] | None = None) -> Tensor:
        """Projected image features [B, num_image_tokens, H] of normalised pixel values; with
        `maps` (a dict), the vision tower's attention maps go to maps["attentions"] ([T=1][layer])."""
        v = self.vision_model(pixel_values, return_hidden=True, return_attention=maps is not None)
        if maps is not None:
            maps["attentions"] = [list(v.attentions)]
        h = v.hidden_states[self.feature_layer]
        if self.select == "default":
            h = h[:, self.vision_model.num_prefix_tokens :]
        return self.multi_modal_projector(h)

    def embed(self, input_ids: Tensor, pixel_values: Tensor, maps: dict[str, Any] | None = None) -> Tensor:
        """Input embeddings [B, L, H] with the image features spliced in at the placeholders."""
        is_image = input_ids == self.image_token_id
        feats = self.image_features(pixel_values, maps)  # [B, N, H]
        per_row = is_image.sum(1)
        if not bool((per_row == feats.shape[1]).all()):
            raise ValueError(f"every sequence needs exactly {feats.shape[1]} image tokens (id {self.image_token_id}); "
                             f"got {per_row.tolist()}")
        embeds = self.lm.get_input_embeddings()(input_ids.masked_fill(is_image, 0))
        return embeds.masked_scatter(is_image[..., None], feats.to(embeds.dtype))

    def forward(self, images: Tensor, choice_ids: Tensor, choice_mask: Tensor, choice_valid: Tensor,
                question_ids: Tensor | None = None, question_mask: Tensor | None = None, *,
                iterations: int | None = None, record: bool = False) -> VLMOutput:
        """Score answer choices (the training and evaluation interface; see `forward_choices`)."""
        if iterations not in (None, 1):
            raise ValueError("a feedforward model runs one iteration; iterations needs a recurrent model")
        if question_ids is None or question_mask is None:
            raise ValueError("the LLaVA pair needs question_ids and question_mask (its prompt)")
        return self.forward_choices(images, choice_ids, choice_mask, choice_valid, question_ids, question_mask, record)

    def lm_logits(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Next-token logits [B, L, V] of prompts with image placeholders (normalised pixels)."""
        position_ids = None if attention_mask is None else (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return self.lm(inputs_embeds=self.embed(input_ids, pixel_values), attention_mask=attention_mask,
                       position_ids=position_ids).logits

    def choice_logprobs(self, pixel_values: Tensor, prompt_ids: Tensor, prompt_mask: Tensor, answer_ids: Tensor,
                        answer_mask: Tensor, maps: dict[str, Any] | None = None) -> Tensor:
        """Log-likelihood [B, K] of each answer choice after its prompt.

        prompt_ids / prompt_mask [B, P] (left-padded, with the image placeholders); answer_ids
        / answer_mask [B, K, A] (right-padded). One LM pass per choice, batched over B x K;
        the image is encoded once per item."""
        b, k, a = answer_ids.shape
        embeds = self.embed(prompt_ids, pixel_values, maps)  # [B, P, H]
        ans = self.lm.get_input_embeddings()(answer_ids)  # [B, K, A, H]
        seq = torch.cat([embeds[:, None].expand(-1, k, -1, -1), ans], dim=2).flatten(0, 1)  # [BK, P+A, H]
        mask = torch.cat([prompt_mask[:, None].expand(-1, k, -1), answer_mask], dim=2).flatten(0, 1).long()
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: positions count real tokens
        logits = self.lm(inputs_embeds=seq, attention_mask=mask, position_ids=position_ids).logits  # [BK, P+A, V]
        p = prompt_ids.shape[1]
        logp = logits[:, p - 1 : p + a - 1].log_softmax(-1)  # predicts answer tokens 0..A-1
        tok = logp.gather(-1, answer_ids.flatten(0, 1)[..., None]).squeeze(-1)  # [BK, A]
        return (tok * answer_mask.flatten(0, 1)).sum(-1).view(b, k)

    @torch.no_grad()
    def generate(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor, *,
                 max_new_tokens: int = 8) -> Tensor:
        """Greedy continuation ids [B, max_new_tokens] (left-padded prompts)."""
        return self.lm.generate(inputs_embeds=self.embed(input_ids, pixel_values), attention_mask=attention_mask,
                                max_new_tokens=max_new_tokens, do_sample=False)

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> LlavaPair:
        """A llava-hf LLaVA-1.5 checkpoint (hub name or local directory) as a LlavaPair."""
        from transformers import AutoConfig, AutoModelForCausalLM, LlavaForConditionalGeneration

        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
        if config.model_type != "llava":
            raise ValueError(f"{name_or_path} is a {config.model_type!r} checkpoint, not llava")
        hf, info = LlavaForConditionalGeneration.from_pretrained(name_or_path, output_loading_info=True,
                                                                 trust_remote_code=False)
        if info["missing_keys"] or info["mismatched_keys"]:
            bad = list(info["missing_keys"]) + [str(m) for m in info["mismatched_keys"]]
            raise StateDictMismatchError(f"{name_or_path} does not fill LlavaForConditionalGeneration: "
                                         f"missing or mismatched keys [{_first_few(bad)}]")
        fl = config.vision_feature_layer
        feature_layers = list(fl) if isinstance(fl, (list, tuple)) else [fl]
        if len(feature_layers) != 1:
            raise ValueError(f"{name_or_path}: vision_feature_layer={fl}; supported: one layer")
        act = getattr(config, "projector_hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"{name_or_path}: projector_hidden_act={act!r}; supported: gelu")
        state = hf.state_dict()
        vision = VisionTransformer(**vision_kwargs_from_hf_config(config.vision_config))
        load_state_dict_strict(vision, {k.removeprefix("model.vision_tower."): v for k, v in state.items()
                                        if k.startswith("model.vision_tower.") and not k.endswith("position_ids")},
                               source=str(name_or_path))
        lm = AutoModelForCausalLM.from_config(config.text_config)
        lm_state = {("model." + k.removeprefix("model.language_model.")): v for k, v in state.items()
                    if k.startswith("model.language_model.")}
        lm_state.update({k: v for k, v in state.items() if k.startswith("lm_head.")})
        if getattr(config.text_config, "tie_word_embeddings", False) and "lm_head.weight" not in lm_state:
            lm_state["lm_head.weight"] = lm_state["model.embed_tokens.weight"]
        load_state_dict_strict(lm, lm_state, source=str(name_or_path))
        n_proj = sum(1 for k in state if k.startswith("model.multi_modal_projector.linear_") and k.endswith(".weight"))
        # pixel statistics of the checkpoint's image processor (else its tower family's); inputs
        # resized to the tower's resolution
        siglip = config.vision_config.model_type.startswith("siglip")
        preprocessing = {"image_resize": vision.image_size,
                         **image_statistics(name_or_path, mean=SIGLIP_MEAN if siglip else CLIP_MEAN,
                                            std=SIGLIP_STD if siglip else CLIP_STD)}
        pair = cls(vision=vision, lm=lm, image_token_id=config.image_token_index,
                   projector="linear" if n_proj == 1 else f"mlp{n_proj}x_gelu",
                   feature_layer=int(feature_layers[0]),
                   select="default" if config.vision_feature_select_strategy == "default" else "full",
                   **{**preprocessing, **kwargs})
        load_state_dict_strict(pair.multi_modal_projector,
                               {k.removeprefix("model.multi_modal_projector."): v for k, v in state.items()
                                if k.startswith("model.multi_modal_projector.")}, source=str(name_or_path))
        return pair.eval()
