"""Checkpoints: find them, load them with weights_only, fail in one line when they don't fit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.lora import wrap_state_dict


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or of another model (one-line message)."""


def load_checkpoint(path: str | os.PathLike, *, family: str | None = None) -> dict[str, Any]:
    """torch.load with weights_only=True (no arbitrary pickled code) and clear errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, a pickle with code, ...
        raise CheckpointError(f"{path}: cannot be loaded with weights_only=True ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    meta = ckpt.get("recurvlm")
    if meta is None:
        raise CheckpointError(f"{path}: not a recurvlm checkpoint (no 'recurvlm' entry)")
    if family is not None and meta.get("family") != family:
        raise CheckpointError(f"{path}: a {meta.get('family')!r} checkpoint, expected {family!r}")
    return ckpt


def mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str | None:
    """A short description of how two state dicts differ in keys or shapes, or None."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} {tuple(found[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in found and tuple(found[k].shape) != tuple(v.shape)]
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            parts.append(f"{what}: {', '.join(keys[:3])}{more}")
    return "; ".join(parts) or None


def check_fits(module: nn.Module, ckpt: dict[str, Any], *, source: str) -> None:
    """Raise CheckpointError unless `ckpt`'s state dict matches `module` key for key and shape."""
    why = mismatch(module.state_dict(), ckpt["state_dict"])
    if why:
        raise CheckpointError(f"{source} does not fit this model: {why}")


def load_net_state(net: nn.Module, ckpt: dict[str, Any], *, source: str, what: str = "this model",
                   wrap: bool = False) -> None:
    """Copy a loaded checkpoint's network weights (its `model.*` entries) into `net`, strictly:
    a key or shape that differs is a one-line CheckpointError naming it, never a partial load.
    wrap: `net` may be LoRA-wrapped where the checkpoint's net was not (stage=instruct_lora from
    an align or recurvlm-pretrain checkpoint): base weights come from their unwrapped names and
    the adapters keep their zero-effect init (`lora.wrap_state_dict`)."""
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    if wrap:
        state = wrap_state_dict(state, net)
    why = mismatch(net.state_dict(), state)
    if why:
        raise CheckpointError(f"{source} does not fit {what}: {why}")
    net.load_state_dict(state, strict=True)


def find_last(log_dir: str | os.PathLike, name: str) -> Path:
    """The newest `<log_dir>/<name>/runs/*/checkpoints/last.ckpt`."""
    runs = Path(log_dir) / name / "runs"
    found = sorted(runs.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CheckpointError(f"ckpt_path=last: no checkpoints/last.ckpt under {runs}")
    return found[-1]


def model_from_checkpoint(ckpt: dict[str, Any], *, source: str) -> tuple[nn.Module, Any, int]:
    """(network in eval mode with the checkpoint's weights, its tokenizer, its context length)
    from a loaded recurvlm checkpoint; one-line CheckpointError if the weights do not fit."""
    from hydra.utils import instantiate

    from ..models.tokenizer import tokenizer_from_dict

    meta = ckpt["recurvlm"]
    net = instantiate(meta["model_config"]["net"])
    load_net_state(net, ckpt, source=source, what="its own model config")
    return net.eval(), tokenizer_from_dict(meta["tokenizer"]), int(meta["model_config"]["context_length"])


def load_model(path: str | os.PathLike, *, family: str = "clip") -> tuple[nn.Module, Any, int]:
    """`model_from_checkpoint` of the checkpoint at `path`, without Lightning: what analysis uses."""
    return model_from_checkpoint(load_checkpoint(path, family=family), source=str(path))
