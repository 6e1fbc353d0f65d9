"""`recurvlm-eval ckpt_path=<ckpt> data.path=<folder>` (or `task=<name>`): score a checkpoint.

Rebuilds the model from the config stored in the checkpoint (loaded with
weights_only=True), tests it on an interchange folder or on the task's generated test
sets, writes metrics.json and predictions.jsonl into the run dir, and prints
`accuracy: <float>` as its last line.

`recurvlm-eval model=<config> data.path=<folder>` (no ckpt_path) scores a model as its config
builds it, untrained: zero-shot evaluation of pretrained weights (model=clip_l14_336,
siglip_b16, llava_1_5_7b; `model.name_or_path=` a hub name or local directory), with the
config's tokenizer and prompt template. Exactly one of ckpt_path and model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from .config import CONFIG_DIR, register_resolvers, to_plain
from .data.datamodule import FolderDataModule, StimulusDataModule
from .data.interchange import InterchangeError
from .training.checkpoints import CheckpointError, load_checkpoint, model_from_checkpoint
from .training.evaluation import format_table, write_outputs
from .training.matching import FAMILY, MatchingModule

register_resolvers()


def load_module(ckpt_path: str) -> tuple[MatchingModule, Any, int]:
    """(module with the checkpoint's weights, its tokenizer, its context length)."""
    ckpt = load_checkpoint(ckpt_path, family=FAMILY)
    net, tokenizer, context_length = model_from_checkpoint(ckpt, source=ckpt_path)
    meta = ckpt["recurvlm"]
    module = MatchingModule(model=net, optimizer=None, model_config=meta["model_config"],  # type: ignore[arg-type]
                            tokenizer_state=meta["tokenizer"])
    return module, tokenizer, context_length


def zero_shot_module(model_cfg: DictConfig) -> tuple[MatchingModule, Any, int, str | None]:
    """(module around the network the model config builds, untrained; its tokenizer, context
    length and prompt template): pretrained weights as `from_pretrained` loads them."""
    from .train import build_model

    tokenizer = instantiate(model_cfg.tokenizer)
    prompt = model_cfg.get("prompt")
    net = build_model(model_cfg.net, tokenizer, prompt=prompt).eval()
    config = {"net": to_plain(model_cfg.net), "context_length": model_cfg.context_length, "prompt": prompt}
    module = MatchingModule(model=net, optimizer=None, model_config=config,  # type: ignore[arg-type]
                            tokenizer_state=tokenizer.to_dict())
    return module, tokenizer, int(model_cfg.context_length), prompt


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    L.seed_everything(cfg.seed)
    if (cfg.get("ckpt_path") in (None, "")) == (cfg.get("model") is None):
        raise SystemExit("recurvlm-eval: give exactly one of ckpt_path=<checkpoint> (a trained model) "
                         "or model=<config> (zero-shot, e.g. model=clip_l14_336)")
    if cfg.get("model") is not None:
        module, tokenizer, context_length, prompt = zero_shot_module(cfg.model)
        source = f"zero-shot {cfg.model.name}" + (f" ({cfg.model.name_or_path})" if cfg.model.get("name_or_path") else "")
    else:
        module, tokenizer, context_length = load_module(str(cfg.ckpt_path))
        prompt = (module.model_config or {}).get("prompt")
        source = str(cfg.ckpt_path)
    if cfg.get("iterations") is not None:
        if not getattr(module.model, "recurrent", False) and cfg.iterations != 1:
            raise SystemExit(f"recurvlm-eval: iterations={cfg.iterations}: {source} is a feedforward model (T = 1)")
        module.eval_iterations = int(cfg.iterations)
    d = cfg.data
    if d.path:
        dm: L.LightningDataModule = FolderDataModule(path=d.path, tokenizer=tokenizer, context_length=context_length,
                                                     strict=d.strict, batch_size=d.batch_size,
                                                     num_workers=d.num_workers, prompt=prompt)
    elif cfg.get("task"):
        dm = StimulusDataModule(tasks=cfg.task.tasks, tokenizer=tokenizer, context_length=context_length,
                                eval_levels=cfg.task.eval_levels, difficulty=cfg.task.difficulty,
                                image_size=cfg.task.image_size, n_train=1, n_val=1, n_test=d.n_test,
                                test_seed=d.test_seed, batch_size=d.batch_size, num_workers=d.num_workers,
                                prompt=prompt)
    else:
        raise SystemExit("recurvlm-eval: give data.path=<interchange folder> or task=<name>")
    trainer: L.Trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    trainer.test(module, datamodule=dm)
    skipped = len(getattr(getattr(dm, "test_set", None), "skipped", []))
    metrics = write_outputs(module.test_records, cfg.paths.output_dir, checkpoint=source,
                            data=str(d.path or cfg.task.name), skipped=skipped)
    print(format_table(metrics))
    if skipped:
        print(f"skipped {skipped} bad item(s) of {d.path} (strict=false)")
    print(f"wrote {Path(cfg.paths.output_dir) / 'metrics.json'}")
    print(f"accuracy: {metrics['accuracy']:.4f}")
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except (CheckpointError, InterchangeError) as e:
        raise SystemExit(f"recurvlm-eval: {e}") from None


if __name__ == "__main__":
    main()
