"""`recurvlm-eval ckpt_path=<ckpt> data.path=<folder>` (or `task=<name>`): score a checkpoint.

Rebuilds the model from the config stored in the checkpoint (loaded with
weights_only=True), tests it on an interchange folder or on the task's generated test
sets, writes metrics.json and predictions.jsonl into the run dir, and prints
`accuracy: <float>` as its last line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from .config import CONFIG_DIR, register_resolvers
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


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    L.seed_everything(cfg.seed)
    module, tokenizer, context_length = load_module(str(cfg.ckpt_path))
    if cfg.get("iterations") is not None:
        if not getattr(module.model, "recurrent", False) and cfg.iterations != 1:
            raise SystemExit(f"recurvlm-eval: iterations={cfg.iterations}: {cfg.ckpt_path} is a feedforward model (T = 1)")
        module.eval_iterations = int(cfg.iterations)
    d = cfg.data
    if d.path:
        dm: L.LightningDataModule = FolderDataModule(path=d.path, tokenizer=tokenizer, context_length=context_length,
                                                     strict=d.strict, batch_size=d.batch_size, num_workers=d.num_workers)
    elif cfg.get("task"):
        dm = StimulusDataModule(tasks=cfg.task.tasks, tokenizer=tokenizer, context_length=context_length,
                                eval_levels=cfg.task.eval_levels, difficulty=cfg.task.difficulty,
                                image_size=cfg.task.image_size, n_train=1, n_val=1, n_test=d.n_test,
                                test_seed=d.test_seed, batch_size=d.batch_size, num_workers=d.num_workers)
    else:
        raise SystemExit("recurvlm-eval: give data.path=<interchange folder> or task=<name>")
    trainer: L.Trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    trainer.test(module, datamodule=dm)
    skipped = len(getattr(getattr(dm, "test_set", None), "skipped", []))
    metrics = write_outputs(module.test_records, cfg.paths.output_dir, checkpoint=str(cfg.ckpt_path),
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
