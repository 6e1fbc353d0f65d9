"""Hydra at the edge: the config directory, custom resolvers, and building objects from configs."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def wandb_offline() -> bool:
    """True unless the user is logged in to wandb or chose a mode (WANDB_MODE).

    wandb with no API key and no mode raises at start-up, and online mode can hang
    without network: so offline is the default, and `wandb sync` uploads later.
    """
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode in ("offline", "dryrun", "disabled")
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        rc = netrc.netrc(os.environ.get("NETRC", os.path.expanduser("~/.netrc")))
        return rc.authenticators("api.wandb.ai") is None
    except (FileNotFoundError, netrc.NetrcParseError):
        return True


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("recurvlm.wandb_offline"):
        OmegaConf.register_new_resolver("recurvlm.wandb_offline", wandb_offline)


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """A resolved config node as plain Python data (safe in a weights_only checkpoint)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]


def compose_config(name: str, overrides: list[str], output_dir: str | Path) -> DictConfig:
    """Compose `conf/<name>.yaml` with overrides in-process (no Hydra app, no run dir of its
    own): `paths.output_dir` is set to `output_dir`."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    register_resolvers()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg
