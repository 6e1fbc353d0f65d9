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

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ..data.image_text import IGNORE_INDEX
from .matching import OptimizedModule



def lm_loss(logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Next-token cross-entropy: logits [B, L, V] at position i predict labels [B, L] at i + 1;
    IGNORE_INDEX labels (prompt, image, padding) are skipped; the mean is over the tokens that
    count. A batch with none gives 0 (not NaN)."""
    target = labels[:, 1:]
    total = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), target.flatten(), ignore_index=IGNORE_INDEX,
                            reduction="sum")
    return {"lm_loss": total / (target != IGNORE_INDEX).sum().clamp(min=1)}


class PretrainModule(OptimizedModule):
    """What both pretraining objectives share besides `OptimizedModule`'s optimizer groups with
    lr_mult, parts table, scheduler and checkpoint entry: the skipped-item count and the epoch
    handed to a reshuffling dataset.
    """

    def __init__(self, **kwargs: Any) -> None:  # model, optimizer, scheduler, ...: see OptimizedModule
        super().__init__(**kwargs)
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
