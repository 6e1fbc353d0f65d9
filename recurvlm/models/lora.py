"""LoRA adapters on a Hugging Face causal LM through peft: composition (the LM is wrapped, never patched).

`stage=instruct_lora` (conf/stage/instruct_lora.yaml) sets `model.net.lora`, and `LlavaPair`
wraps its LM with `with_lora(lm, **lora)` (for `from_pretrained`, after the LM's weights are
loaded), so the model config stored in a checkpoint rebuilds the same wrapped network and its
adapter weights load by plain copy.
The wrapped LM keeps the interface `LlavaPair` uses: `get_input_embeddings()`,
`forward(inputs_embeds=, attention_mask=, position_ids=)` and `generate(inputs_embeds=...)`.
`wrap_state_dict` keys the weights of a net before wrapping (a stage=align or recurvlm-pretrain
checkpoint) for the wrapped net, so stage=instruct_lora can start from them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

ADAPTER_PREFIX = "lora_"  # peft's LoRA parameters: lora_A, lora_B, lora_embedding_{A,B}, lora_magnitude_vector (DoRA)


def is_adapter(name: str) -> bool:
    """Whether parameter `name` is a LoRA adapter weight (not a base weight it wraps)."""
    return any(part.startswith(ADAPTER_PREFIX) for part in name.split("."))


def unwrapped_name(name: str) -> str:
    """A parameter name of a LoRA-wrapped net as it was before wrapping: peft's `base_model.model.`
    and `.base_layer` dropped (`lm.base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight`
    -> `lm.model.layers.0.self_attn.q_proj.weight`)."""
    return name.replace("base_model.model.", "", 1).replace(".base_layer.", ".")


def wrap_state_dict(state: Mapping[str, Tensor], net: nn.Module) -> dict[str, Tensor]:
    """`state` keyed as `net`'s state dict, where `net` may hold LoRA-wrapped modules and `state`
    may come from the net before wrapping (e.g. stage=align, then stage=instruct_lora).

    Keys `net` shares with `state` are taken as they are; base weights are found under their
    unwrapped names; adapters `state` lacks keep `net`'s own values (lora_B = 0, so `net` then
    computes what `state`'s net did). Keys of `state` left unused are passed on under their own
    names, and keys found nowhere stay missing, so a strict load still names both."""
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for key, own in net.state_dict().items():
        source = key if key in state else unwrapped_name(key)
        if source in state:
            out[key] = state[source]
            used.add(source)
        elif is_adapter(key):
            out[key] = own
    out.update({k: v for k, v in state.items() if k not in used and k not in out})
    return out


def with_lora(model: nn.Module, *, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
              target_modules: str | Sequence[str] = "all-linear") -> nn.Module:
    """`model` (a transformers causal LM) with LoRA adapters (Hu et al. 2021) on `target_modules`.

    target_modules: "all-linear" (every linear layer but the output head, as LLaVA-1.5's LoRA
    recipe; Liu et al. 2023 used r=128, alpha=256, dropout 0.05 on 7B/13B LMs) or module names
    such as ["q_proj", "v_proj"]. Returns peft's `PeftModelForCausalLM`: its base weights are
    frozen (requires_grad=False) and only the adapters train. `lora_B` starts at zero, so the
    wrapped LM computes exactly what `model` did until the adapters have trained.
    """
    from peft import LoraConfig, get_peft_model

    if not (isinstance(r, int) and r >= 1):
        raise ValueError(f"model.net.lora.r={r!r}; valid: an integer >= 1")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"model.net.lora.dropout={dropout!r}; valid: 0 <= dropout < 1")
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)  # Hydra passes ListConfig
    if not isinstance(targets, str):
        # peft fails only when no name matches; a typo in one of several names would go unadapted
        names = [n for n, _ in model.named_modules()]
        missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
        if missing or not targets:
            raise ValueError(f"model.net.lora.target_modules: {missing or targets!r} matches no module of "
                             f"{type(model).__name__}; valid: all-linear, or module names such as q_proj, v_proj")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)
