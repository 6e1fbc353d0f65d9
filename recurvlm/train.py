"""`recurvlm-train` (also `python -m recurvlm.train`): train on stimulus tasks, then test.

Hydra composes `conf/train.yaml`; every object is built from its `_target_` here, at the
edge. Outputs go to the run dir: checkpoints/{last,best-*}.ckpt, csv/ (always), wandb/
(when on), parts.md (what trains: the parts table), metrics.json and predictions.jsonl of
the test of the best checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from .config import CONFIG_DIR, register_resolvers, to_plain
from .models.tokenizer import tokenizer_from_dict
from .training.checkpoints import CheckpointError, check_fits, find_last, load_checkpoint, load_net_state
from .training.evaluation import format_table, write_outputs
from .training.matching import FAMILY, MatchingModule

log = logging.getLogger("recurvlm.train")
register_resolvers()


def build_model(model_cfg: DictConfig | dict[str, Any], tokenizer: Any, prompt: str | None = None):
    """The network from its config, after checking the tokenizer's vocabulary fits it. A LLaVA
    pair's image token lies above the tokenizer's ids, or, when the prompt template holds the
    `<image>` placeholder, is the id the tokenizer gives it (llava-hf's tokenizers own it)."""
    net = instantiate(model_cfg)
    vocab = getattr(getattr(net, "text_model", None), "vocab_size", None)
    if vocab is not None and tokenizer.vocab_size > vocab:
        raise ValueError(f"model.net.text.vocab_size={vocab} is smaller than the tokenizer's vocabulary "
                         f"({tokenizer.vocab_size}); raise it")
    image_token = getattr(net, "image_token_id", None)
    if image_token is not None and prompt is not None and "<image>" in prompt:
        ids, mask = tokenizer.encode(["<image>"], context_length=8)
        if int((ids[mask] == image_token).sum()) != 1:
            raise ValueError(f"model.prompt holds <image>, but the tokenizer does not encode it as the model's "
                             f"image token {image_token} (got ids {ids[mask].tolist()})")
    elif image_token is not None:
        lm_vocab = net.lm.get_input_embeddings().num_embeddings
        if not tokenizer.vocab_size <= image_token < lm_vocab:
            raise ValueError(f"model.net.image_token_id={image_token} must lie in [{tokenizer.vocab_size}, {lm_vocab}) "
                             f"(above the tokenizer's ids, inside the LM's vocabulary)")
    return net


def build_module(cfg: DictConfig, net: Any, tokenizer: Any) -> MatchingModule:
    """The training module around `net`: optimizer and scheduler partials, per-part rates and
    freezing (`model.lr_mult`, e.g. from `stage=`), and what checkpoints carry to rebuild `net`."""
    scheduler = instantiate(cfg.optim.scheduler) if cfg.optim.get("scheduler") else None
    return MatchingModule(model=net, optimizer=instantiate(cfg.optim.optimizer), scheduler=scheduler,
                          model_config={"net": to_plain(cfg.model.net), "context_length": cfg.model.context_length,
                                        "prompt": cfg.model.get("prompt")},  # recurvlm-eval reads questions alike
                          tokenizer_state=tokenizer.to_dict(), eval_iterations=cfg.get("eval_iterations"),
                          test_iterations=cfg.get("test_iterations"), seed=cfg.seed,
                          lr_mult=to_plain(cfg.model.lr_mult) if cfg.model.get("lr_mult") else {},
                          parts_path=Path(cfg.paths.output_dir) / "parts.md")


def build_loggers(cfg: DictConfig) -> list[Any]:
    """The configured loggers, with a CSV logger always among them (analysis reads it)."""
    from lightning.pytorch.loggers import CSVLogger

    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    if not any(isinstance(lg, CSVLogger) for lg in loggers):
        loggers.append(CSVLogger(save_dir=cfg.paths.output_dir, name="csv"))
    return loggers


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    if cfg.ckpt_path in (None, ""):
        return None
    if cfg.ckpt_path == "last":
        return str(find_last(cfg.paths.log_dir, cfg.name))
    return str(cfg.ckpt_path)


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The callbacks group, less the progress bar when `trainer.enable_progress_bar=false`
    (Lightning refuses the two together)."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, L.pytorch.callbacks.ProgressBar)]
    return callbacks


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test as the config says; returns the test metrics (and val/acc for sweepers)."""
    L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    tokenizer = instantiate(cfg.model.tokenizer)
    init = load_checkpoint(cfg.init_from, family=FAMILY) if cfg.get("init_from") else None
    if init is not None:  # fine-tuning: the pretrained embedding rows belong to the checkpoint's tokenizer
        tokenizer = tokenizer_from_dict(init["recurvlm"]["tokenizer"])
    prompt = cfg.model.get("prompt")  # a template the model reads every question in (llava_1_5_7b)
    net = build_model(cfg.model.net, tokenizer, prompt=prompt)
    if init is not None:
        load_net_state(net, init, source=f"init_from={cfg.init_from}", what="model.net", wrap=True)
        log.info("initialised from %s", cfg.init_from)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer, context_length=cfg.model.context_length,
                             **({"prompt": prompt} if prompt else {}))
    module = build_module(cfg, net, tokenizer)
    trainer: L.Trainer = instantiate(cfg.trainer, logger=build_loggers(cfg), callbacks=build_callbacks(cfg))

    ckpt_path = resolve_ckpt_path(cfg)
    if ckpt_path is not None:
        check_fits(module, load_checkpoint(ckpt_path, family=FAMILY), source=ckpt_path)
        log.info("resuming from %s", ckpt_path)
        (out_dir / "resumed_from.txt").write_text(ckpt_path + "\n")
    if cfg.train:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics: dict[str, Any] = {}
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if (cfg.train and trainer.checkpoint_callback) else ""
        test_ckpt = best or (ckpt_path if not cfg.train else None)
        trainer.test(module, datamodule=datamodule, ckpt_path=test_ckpt, weights_only=True)
        if trainer.is_global_zero:
            metrics = write_outputs(module.test_records, out_dir, checkpoint=test_ckpt or "final weights")
            print(format_table(metrics))
            print(f"accuracy: {metrics['accuracy']:.4f}")
    val = trainer.callback_metrics.get("val/acc")
    if val is not None:
        metrics["val_acc"] = float(val)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except CheckpointError as e:
        raise SystemExit(f"recurvlm-train: {e}") from None
    return metrics.get("val_acc")  # the objective for the Optuna sweeper


if __name__ == "__main__":
    main()
