"""Shared by the recurrent CLIP and LLaVA tests (test_recurrent.py, test_recurrent_llava.py):
the tiny state modules and feedback mechanisms every case runs over, the top-down config of
one case, and the stand-in for training that moves zero-initialised parts off zero."""

from __future__ import annotations

import torch

STATES = {
    "gru": {},
    "mamba": {"layers": 1, "state_size": 4, "expand": 2, "conv_kernel": 2},
    "xlstm": {"blocks": 2, "slstm_at": [1], "heads": 2, "max_iterations": 16},
    "none": {},
}
MECHANISMS = ("add", "gain", "tokens", "xattn")


def top_down_config(state: str = "gru", mechanism: str = "add", layers=(1,), **extra) -> dict:
    """A small top-down module (state_dim 8, recall on) of one state kind and mechanism."""
    return {"state": state, "state_dim": 8, "state_kwargs": STATES[state], "mechanism": mechanism,
            "layers": list(layers), "recall": True, **extra}


def trained_a_little(model: torch.nn.Module, std: float = 0.1) -> torch.nn.Module:
    """Zero-initialised feedback, gates and readout pass no gradient upstream and change
    nothing at initialisation; moving them off zero by seeded noise stands in for training."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.top_down.parameters():
            if not p.any():
                p.add_(std * torch.randn(p.shape, generator=g))
    return model


def assert_every_parameter_gets_a_gradient(model: torch.nn.Module, x: tuple, labels: torch.Tensor) -> None:
    model.zero_grad()
    model.loss(model(*x), labels)["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient: {missing}"


def assert_record_returns_per_iteration_maps(model: torch.nn.Module, x: tuple) -> None:
    """`record=True` on a T=3 model with feedback into blocks 1 and 2 (16 patches + class token,
    2 heads, batch 3): the same logits, and per sweep the attention, feedback and state maps."""
    with torch.no_grad():
        plain = model(*x)
        rec = model(*x, record=True)
    torch.testing.assert_close(rec.logits, plain.logits, rtol=0, atol=1e-5)
    maps = rec.maps
    assert len(maps["attentions"]) == 3 and len(maps["attentions"][0]) == 2  # T x (blocks 1, 2)
    assert maps["attentions"][0][0].shape == (3, 2, 17, 17)  # [B, heads, N, N]
    torch.testing.assert_close(maps["attentions"][0][0].sum(-1), torch.ones(3, 2, 17))
    assert len(maps["low_attentions"]) == 1  # block 0 runs once, below the first feedback layer
    assert maps["feedback"][0] == {} and set(maps["feedback"][1]) == {1, 2}  # no feedback in sweep 1
    assert maps["feedback"][1][1].shape == (3, 16) and maps["feedback"][1][1].abs().sum() > 0  # [B, patches]
    assert len(maps["state_norm"]) == 3 and maps["state_norm"][0].shape == (3, 16)
