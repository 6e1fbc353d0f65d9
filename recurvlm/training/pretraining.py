"""LightningModules for image-text pretraining: contrastive (CLIP pair) and next-token (LLaVA pair).

Both are thin: the loss comes from the model's public API (`CLIPPair.contrastive_loss`;
`LlavaPair.lm_logits` with cross-entropy on the assistant tokens only), the optimizer groups
from `matching.param_groups` (so `model.lr_mult`, and the `stage` configs that set it, freeze
and scale parts here exactly as in recurvlm-train), and checkpoints carry the same
`checkpoint["recurvlm"]` entry as `MatchingModule`'s, so `checkpoints.model_from_checkpoint`
rebuilds the network and `recurvlm-train init_from=<ckpt>` fine-tunes from it.

Logged: `train/<term>` for every named loss term, and `train/skipped`, the items the data
skipped (missing or corrupt images, incomplete shard samples) since the run started, summed
over DDP ranks.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.image_text import IGNORE_INDEX
from .matching import FAMILY, param_groups, parts_table

log = logging.getLogger(__name__)


def lm_loss(logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Next-token cross-entropy: logits [B, L, V] at position i predict labels [B, L] at i + 1;
    IGNORE_INDEX labels (prompt, image, padding) are skipped; the mean is over the tokens that
    count. A batch with none gives 0 (not NaN)."""
    target = labels[:, 1:]
    total = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), target.flatten(), ignore_index=IGNORE_INDEX,
                            reduction="sum")
    return {"lm_loss": total / (target != IGNORE_INDEX).sum().clamp(min=1)}


class PretrainModule(L.LightningModule):
    """What both pretraining objectives share: optimizer groups with lr_mult, the parts table,
    the skipped-item count, the epoch handed to a reshuffling dataset, and the checkpoint entry.

    optimizer / scheduler: partials as in `MatchingModule` (weight decay and lr read from the
    optimizer's keywords). parts_path: also write the parts table there (e.g. `<run>/parts.md`).
    """

    def __init__(self, *, model: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, model_config: dict[str, Any] | None = None,
                 tokenizer_state: dict[str, Any] | None = None, lr_mult: Mapping[str, float] | None = None,
                 parts_path: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.model_config, self.tokenizer_state = model_config, tokenizer_state
        self.lr_mult = dict(lr_mult or {})
        self.parts_path = parts_path
        self.skipped = 0  # items the data skipped since this run started (this rank)

    def loss(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Named loss terms of a batch; `loss` is what is optimised."""
        raise NotImplementedError

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        self.skipped += int(batch["skipped"])
        self.log("train/skipped", float(self.skipped), on_step=True, on_epoch=False, reduce_fx="sum",
                 sync_dist=True, batch_size=1)
        n = len(batch["image"])
        if n == 0:  # every item of the batch was skipped: nothing to learn from
            return None
        terms = self.loss(batch)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=n, prog_bar=(name == "loss"))
        return terms["loss"]

    def on_train_epoch_start(self) -> None:
        # an iterable dataset (tar shards) reshuffles per epoch; Lightning only tells samplers
        set_epoch = getattr(getattr(self.trainer.train_dataloader, "dataset", None), "set_epoch", None)
        if callable(set_epoch):
            set_epoch(self.current_epoch)

    def configure_optimizers(self):
        kw = getattr(self.optimizer_factory, "keywords", {})
        wd, lr = kw.get("weight_decay", 0.0), kw.get("lr")
        opt = self.optimizer_factory(params=param_groups(self.model, wd, lr, self.lr_mult))
        table = parts_table(self.model, lr, self.lr_mult)
        log.info("parts:\n%s", table)
        if self.parts_path is not None:
            Path(self.parts_path).write_text(table + "\n")
        if self.scheduler_factory is None:
            return opt
        kwargs = {}
        if getattr(self.scheduler_factory, "keywords", {}).get("total_steps", 0) is None:
            steps = self.trainer.estimated_stepping_batches
            if not math.isfinite(steps):
                raise ValueError("optim.scheduler.total_steps=null needs a known run length: the data has none "
                                 "(tar shards), so set trainer.max_steps or optim.scheduler.total_steps")
            kwargs["total_steps"] = int(steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=opt, **kwargs),
                                                   "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["recurvlm"] = {"family": FAMILY, "model_config": self.model_config,
                                  "tokenizer": self.tokenizer_state}


class ContrastiveModule(PretrainModule):
    """CLIP pair on image-caption batches (`CaptionCollate`): InfoNCE, or SigLIP's sigmoid loss
    when the model has a logit bias. Only the feedforward sweep is pretrained (`encode_image`):
    a recurrent variant's top-down module keeps its near-zero initialisation."""

    def loss(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        terms = self.model.contrastive_loss(batch["image"], batch["input_ids"], batch["attention_mask"])
        return {"loss": sum(terms.values()), **terms}


class LanguageModelingModule(PretrainModule):
    """LLaVA pair on conversation batches (`ConversationCollate`): cross-entropy on the
    assistant tokens only, through `LlavaPair.lm_logits` (images spliced in at the placeholders)."""

    def loss(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        logits = self.model.lm_logits(self.model.preprocess(batch["image"]), batch["input_ids"],
                                      batch["attention_mask"])  # [B, L, V]
        terms = lm_loss(logits, batch["labels"])
        return {"loss": sum(terms.values()), **terms}
