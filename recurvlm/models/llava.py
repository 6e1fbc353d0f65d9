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

Recurrent top-down variant: the same class with a `top_down` module (`topdown.TopDown`, as in
the CLIP pair). The query is the LM's reading of the question, text only: the LM's last hidden
state averaged over the question's real tokens (the mean rather than the last token: every
token's reading counts, wherever a tokenizer puts <eos> or padding, and the last position's
state is shaped for predicting the next token rather than for summarising). It gates the
per-token state that feeds back into the ViT for `iterations` sweeps. Every sweep gives image
features, the tower's hidden state at `feature_layer` under that sweep's feedback (the stream
block `feature_layer` reads, after any feedback entering there; `-2`: the penultimate block's
output) projected by the projector, plus the state's per-token readout (a zero-initialised
projection into the LM's embedding space, added to the projected patch tokens: LLaVA has no
pooled embedding to add to), and the LM scores the choices after them exactly as the
feedforward pair does: an answer at every iteration. At initialisation the first iteration is
the feedforward pair (with `add` or `gain` feedback every iteration is). Without `top_down` the
model is the feedforward baseline (T = 1).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .clip import CLIP_MEAN, CLIP_STD, SIGLIP_MEAN, SIGLIP_STD, pixel_values
from .outputs import Features, VLMOutput
from .pretrained import (
    StateDictMismatchError,
    _first_few,
    image_statistics,
    load_state_dict_strict,
    vision_kwargs_from_hf_config,
)
from .topdown import Carry, TopDown, check_loop, iteration_loss, run_loop
from .vit import VisionTransformer

SELECT = ("default", "full")


@dataclass
class ChoicePrompt:
    """A batch's prompts and answer choices laid out for the LM (built once per batch, read by
    every iteration): prompt_ids / prompt_mask [B, P] left-padded, with `num_image_tokens`
    image placeholders; answers / answer_mask [B, K, A] right-padded; valid [B, K]."""

    prompt_ids: Tensor
    prompt_mask: Tensor
    answers: Tensor
    answer_mask: Tensor
    valid: Tensor


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
                 image_resize: int | None = None, top_down: dict[str, Any] | None = None, iterations: int = 1,
                 loss: str = "last", progressive_alpha: float = 0.5, lora: dict[str, Any] | None = None) -> None:
        super().__init__()
        check_loop(top_down, iterations, loss)
        if lora:  # LoRA adapters through peft (`lora.with_lora` kwargs); the LM's weights are already in place
            from .lora import with_lora

            lm = with_lora(lm, **dict(lora))
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
        # the image features are hidden_states[feature_layer]: the stream block `stream` reads (0: the embeddings)
        self.stream = feature_layer % (vision.depth + 1)
        self.top_down = (TopDown(vision=vision, query_width=hidden, embed_dim=hidden, **top_down)
                         if top_down is not None else None)
        if self.top_down is not None and self.stream == 0 and self.top_down.feedback.first_layer > 0:
            raise ValueError(f"feature_layer={feature_layer} reads the patch embeddings, below the first feedback "
                             f"layer {self.top_down.feedback.first_layer}: feedback could never reach the LM's image "
                             f"tokens; choose a later feature_layer or top_down.layers including 0")
        self.iterations, self.loss_mode, self.progressive_alpha = iterations, loss, progressive_alpha

    @property
    def recurrent(self) -> bool:
        return self.top_down is not None

    @property
    def num_image_tokens(self) -> int:
        """Placeholders per image: one per patch (+1 with the class token kept)."""
        return self.vision_model.num_patches + (self.vision_model.num_prefix_tokens if self.select == "full" else 0)

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 [B, 3, H, W] (or float in [0, 1]) -> normalised float pixel values."""
        return pixel_values(images, self.image_mean, self.image_std, self.image_resize)

    def choice_prompt(self, choice_ids: Tensor, choice_mask: Tensor, choice_valid: Tensor,
                      question_ids: Tensor) -> ChoicePrompt:
        """The LM layout of a batch of choices (what every iteration scores): each choice
        "<question> <answer>" [B, K, L] becomes a prompt [image tokens, question] and its answer
        tokens. The answer is what follows the longest prefix the choice shares with the question
        alone [B, L], so any tokenizer that encodes "<question> <answer>" as the question's tokens
        followed by the answer's works.

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
        return ChoicePrompt(prompt_ids=prompt, prompt_mask=prompt_mask, answers=answers, answer_mask=answer_mask,
                            valid=choice_valid)

    def score(self, image_features: Tensor, prompt: ChoicePrompt) -> Tensor:
        """Choice logits [B, K]: the log-likelihood of each answer after [image features
        [B, num_image_tokens, H], question]; padding choices -inf."""
        scores = self.choice_logprobs_given(image_features, prompt.prompt_ids, prompt.prompt_mask, prompt.answers,
                                            prompt.answer_mask)
        return scores.masked_fill(~prompt.valid, float("-inf"))

    def forward_choices(self, images: Tensor, choice_ids: Tensor, choice_mask: Tensor, choice_valid: Tensor,
                        question_ids: Tensor, question_mask: Tensor, record: bool = False) -> VLMOutput:
        """The feedforward matching interface of the CLIP pair: each choice (see `choice_prompt`)
        scored by the log-likelihood of its answer tokens after [image tokens, question].
        `image_embeds` [1, B, H] is the mean projected image token."""
        prompt = self.choice_prompt(choice_ids, choice_mask, choice_valid, question_ids)
        maps: dict[str, Any] | None = {} if record else None
        feats = self.image_features(self.preprocess(images), maps)  # [B, N, H]
        return VLMOutput(logits=self.score(feats, prompt)[None], image_embeds=feats.mean(1)[None], maps=maps or {})

    # --- the recurrent variant (top_down) ------------------------------------------------------

    def read_question(self, question_ids: Tensor, question_mask: Tensor) -> Tensor:
        """The LM's reading of the question, the recurrent variant's query [B, H]: its last hidden
        state (transformers' `hidden_states[-1]`, what the LM head reads) averaged over the
        question's real tokens, text only (an image placeholder of a prompt template is left out)."""
        mask = question_mask.bool() & (question_ids != self.image_token_id)  # [B, L]
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        h = self.lm(input_ids=question_ids.masked_fill(~mask, 0), attention_mask=mask.long(),
                    position_ids=position_ids, output_hidden_states=True).hidden_states[-1]  # [B, L, H]
        m = mask[..., None].to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1)

    def start(self, images: Tensor, question_ids: Tensor | None, question_mask: Tensor | None, *,
              record: bool = False) -> Carry:
        """Begin the recurrent loop: the query and the feedback-free lower layers (every block's
        output kept: the image features are read from them)."""
        if self.top_down is None:
            raise ValueError("start/step need a top_down module")
        if question_ids is None or question_mask is None:
            raise ValueError("the recurrent variant needs question_ids and question_mask (the query)")
        query = self.read_question(question_ids, question_mask)  # [B, H]
        return self.top_down.start(self.vision_model, self.preprocess(images), query, record=record,
                                   keep_outputs=True)

    def sweep(self, carry: Carry) -> tuple[Tensor, Carry]:
        """One iteration of the loop up to the LM: (projected image features [B, num_image_tokens,
        H] of this sweep, the next carry). The features are hidden_states[feature_layer] of the
        sweep, with the feedback that entered that stream (driven by the previous state), plus
        the per-token readout of the state this sweep produced."""
        assert self.top_down is not None
        vit, td = self.vision_model, self.top_down
        previous = carry.state
        _, state, carry = td.iterate(vit, carry)
        assert carry.low_outputs is not None and carry.outputs is not None
        outs = carry.low_outputs + carry.outputs  # every block's output, in order
        x = carry.low if self.stream == 0 else outs[self.stream - 1]  # the stream block `stream` reads
        if previous is not None and self.stream < vit.depth:
            x = td.feedback.hook(previous)(self.stream, x)  # feedback entering that block (a no-op elsewhere)
        p, n = vit.num_prefix_tokens, vit.num_prefix_tokens + state.shape[1]
        h = x[:, p:n] if self.select == "default" else x[:, :n]  # appended feedback tokens dropped
        read = td.readout(state)  # [B, N_patches, H]
        if self.select == "full":
            read = F.pad(read, (0, 0, p, 0))  # nothing added to the class token
        return self.multi_modal_projector(h) + read, carry

    def step(self, carry: Carry, prompt: ChoicePrompt) -> tuple[tuple[Tensor, Tensor], Carry]:
        """One iteration: ((choice logits [B, K], mean projected image token [B, H]), the next carry)."""
        feats, carry = self.sweep(carry)
        return (self.score(feats, prompt), feats.mean(1)), carry

    def forward(self, images: Tensor, choice_ids: Tensor, choice_mask: Tensor, choice_valid: Tensor,
                question_ids: Tensor | None = None, question_mask: Tensor | None = None, *,
                iterations: int | None = None, record: bool = False,
                progressive: tuple[int, int] | None = None) -> VLMOutput:
        """Score answer choices at every iteration (the training and evaluation interface; the
        arguments as `CLIPPair.forward`): logits [T, B, K], image_embeds [T, B, H] (the mean
        projected image token). `iterations` overrides T (any T at test time); `record` keeps
        per-iteration attention, feedback and state maps; `progressive=(n, k)`: n iterations
        without gradient, then k with, returning the k (Bansal et al. 2022)."""
        if question_ids is None or question_mask is None:
            raise ValueError("the LLaVA pair needs question_ids and question_mask (its prompt)")
        if self.top_down is None:
            if iterations not in (None, 1) or progressive is not None:
                raise ValueError("a feedforward model runs one iteration; iterations/progressive need top_down")
            return self.forward_choices(images, choice_ids, choice_mask, choice_valid, question_ids, question_mask,
                                        record)
        prompt = self.choice_prompt(choice_ids, choice_mask, choice_valid, question_ids)
        carry = self.start(images, question_ids, question_mask, record=record)
        outs, carry = run_loop(lambda c: self.step(c, prompt), carry,
                               self.iterations if iterations is None else iterations, progressive)
        logits, embeds = zip(*outs)
        return VLMOutput(logits=torch.stack(logits), image_embeds=torch.stack(embeds), state=carry.state,
                         maps=carry.maps)

    @torch.no_grad()
    def features(self, images: Tensor, question_ids: Tensor | None = None, question_mask: Tensor | None = None,
                 *, iterations: int | None = None, layers: Sequence[int] | None = None) -> Features:
        """The features API of the CLIP pair (probes and analysis): the vision tower's block
        outputs, patch tokens only, per iteration; `image_embeds` is the mean projected image token
        (with the state's readout) of each iteration, `state` the state grid. A recurrent model
        needs the question (its query) and runs `iterations` sweeps (default: the training T)."""
        vit = self.vision_model
        keep = vit.select_blocks(layers)
        pixels = self.preprocess(images)
        if self.top_down is None:
            if iterations not in (None, 1):
                raise ValueError("a feedforward model runs one iteration; iterations needs a recurrent model")
            outs, _, grid = vit.block_outputs(pixels)
            img = self.image_features(pixels).mean(1)
            return Features(layers=keep, tokens=vit.patch_stack(outs, keep, grid)[None], grid_size=grid,
                            image_embeds=img[None])
        carry = self.start(images, question_ids, question_mask)
        tokens, states, embeds = [], [], []
        for _ in range(self.iterations if iterations is None else iterations):
            feats, carry = self.sweep(carry)
            assert carry.low_outputs is not None and carry.outputs is not None
            tokens.append(vit.patch_stack(carry.low_outputs + carry.outputs, keep, carry.grid_size))
            states.append(carry.state)
            embeds.append(feats.mean(1))
        return Features(layers=keep, tokens=torch.stack(tokens), grid_size=carry.grid_size,
                        image_embeds=torch.stack(embeds), state=torch.stack(states))

    def loss(self, out: VLMOutput, labels: Tensor) -> dict[str, Tensor]:
        """Cross-entropy over the choices' log-likelihoods; `loss` is the sum of the terms. With
        T > 1 iterations: on the last iteration (`last`) or the mean over iterations (`mean`);
        `progressive` adds its own term in the training step."""
        terms = iteration_loss(out.logits, labels, self.loss_mode)
        return {"loss": sum(terms.values()), **terms}

    # --- the feedforward pieces --------------------------------------------------------------

    def image_features(self, pixel_values: Tensor, maps: dict[str, Any] | None = None) -> Tensor:
        """Projected image features [B, num_image_tokens, H] of normalised pixel values (the
        feedforward sweep); with `maps` (a dict), the vision tower's attention maps go to
        maps["attentions"] ([T=1][layer])."""
        v = self.vision_model(pixel_values, return_hidden=True, return_attention=maps is not None)
        if maps is not None:
            maps["attentions"] = [list(v.attentions)]
        h = v.hidden_states[self.feature_layer]
        if self.select == "default":
            h = h[:, self.vision_model.num_prefix_tokens :]
        return self.multi_modal_projector(h)

    def embed(self, input_ids: Tensor, pixel_values: Tensor, maps: dict[str, Any] | None = None) -> Tensor:
        """Input embeddings [B, L, H] with the image features spliced in at the placeholders."""
        return self.splice(input_ids, self.image_features(pixel_values, maps))

    def splice(self, input_ids: Tensor, image_features: Tensor) -> Tensor:
        """Input embeddings [B, L, H] of ids with image placeholders, the placeholders replaced by
        image features [B, N, H] (a masked scatter)."""
        is_image = input_ids == self.image_token_id
        per_row = is_image.sum(1)
        if not bool((per_row == image_features.shape[1]).all()):
            raise ValueError(f"every sequence needs exactly {image_features.shape[1]} image tokens "
                             f"(id {self.image_token_id}); got {per_row.tolist()}")
        embeds = self.lm.get_input_embeddings()(input_ids.masked_fill(is_image, 0))
        return embeds.masked_scatter(is_image[..., None], image_features.to(embeds.dtype))

    def lm_logits(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Next-token logits [B, L, V] of prompts with image placeholders (normalised pixels)."""
        position_ids = None if attention_mask is None else (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return self.lm(inputs_embeds=self.embed(input_ids, pixel_values), attention_mask=attention_mask,
                       position_ids=position_ids).logits

    def choice_logprobs(self, pixel_values: Tensor, prompt_ids: Tensor, prompt_mask: Tensor, answer_ids: Tensor,
                        answer_mask: Tensor, maps: dict[str, Any] | None = None) -> Tensor:
        """Log-likelihood [B, K] of each answer choice after its prompt (normalised pixels; see
        `choice_logprobs_given`)."""
        return self.choice_logprobs_given(self.image_features(pixel_values, maps), prompt_ids, prompt_mask,
                                          answer_ids, answer_mask)

    def choice_logprobs_given(self, image_features: Tensor, prompt_ids: Tensor, prompt_mask: Tensor,
                              answer_ids: Tensor, answer_mask: Tensor) -> Tensor:
        """Log-likelihood [B, K] of each answer choice after its prompt, given the image features.

        prompt_ids / prompt_mask [B, P] (left-padded, with the image placeholders); answer_ids
        / answer_mask [B, K, A] (right-padded). One LM pass per choice, batched over B x K;
        the image is encoded once per item."""
        b, k, a = answer_ids.shape
        embeds = self.splice(prompt_ids, image_features)  # [B, P, H]
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
