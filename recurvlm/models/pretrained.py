"""Loading Hugging Face checkpoints into our modules by plain, strict state-dict copy."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from recurvlm.models.vit import VisionTransformer

Family = Literal["auto", "clip", "siglip"]

# model_type in an HF config -> (family, whether the vision settings sit under `vision_config`)
_VISION_MODEL_TYPES: dict[str, tuple[str, bool]] = {
    "clip_vision_model": ("clip", False),
    "clip": ("clip", True),
    "siglip_vision_model": ("siglip", False),
    "siglip": ("siglip", True),
}

# HF `hidden_act` -> our `act`; gelu_new is the same tanh formula written out by hand
_HF_ACTIVATIONS = {
    "quick_gelu": "quick_gelu",
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
}


class StateDictMismatchError(RuntimeError):
    """A checkpoint's keys or shapes do not match the module; raised instead of a partial load."""


def _first_few(keys: Iterable[str], n: int = 5) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:n])
    return f"{shown}, ... (+{len(keys) - n} more)" if len(keys) > n else shown


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, Tensor], *, source: str) -> None:
    """Copy `state_dict` into `module`, or raise a one-line `StateDictMismatchError` naming the
    first missing, unexpected and wrongly shaped keys and `source` (the checkpoint)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys [{_first_few(missing)}]")
    if unexpected:
        problems.append(f"unexpected keys [{_first_few(unexpected)}]")
    if wrong_shape:
        problems.append(f"shape mismatches, checkpoint vs model [{_first_few(wrong_shape)}]")
    if problems:
        raise StateDictMismatchError(f"cannot load {source} into {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state_dict, strict=True)


def _vision_config(config: Any) -> tuple[str, Any]:
    """(family, vision config) of a CLIP / SigLIP config, full model or vision tower."""
    model_type = config.model_type
    if model_type not in _VISION_MODEL_TYPES:
        raise ValueError(
            f"model_type {model_type!r} is not a CLIP or SigLIP vision tower; "
            f"supported: {', '.join(_VISION_MODEL_TYPES)}"
        )
    family, nested = _VISION_MODEL_TYPES[model_type]
    return family, (config.vision_config if nested else config)


def vision_kwargs_from_hf_config(config: Any) -> dict[str, Any]:
    """`VisionTransformer` keyword arguments from an HF CLIP / SigLIP config (a full model's
    config gives its vision tower). SigLIP towers without a head pool by mean (HF returns no
    pooled output for them)."""
    family, vc = _vision_config(config)
    if vc.hidden_act not in _HF_ACTIVATIONS:
        raise ValueError(f"hidden_act {vc.hidden_act!r} has no equivalent; supported: {', '.join(_HF_ACTIVATIONS)}")
    if family == "clip":
        arch = dict(class_token=True, pre_norm=True, pool="cls")
    else:
        arch = dict(class_token=False, pre_norm=False, pool="map" if vc.vision_use_head else "mean")
    return dict(
        image_size=vc.image_size,
        patch_size=vc.patch_size,
        width=vc.hidden_size,
        depth=vc.num_hidden_layers,
        heads=vc.num_attention_heads,
        mlp_dim=vc.intermediate_size,
        act=_HF_ACTIVATIONS[vc.hidden_act],
        layer_norm_eps=vc.layer_norm_eps,
        in_channels=vc.num_channels,
        **arch,
    )


def load_vision_tower(name_or_path: str, *, family: Family = "auto") -> VisionTransformer:
    """A `VisionTransformer` with the weights of an HF CLIP / SigLIP vision tower.

    `name_or_path` is a hub name or a local directory holding a vision-tower checkpoint
    (`CLIPVisionModel`, `SiglipVisionModel`) or a full one (`CLIPModel`, `SiglipModel`, whose
    text weights are skipped). `family="clip"` / `"siglip"` asserts what the config says.
    HF builds the tower and reports what the checkpoint lacked; we then copy its state dict
    with strict keys, so a mismatch anywhere raises instead of leaving random weights. The
    parameters stay float32 whatever the checkpoint's dtype.
    """
    from transformers import AutoConfig, CLIPVisionModel, SiglipVisionModel

    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    found, vision_config = _vision_config(config)
    if family != "auto" and family != found:
        raise ValueError(f"{name_or_path} is a {found} checkpoint (model_type {config.model_type!r}), not {family}")
    hf_class = CLIPVisionModel if found == "clip" else SiglipVisionModel
    hf_model, info = hf_class.from_pretrained(
        name_or_path, config=vision_config, output_loading_info=True, trust_remote_code=False
    )
    # unexpected keys are fine (a full model's text tower); missing ones would be random weights
    problems = []
    if info["missing_keys"]:
        problems.append(f"missing keys [{_first_few(info['missing_keys'])}]")
    if info["mismatched_keys"]:
        problems.append(f"mismatched keys [{_first_few(str(k) for k in info['mismatched_keys'])}]")
    if problems:
        raise StateDictMismatchError(f"{name_or_path} does not fill {hf_class.__name__}: " + "; ".join(problems))
    # older transformers nest the tower under `vision_model.`; position_ids are index buffers, not weights
    state_dict = {
        k.removeprefix("vision_model."): v
        for k, v in hf_model.state_dict().items()
        if not k.endswith("position_ids")
    }
    model = VisionTransformer(**vision_kwargs_from_hf_config(vision_config))
    load_state_dict_strict(model, state_dict, source=str(name_or_path))
    return model.eval()


def image_statistics(name_or_path: str, *, mean: Sequence[float], std: Sequence[float]) -> dict[str, tuple[float, ...]]:
    """`image_mean` and `image_std` from a checkpoint's image processor config
    (preprocessor_config.json) when it has one, else the given defaults (the family's
    standard values: a checkpoint trained with other statistics ships its own file)."""
    from transformers.utils import cached_file

    path = cached_file(name_or_path, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False)
    found = json.loads(Path(path).read_text()) if path else {}
    out = {"image_mean": found.get("image_mean", mean), "image_std": found.get("image_std", std)}
    for key, value in out.items():
        if not (isinstance(value, (list, tuple)) and len(value) == 3):
            raise ValueError(f"{name_or_path}: preprocessor_config.json {key}={value!r}; expected 3 numbers (RGB)")
    return {k: tuple(float(x) for x in v) for k, v in out.items()}
