"""The recurrent-cost bench (`python -m recurvlm.bench recurrent`) at its smallest settings."""

from __future__ import annotations

import argparse

import pytest

from recurvlm.bench import recurrent


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    recurrent.add_arguments(p)
    return p.parse_args(argv)


def test_rows_and_flops_grow_with_iterations(tmp_path, capsys):
    out = tmp_path / "rows.json"
    rows = recurrent.run(parse(["--models", "clip_tiny", "recurrent_tiny", "--repeats", "1", "--batch-size", "2",
                                "--train-steps", "1", "--json", str(out)]))
    cost = {r["model"]: r for r in rows if r["section"] == "cost"}
    assert list(cost) == ["clip_tiny", "recurrent_tiny"]
    base, rec = cost["clip_tiny"], cost["recurrent_tiny"]
    assert not base["recurrent"] and rec["recurrent"] and rec["state"] == "gru"
    assert rec["params"] > base["params"] > 0
    assert rec["train_iterations"] == 4
    # more iterations cost more: T=4 (timed T and training T) above T=1, and one iteration costs something
    assert rec["flops_tn"] > rec["flops_t1"] > 0 and rec["flops_train_t"] == rec["flops_tn"]
    assert base["flops_t1"] == base["flops_train_t"] > 0
    assert rec["flops_per_iteration"] == pytest.approx((rec["flops_tn"] - rec["flops_t1"]) / 3)
    assert rec["iteration_over_pass_flops"] == pytest.approx(rec["flops_per_iteration"] / base["flops_t1"])
    assert rec["iteration_over_pass_time"] > 0 and rec["time_tn_s"] > 0 and base["time_t1_s"] > 0
    assert "iteration_over_pass_time" not in base
    assert rec["train_samples_per_s"] > 0
    assert out.read_text().startswith("[")
    text = capsys.readouterr().out
    assert "| recurrent_tiny |" in text and "command: `python -m recurvlm.bench recurrent" in text


def test_missing_config_is_skipped_with_a_note(capsys):
    rows = recurrent.run(parse(["--models", "no_such_model", "--repeats", "1", "--batch-size", "2",
                                "--train-steps", "0"]))
    assert [r["model"] for r in rows if r["section"] == "cost"] == []  # the baseline alone is not listed
    assert "conf/model/no_such_model.yaml does not exist" in capsys.readouterr().out


def test_mamba_reference_path_rebinds_and_restores():
    from transformers.models.mamba import modeling_mamba as mm

    before = {n: getattr(mm, n) for n in recurrent.MAMBA_KERNELS}
    with recurrent.mamba_reference_path():
        for n in recurrent.MAMBA_KERNELS:
            assert not hasattr(getattr(mm, n), "__wrapped__")  # the reference function itself
    assert {n: getattr(mm, n) for n in recurrent.MAMBA_KERNELS} == before


def test_mamba_reference_path_runs_the_state_module():
    import torch

    from recurvlm.models.state import MambaState

    torch.manual_seed(0)
    state = MambaState(8, layers=1, state_size=4, expand=2, conv_kernel=2)
    u = torch.randn(2, 3, 5, 8)
    # train with grad: the sequence path (mamba_inner_fn first); eval without: cached stepping
    for mode, grad in ((state.train, True), (state.eval, False)):
        mode()
        with torch.set_grad_enabled(grad):
            expected = state(u)
            with recurrent.mamba_reference_path():
                torch.testing.assert_close(state(u), expected)
