"""Per-part learning rates and freezing (`model.lr_mult`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recurvlm.training.matching import param_groups, parts_table


def _model() -> nn.Module:
    m = nn.Module()
    m.vision = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    m.text = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    m.scale = nn.Parameter(torch.zeros(()))
    return m


def test_lr_mult_sets_group_rates_and_zero_freezes():
    m = _model()
    groups = param_groups(m, 0.1, lr=1e-3, lr_mult={"text": 0.01, "text.1": 0.0})
    rate = {id(p): g.get("lr", 1e-3) for g in groups for p in g["params"]}
    assert rate[id(m.vision[0].weight)] == 1e-3 and rate[id(m.scale)] == 1e-3
    assert rate[id(m.text[0].weight)] == pytest.approx(1e-5) and rate[id(m.text[0].bias)] == pytest.approx(1e-5)
    # the longest prefix wins: text.1 is frozen, left out, and gets no gradient
    assert id(m.text[1].weight) not in rate and not m.text[1].weight.requires_grad
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay[id(m.text[0].weight)] == 0.1 and decay[id(m.text[0].bias)] == 0.0 and decay[id(m.vision[1].weight)] == 0.0
    table = parts_table(m, 1e-3, {"text": 0.01, "text.1": 0.0})
    assert "| text.1 | 20 | 0 | frozen |" in table and "| text | 20 | 20 | 1e-05 |" in table


def test_lr_mult_steps_each_part_at_its_rate():
    torch.manual_seed(0)
    m = _model()
    opt = torch.optim.SGD(param_groups(m, 0.0, lr=1.0, lr_mult={"text.0": 0.5}), lr=1.0)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    assert torch.allclose(before["text.0.weight"] - m.text[0].weight, torch.full((4, 4), 0.5))
    assert torch.allclose(before["text.1.weight"] - m.text[1].weight, torch.ones(4, 4))


def test_lr_mult_unknown_prefix_or_bad_factor_fails_naming_it():
    with pytest.raises(KeyError, match=r"'txt' names no parameters.*top-level parts: scale, text, vision"):
        param_groups(_model(), 0.0, lr=1e-3, lr_mult={"txt": 0.1})
    with pytest.raises(ValueError, match=r"lr_mult.text=-1"):
        param_groups(_model(), 0.0, lr=1e-3, lr_mult={"text": -1})
