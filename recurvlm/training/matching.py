"""The LightningModule of the CLIP-style family: one shared step for train, val and test.

Logs every named loss term as `split/<name>`, accuracy as `split/acc`, per task as
`split/acc/<task>` and per difficulty as `split/acc/<task>/<level>` (torchmetrics, so the
numbers are right under DDP). Test steps also keep one record per item for
`predictions.jsonl`. Checkpoints carry the model's config and tokenizer as plain data
(`checkpoint["recurvlm"]`), so they rebuild and load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from ..models.lora import is_adapter
from ..models.losses import dense_loss

FAMILY = "clip"
log = logging.getLogger(__name__)


def _key(name: str) -> str:
    """A ModuleDict key for a metric name ('.' is not allowed in module names)."""
    return name.replace(".", "·")


def part_of(name: str, lr_mult: Mapping[str, float]) -> str | None:
    """The longest lr_mult prefix (a module path) that parameter `name` lies under, or None."""
    matches = [k for k in lr_mult if name == k or name.startswith(k + ".")]
    return max(matches, key=len) if matches else None


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None,
                 lr_mult: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Optimizer groups: matrices decay; biases, norms, embeddings and logit scale/bias do not.

    lr_mult maps parameter-name prefixes (a module path such as "text_model" or
    "vision_model.encoder.layers.0") to a factor on `lr`; the longest matching prefix wins, and
    a factor of 0 freezes those parameters (requires_grad=False, left out of the optimizer).
    A prefix that matches no parameter is an error naming the model's top-level parts.
    lr_mult never unfreezes: parameters already frozen (a LoRA-wrapped LM's base weights, frozen
    by peft) stay frozen. LoRA adapters under a prefix take its factor as the scale of their lr,
    and a factor of 0 on them is an error: it would leave the adapted part with nothing to train.
    """
    lr_mult = dict(lr_mult or {})
    names = [n for n, _ in model.named_parameters()]
    for prefix, factor in lr_mult.items():
        if not any(part_of(n, {prefix: factor}) for n in names):
            parts = sorted({n.split(".")[0] for n in names})
            raise KeyError(f"lr_mult: {prefix!r} names no parameters of {type(model).__name__}; "
                           f"top-level parts: {', '.join(parts)}")
        if not (isinstance(factor, (int, float)) and factor >= 0):
            raise ValueError(f"lr_mult.{prefix}={factor!r}; valid: a number >= 0 (0 freezes)")
    if lr_mult and lr is None:
        raise ValueError("lr_mult needs the optimizer's lr")
    for name in names:
        part = part_of(name, lr_mult)
        if part is not None and lr_mult[part] == 0 and is_adapter(name):
            raise ValueError(f"lr_mult.{part}=0 would freeze its LoRA adapters ({name}); peft already freezes "
                             f"the base weights under them: drop lr_mult.{part}, or give a factor > 0 to scale "
                             f"the adapters' lr")
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        part = part_of(name, lr_mult)
        factor = float(lr_mult[part]) if part is not None else 1.0
        if factor == 0.0:
            p.requires_grad_(False)
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and "embedding" not in name
        groups.setdefault((factor, decay), []).append(p)
    out = []
    for (factor, decay), params in sorted(groups.items(), key=lambda kv: (-kv[0][0], not kv[0][1])):
        group: dict[str, Any] = {"params": params, "weight_decay": weight_decay if decay else 0.0}
        if lr is not None and factor != 1.0:
            group["lr"] = lr * factor
        out.append(group)
    return out


def parts_table(model: nn.Module, lr: float | None = None, lr_mult: Mapping[str, float] | None = None) -> str:
    """A markdown table of the model's parts (top-level modules, and any lr_mult prefix):
    parameters, trainable parameters and learning rate. LoRA adapters get rows of their own,
    `<part> (lora)`, beside the base weights they wrap (`<part>`)."""
    lr_mult = dict(lr_mult or {})
    rows: dict[str, list[Any]] = {}
    for name, p in model.named_parameters():
        part = part_of(name, lr_mult) or name.split(".")[0]
        label = f"{part} (lora)" if is_adapter(name) else part
        row = rows.setdefault(label, [0, 0, lr_mult.get(part, 1.0)])
        row[0] += p.numel()
        row[1] += p.numel() if p.requires_grad else 0
    lines = ["| part | params | trainable | lr |", "|---|---:|---:|---:|"]
    for part, (n, t, f) in rows.items():
        rate = "frozen" if t == 0 else (f"{lr * f:.3g}" if lr is not None else f"x{f:g}")
        lines.append(f"| {part} | {n:,} | {t:,} | {rate} |")
    return "\n".join(lines)


class OptimizedModule(L.LightningModule):
    """What every recurvlm LightningModule shares: the optimizer groups (`param_groups` with
    `lr_mult`), the parts table (logged, and written to `parts_path`, e.g. `<run>/parts.md`, so a
    run dir shows what trained), the scheduler, and the checkpoint entry
    (`checkpoint["recurvlm"]`: the model config and tokenizer as plain data).

    optimizer: a partial (Hydra `_partial_: true`) taking `params`; weight decay is read
    from it and applied to matrices only. scheduler: a partial taking `optimizer`, or None; a
    `total_steps=None` keyword is filled in from the run's length.
    """

    def __init__(self, *, model: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, model_config: dict[str, Any] | None = None,
                 tokenizer_state: dict[str, Any] | None = None, lr_mult: Mapping[str, float] | None = None,
                 parts_path: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.model_config, self.tokenizer_state = model_config, tokenizer_state
        self.lr_mult = dict(lr_mult or {})  # name prefix -> factor on lr (0 freezes); see param_groups
        self.parts_path = None if parts_path is None else Path(parts_path)

    def configure_optimizers(self):
        kw = getattr(self.optimizer_factory, "keywords", {})
        wd, lr = kw.get("weight_decay", 0.0), kw.get("lr")
        opt = self.optimizer_factory(params=param_groups(self.model, wd, lr, self.lr_mult))
        table = parts_table(self.model, lr, self.lr_mult)
        log.info("parts:\n%s", table)
        if self.parts_path is not None and self.global_rank == 0:
            self.parts_path.parent.mkdir(parents=True, exist_ok=True)
            self.parts_path.write_text(table + "\n")
        if self.scheduler_factory is None:
            return opt
        kwargs = {}
        if "total_steps" in getattr(self.scheduler_factory, "keywords", {}) and self.scheduler_factory.keywords["total_steps"] is None:
            steps = self.trainer.estimated_stepping_batches
            if not math.isfinite(steps):
                raise ValueError("optim.scheduler.total_steps=null needs a known run length: the data has none "
                                 "(e.g. tar shards), so set trainer.max_steps or optim.scheduler.total_steps")
            kwargs["total_steps"] = int(steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=opt, **kwargs),
                                                   "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["recurvlm"] = {"family": FAMILY, "model_config": self.model_config,
                                  "tokenizer": self.tokenizer_state}


class MatchingModule(OptimizedModule):
    """Trains and evaluates a model that scores answer choices (`CLIPPair`, `LlavaPair` and
    their recurrent variants). Optimizer, scheduler, lr_mult, parts_path: see `OptimizedModule`.
    """

    def __init__(self, *, model: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, model_config: dict[str, Any] | None = None,
                 tokenizer_state: dict[str, Any] | None = None, eval_iterations: int | None = None,
                 test_iterations: int | None = None, seed: int = 0,
                 lr_mult: Mapping[str, float] | None = None, parts_path: str | os.PathLike | None = None) -> None:
        super().__init__(model=model, optimizer=optimizer, scheduler=scheduler, model_config=model_config,
                         tokenizer_state=tokenizer_state, lr_mult=lr_mult, parts_path=parts_path)
        # T at validation and test (any T for a recurrent model; None: the training T)
        self.eval_iterations, self.seed = eval_iterations, seed
        self.test_iterations = test_iterations  # T at test (None: eval_iterations), e.g. 4x the training T
        self.acc = nn.ModuleDict({f"{s}_acc": MeanMetric() for s in ("train", "val", "test")})
        self.group_acc = nn.ModuleDict()
        self.group_names: dict[str, str] = {}
        self.test_records: list[dict[str, Any]] = []

    # --- groups --------------------------------------------------------------------

    def register_groups(self, groups: Iterable[tuple[str, str]]) -> None:
        """Create per-task and per-(task, level) accuracy metrics for val and test."""
        for task, level in groups:
            for name in (f"acc/{task}", f"acc/{task}/{level}"):
                for split in ("val", "test"):
                    key = _key(f"{split}/{name}")
                    if key not in self.group_acc:
                        self.group_acc[key] = MeanMetric()
                        self.group_names[key] = f"{split}/{name}"

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "eval_groups"):
            self.register_groups(dm.eval_groups())

    # --- steps -----------------------------------------------------------------------

    def forward(self, batch: dict[str, Any], **kwargs: Any):
        return self.model(batch["image"], batch["choice_ids"], batch["choice_mask"], batch["choice_valid"],
                          batch.get("question_ids"), batch.get("question_mask"), **kwargs)

    def progressive_split(self, iterations: int) -> tuple[int, int]:
        """(n, k) of the progressive loss (Bansal et al. 2022): n ~ U{0..T-1} iterations
        without gradient, then k ~ U{1..T-n} with; a pure function of (seed, global step),
        so a resumed run draws the same split."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.global_step))
        n = int(torch.randint(0, iterations, (1,), generator=g))
        k = int(torch.randint(1, iterations - n + 1, (1,), generator=g))
        return n, k

    def _step(self, batch: dict[str, Any], split: str) -> Tensor:
        recurrent = getattr(self.model, "recurrent", False)
        iterations = self.test_iterations if (split == "test" and self.test_iterations) else self.eval_iterations
        out = self(batch, iterations=iterations) if (split != "train" and recurrent) else self(batch)
        terms = self.model.loss(out, batch["label"])
        if split == "train" and recurrent and self.model.loss_mode == "progressive" and self.model.iterations > 1:
            prog = self(batch, progressive=self.progressive_split(self.model.iterations))
            alpha = self.model.progressive_alpha
            terms["progressive_loss"] = self.model.loss(prog, batch["label"])["choice_loss"]
            terms["loss"] = (1 - alpha) * terms["choice_loss"] + alpha * terms["progressive_loss"]
        self._dense_term(out, batch, split, terms)
        bs = len(batch["label"])
        for name, value in terms.items():
            self.log(f"{split}/{name}", value, batch_size=bs, prog_bar=(name == "loss"), sync_dist=split != "train")
        pred = out.final_logits.argmax(-1)
        correct = (pred == batch["label"]).float()
        self.acc[f"{split}_acc"].update(correct)
        self.log(f"{split}/acc", self.acc[f"{split}_acc"], batch_size=bs, prog_bar=True, on_step=False, on_epoch=True)
        if split != "train":
            self._update_groups(split, batch, correct)
        if split == "test":
            self._record(batch, out.logits, pred)
        return terms["loss"]

    def _dense_term(self, out: Any, batch: dict[str, Any], split: str, terms: dict[str, Tensor]) -> None:
        """Add the optional dense loss (a model with a dense head; maps from data.dense_maps)
        to `terms`, weighted by the model's dense_weight; identical for every model family."""
        logits = getattr(out, "dense_logits", None)
        if logits is None:
            return
        if "dense_maps" not in batch:
            if split == "train":
                raise ValueError("model.net.dense_weight > 0 needs the maps to supervise: set data.dense_maps "
                                 "(task -> map name), e.g. {curve_tracing: target_curve, maze: path}")
            return
        mode = "mean" if getattr(self.model, "loss_mode", "last") == "mean" else "last"
        term = dense_loss(logits, batch["dense_maps"], batch["dense_valid"], mode)["dense_loss"]
        terms["dense_loss"] = term
        terms["loss"] = terms["loss"] + self.model.dense_weight * term

    def _update_groups(self, split: str, batch: dict[str, Any], correct: Tensor) -> None:
        for i, (task, level) in enumerate(zip(batch["task"], batch["level"])):
            for name in (f"acc/{task}", f"acc/{task}/{level}"):
                key = _key(f"{split}/{name}")
                if key not in self.group_acc:  # a group the datamodule did not announce
                    self.group_acc[key] = MeanMetric().to(self.device)
                    self.group_names[key] = f"{split}/{name}"
                self.group_acc[key].update(correct[i])

    def _record(self, batch: dict[str, Any], all_logits: Tensor, pred: Tensor) -> None:
        """One record per item; `iterations` lists the prediction's correctness at every t."""
        probs = torch.softmax(all_logits[-1].float(), dim=-1)
        per_iter = (all_logits.argmax(-1) == batch["label"][None]).T.tolist()  # [B][T]
        for i, choices in enumerate(batch["choices"]):
            p = int(pred[i])
            self.test_records.append({
                "id": batch["id"][i], "task": batch["task"][i], "level": batch["level"][i],
                "question": batch["question"][i], "choices": choices, "answer": batch["answer"][i],
                "prediction": choices[p], "correct": choices[p] == batch["answer"][i],
                "probs": [round(float(x), 6) for x in probs[i, : len(choices)]],
                "iterations": per_iter[i],
            })

    def _log_groups(self, split: str) -> None:
        for key, metric in self.group_acc.items():
            if self.group_names[key].startswith(split + "/") and metric.update_count > 0:
                self.log(self.group_names[key], metric.compute(), sync_dist=False)
                metric.reset()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_groups("val")

    def on_test_epoch_start(self) -> None:
        self.test_records = []

    def on_test_epoch_end(self) -> None:
        self._log_groups("test")

