"""`recurvlm-pretrain` (also `python -m recurvlm.pretrain`): image-text pretraining before fine-tuning.

Hydra composes `conf/pretrain.yaml`. The model config decides the objective: a CLIP pair
trains contrastively on (image, caption) pairs, an LLaVA pair trains its LM on the assistant
turns of conversations. Either reads either source (`pretrain_data=shards`: WebDataset tar
shards of image + caption; `pretrain_data=llava_json`: LLaVA-format conversations). A
word-level tokenizer gets the data's words appended (`extend_vocab`), its task word ids
unchanged. Outputs go to the run dir: checkpoints/{last,step*}.ckpt (the recurvlm checkpoint
entry, so `recurvlm-train init_from=<ckpt>` fine-tunes from them), csv/, parts.md.
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
from .data.image_text import CaptionCollate, ConversationCollate, ConversationEncoder, extend_vocabulary
from .models.clip import CLIPPair
from .models.llava import LlavaPair
from .models.tokenizer import WordTokenizer
from .train import build_callbacks, build_loggers, build_model, resolve_ckpt_path
from .training.checkpoints import CheckpointError, check_fits, load_checkpoint
from .training.matching import FAMILY
from .training.pretraining import ContrastiveModule, LanguageModelingModule, PretrainModule

log = logging.getLogger("recurvlm.pretrain")
register_resolvers()


def collate_for(net: Any, tokenizer: Any, datamodule: Any, context_length: int) -> Any:
    """The batch layout the network's objective needs."""
    if isinstance(net, LlavaPair):
        encoder = ConversationEncoder(tokenizer, num_image_tokens=net.num_image_tokens,
                                      image_token_id=net.image_token_id, max_length=datamodule.max_length,
                                      template=datamodule.template)
        return ConversationCollate(encoder, datamodule.image_size)
    return CaptionCollate(tokenizer, context_length, datamodule.image_size)


def module_for(net: Any, **kwargs: Any) -> PretrainModule:
    if isinstance(net, LlavaPair):
        return LanguageModelingModule(model=net, **kwargs)
    if isinstance(net, CLIPPair):
        return ContrastiveModule(model=net, **kwargs)
    raise ValueError(f"model.net: {type(net).__name__} has no pretraining objective; valid: CLIPPair, LlavaPair")


def pretrain(cfg: DictConfig) -> dict[str, Any]:
    """Fit as the config says; returns the last train/loss, the skipped count and the checkpoint."""
    L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    datamodule = instantiate(cfg.pretrain_data, image_size=cfg.task.image_size, seed=cfg.seed)
    tokenizer = instantiate(cfg.model.tokenizer)
    if cfg.extend_vocab and isinstance(tokenizer, WordTokenizer):
        before = tokenizer.vocab_size
        tokenizer = extend_vocabulary(tokenizer, datamodule.texts())
        log.info("word vocabulary: %d -> %d (the data's words appended)", before, tokenizer.vocab_size)
    net = build_model(cfg.model.net, tokenizer, prompt=cfg.model.get("prompt"))
    datamodule.collate = collate_for(net, tokenizer, datamodule, cfg.model.context_length)
    scheduler = instantiate(cfg.optim.scheduler) if cfg.optim.get("scheduler") else None
    module = module_for(net, optimizer=instantiate(cfg.optim.optimizer), scheduler=scheduler,
                        model_config={"net": to_plain(cfg.model.net), "context_length": cfg.model.context_length,
                                      "prompt": cfg.model.get("prompt")},  # as train.build_module stores it
                        tokenizer_state=tokenizer.to_dict(),
                        lr_mult=to_plain(cfg.model.lr_mult) if cfg.model.get("lr_mult") else {},
                        parts_path=out_dir / "parts.md")
    trainer: L.Trainer = instantiate(cfg.trainer, logger=build_loggers(cfg), callbacks=build_callbacks(cfg))
    ckpt_path = resolve_ckpt_path(cfg)
    if ckpt_path is not None:
        check_fits(module, load_checkpoint(ckpt_path, family=FAMILY), source=ckpt_path)
        log.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    loss = trainer.callback_metrics.get("train/loss")
    last = out_dir / "checkpoints" / "last.ckpt"
    result = {"train_loss": float(loss) if loss is not None else None, "skipped": module.skipped,
              "checkpoint": str(last) if last.is_file() else None}
    if trainer.is_global_zero:
        print(f"skipped: {module.skipped}")
        print(f"checkpoint: {result['checkpoint']}")
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="pretrain")
def main(cfg: DictConfig) -> float | None:
    try:
        result = pretrain(cfg)
    except CheckpointError as e:
        raise SystemExit(f"recurvlm-pretrain: {e}") from None
    return result["train_loss"]


if __name__ == "__main__":
    main()
