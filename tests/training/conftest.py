"""Compose the real Hydra configs in-process with tiny CPU overrides (no subprocess: importing
Lightning costs seconds per process)."""

from __future__ import annotations

import pytest
from omegaconf import DictConfig, open_dict

from recurvlm.config import compose_config

TINY = [
    "debug=fast",
    "model.net.vision.width=32", "model.net.vision.depth=2", "model.net.vision.mlp_dim=64",
    "model.net.text.width=32", "model.net.text.depth=1", "model.net.text.mlp_dim=64", "model.net.embed_dim=32",
    "trainer.enable_progress_bar=false", "callbacks.progress_bar=null",
]


@pytest.fixture
def train_cfg(tmp_path):
    """`train_cfg(*overrides)`: the tiny train config, output in a fresh tmp dir."""
    counter = iter(range(100))

    def make(*overrides: str, tiny: bool = True) -> DictConfig:
        """Laid out as Hydra does it: <log_dir>/<name>/runs/<run>/."""
        cfg = compose_config("train", (TINY if tiny else []) + [f"paths.log_dir={tmp_path / 'logs'}", *overrides], tmp_path)
        out = tmp_path / "logs" / cfg.name / "runs" / f"run{next(counter)}"
        out.mkdir(parents=True)
        with open_dict(cfg):
            cfg.paths.output_dir = str(out)
        return cfg

    return make


@pytest.fixture
def compose_cfg():
    """`compose_cfg(name, overrides, output_dir)`: any config of conf/, output in `output_dir`."""
    return compose_config


@pytest.fixture
def tiny_overrides() -> list[str]:
    """The tiny CPU overrides, for runs launched on the command line."""
    return list(TINY)
