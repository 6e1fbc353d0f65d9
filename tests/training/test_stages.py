"""LLaVA training stages (`stage=align|instruct|instruct_lora`): exactly the parts the stage names
train, frozen parts never move, LoRA (peft) keeps the pair's interface and round-trips through
checkpoints and recurvlm-eval."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from recurvlm.eval import evaluate
from recurvlm.models.lora import is_adapter, unwrapped_name, with_lora, wrap_state_dict
from recurvlm.train import build_model, build_module, train
from recurvlm.training.checkpoints import load_checkpoint, model_from_checkpoint
from recurvlm.training.matching import FAMILY

STAGES = ("align", "instruct", "instruct_lora")
# llava_tiny, smaller still: these tests build it many times on a shared CPU
SMALL = ["model=llava_tiny", "debug=fast", "logger=none", "trainer.enable_progress_bar=false",
         "callbacks.progress_bar=null", "model.net.vision.width=32", "model.net.vision.depth=2",
         "model.net.vision.mlp_dim=64", "model.lm.config.hidden_size=32", "model.lm.config.intermediate_size=64"]


def _build(train_cfg, stage: str, *overrides: str):
    """(cfg, net, module, optimizer) as recurvlm-train builds them (no scheduler: no Trainer here)."""
    cfg = train_cfg(*SMALL, f"stage={stage}", "optim.scheduler=null", "data.n_train=8", "data.batch_size=4",
                    *overrides, tiny=False)
    tokenizer = instantiate(cfg.model.tokenizer)
    net = build_model(cfg.model.net, tokenizer)
    module = build_module(cfg, net, tokenizer)
    return cfg, net, module, module.configure_optimizers()


def _expected_trainable(net: nn.Module, stage: str) -> set[str]:
    """What the stage says trains, from parameter names alone."""
    names = [n for n, _ in net.named_parameters()]
    projector = {n for n in names if n.startswith("multi_modal_projector.")}
    lm = {n for n in names if n.startswith("lm.")}
    lora = {n for n in lm if ".lora_A." in n or ".lora_B." in n}
    return {"align": projector, "instruct": projector | lm, "instruct_lora": projector | lora}[stage]


def _batch(cfg) -> dict:
    dm = instantiate(cfg.data, tokenizer=instantiate(cfg.model.tokenizer), context_length=cfg.model.context_length)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


@pytest.mark.parametrize("stage", STAGES)
def test_stage_trains_exactly_its_parts_and_frozen_parts_never_move(train_cfg, stage):
    cfg, net, module, opt = _build(train_cfg, stage)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    expected = _expected_trainable(net, stage)
    assert expected and trainable == expected
    in_optimizer = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for n, p in net.named_parameters() if n in expected}
    if stage == "instruct_lora":  # "all-linear": an A and a B on every linear layer of the LM but its head
        lm = instantiate(cfg.model.lm)
        linears = [n for n, m in lm.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]
        assert sum(".lora_A." in n for n in trainable) == sum(".lora_B." in n for n in trainable) == len(linears) > 0

    batch = _batch(cfg)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    net.train()
    for _ in range(3):
        opt.zero_grad()
        net.loss(module(batch), batch["label"])["loss"].backward()
        opt.step()
    changed = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    assert changed == expected  # every trainable tensor moved, no frozen one did
    assert all(p.grad is None for n, p in net.named_parameters() if n not in expected)  # no wasted backward

    table = (Path(cfg.paths.output_dir) / "parts.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert table.splitlines()[0] == "| part | params | trainable | lr |"
    assert rows["vision_model"].endswith("| 0 | frozen |")
    assert not rows["multi_modal_projector"].endswith("frozen |")
    if stage == "instruct_lora":
        n_lora = sum(p.numel() for n, p in net.named_parameters() if is_adapter(n))
        assert rows["lm"].endswith("| 0 | frozen |")
        assert f"| lm (lora) | {n_lora:,} | {n_lora:,} |" in rows["lm (lora)"]
    else:
        assert "lm (lora)" not in rows and rows["lm"].endswith("frozen |") == (stage == "align")


def test_lora_lr_mult_scales_adapters_and_zero_is_an_error(train_cfg):
    cfg, net, _, opt = _build(train_cfg, "instruct_lora", "+model.lr_mult.lm=0.5")
    lr = cfg.optim.optimizer.lr
    rate = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    for n, p in net.named_parameters():
        if is_adapter(n):
            assert p.requires_grad and rate[id(p)] == pytest.approx(0.5 * lr)
        elif n.startswith("lm."):
            assert not p.requires_grad and id(p) not in rate  # lr_mult never unfreezes peft's base weights
    assert all(rate[id(p)] == lr for p in net.multi_modal_projector.parameters())
    with pytest.raises(ValueError, match=r"lr_mult.lm=0 would freeze its LoRA adapters \(lm\..*lora_") as e:
        _build(train_cfg, "instruct_lora", "+model.lr_mult.lm=0")
    assert "\n" not in str(e.value)


def test_lora_target_modules_that_match_nothing_fail_naming_them(train_cfg):
    cfg = train_cfg(*SMALL, tiny=False)
    with pytest.raises(ValueError, match=r"model.net.lora.target_modules: \['qproj'\] matches no module of LlamaForCausalLM"):
        with_lora(instantiate(cfg.model.lm), target_modules=["q_proj", "qproj"])


def test_pair_with_a_lora_lm_equals_the_plain_pair_until_the_adapters_train(train_cfg):
    """A PeftModel as `lm` keeps LlavaPair's interface: input embeddings, forward with
    inputs_embeds / attention_mask / position_ids (choice scoring), generate."""
    cfg = train_cfg(*SMALL, tiny=False)
    tokenizer = instantiate(cfg.model.tokenizer)
    plain = build_model(cfg.model.net, tokenizer).eval()
    wrapped = copy.deepcopy(plain)
    wrapped.lm = with_lora(wrapped.lm, r=4, alpha=8, dropout=0.1)
    wrapped.eval()
    batch = _batch(train_cfg(*SMALL, "data.n_train=4", "data.batch_size=4", tiny=False))
    pixels = plain.preprocess(batch["image"])
    rows = [torch.cat([torch.full((plain.num_image_tokens,), plain.image_token_id), q[m.bool()]])
            for q, m in zip(batch["question_ids"], batch["question_mask"])]  # [image tokens, question]
    width = max(len(r) for r in rows)
    prompt = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):  # left-padded, as generation wants
        prompt[i, width - len(r):], mask[i, width - len(r):] = r, 1
    with torch.no_grad():
        assert torch.equal(wrapped(*_choice_args(batch)).logits, plain(*_choice_args(batch)).logits)
        assert torch.equal(wrapped.lm_logits(pixels, prompt, mask), plain.lm_logits(pixels, prompt, mask))
    assert torch.equal(wrapped.generate(pixels, prompt, mask, max_new_tokens=4),
                       plain.generate(pixels, prompt, mask, max_new_tokens=4))
    for n, p in wrapped.named_parameters():
        if ".lora_B." in n:
            nn.init.normal_(p, std=0.5)
    with torch.no_grad():  # the adapters are in the path
        assert not torch.allclose(wrapped(*_choice_args(batch)).logits, plain(*_choice_args(batch)).logits)


def _choice_args(batch: dict) -> tuple:
    return (batch["image"], batch["choice_ids"], batch["choice_mask"], batch["choice_valid"],
            batch["question_ids"], batch["question_mask"])


def test_instruct_lora_checkpoint_rebuilds_the_same_net(train_cfg, tmp_path):
    """The model config stored in a checkpoint holds the LoRA wrapper: model_from_checkpoint
    rebuilds the wrapped net and its trained adapters load by plain copy."""
    cfg, net, module, opt = _build(train_cfg, "instruct_lora")
    batch = _batch(cfg)
    net.train()
    for _ in range(2):
        opt.zero_grad()
        net.loss(module(batch), batch["label"])["loss"].backward()
        opt.step()
    assert any(p.abs().sum() > 0 for n, p in net.named_parameters() if ".lora_B." in n)  # adapters did train
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)  # what Lightning adds to every checkpoint
    torch.save(ckpt, tmp_path / "lora.ckpt")
    rebuilt, _, context_length = model_from_checkpoint(load_checkpoint(tmp_path / "lora.ckpt", family=FAMILY),
                                                       source="lora.ckpt")
    assert type(rebuilt.lm) is type(net.lm) and context_length == cfg.model.context_length
    net.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(*_choice_args(batch)).logits, net(*_choice_args(batch)).logits)


@pytest.mark.slow
def test_align_run_writes_parts_and_leaves_vision_and_lm_as_initialised(train_cfg):
    """recurvlm-train model=llava_tiny stage=align: only the projector moves in the checkpoint."""
    cfg = train_cfg(*SMALL, "stage=align", "task=counting", "test=false", tiny=False)
    train(cfg)
    out = Path(cfg.paths.output_dir)
    table = (out / "parts.md").read_text()
    assert "| vision_model |" in table and "| lm |" in table and table.count("frozen") == 2
    L.seed_everything(cfg.seed, workers=True)  # as train() does before building the net
    init = build_model(cfg.model.net, instantiate(cfg.model.tokenizer)).state_dict()
    saved = {k.removeprefix("model."): v for k, v in load_checkpoint(out / "checkpoints" / "last.ckpt")["state_dict"].items()
             if k.startswith("model.")}
    assert saved.keys() == init.keys()
    moved = {k for k in init if not torch.equal(saved[k], init[k])}
    assert moved == {k for k in init if k.startswith("multi_modal_projector.")}


@pytest.mark.slow
def test_instruct_lora_run_evaluates_identically_from_its_checkpoint(train_cfg, compose_cfg, tmp_path):
    """A stage=instruct_lora run's own test and recurvlm-eval on its checkpoint agree item for item."""
    cfg = train_cfg(*SMALL, "stage=instruct_lora", "task=counting", "data.n_test=8", "data.batch_size=8", tiny=False)
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert "| lm (lora) |" in (out / "parts.md").read_text()
    best = next((out / "checkpoints").glob("best-*.ckpt"))
    state = load_checkpoint(best)["state_dict"]
    assert any(".lora_B." in k and v.abs().sum() > 0 for k, v in state.items())  # trained adapters
    (tmp_path / "eval").mkdir()
    em = evaluate(compose_cfg("eval", [f"ckpt_path={best}", "task=counting", "data.n_test=8", "data.batch_size=8",
                                       "trainer.enable_progress_bar=false"], tmp_path / "eval"))
    assert em["n"] == metrics["n"] and em["accuracy"] == metrics["accuracy"]

    def probs(path: Path) -> dict:
        return {r["id"]: r["probs"] for r in map(json.loads, path.read_text().splitlines())}

    assert probs(tmp_path / "eval" / "predictions.jsonl") == probs(out / "predictions.jsonl")


def test_instruct_lora_starts_from_an_align_net_and_computes_what_it_did(train_cfg):
    """stage=align weights (no adapters) keyed for the LoRA-wrapped net by wrap_state_dict load
    strictly; with the adapters at their zero init the wrapped net equals the align net."""
    cfg, align_net, module, opt = _build(train_cfg, "align")
    batch = _batch(cfg)
    align_net.train()
    for _ in range(2):  # a trained projector, so the test would see it not carried over
        opt.zero_grad()
        align_net.loss(module(batch), batch["label"])["loss"].backward()
        opt.step()
    _, lora_net, _, _ = _build(train_cfg, "instruct_lora")  # built later: other initial weights
    state = align_net.state_dict()
    assert not torch.equal(lora_net.multi_modal_projector.linear_1.weight, state["multi_modal_projector.linear_1.weight"])
    with pytest.raises(RuntimeError, match="Missing key"):
        lora_net.load_state_dict(state, strict=True)  # peft's names differ from the plain LM's
    lora_net.load_state_dict(wrap_state_dict(state, lora_net), strict=True)
    assert {unwrapped_name(k) for k in lora_net.state_dict() if not is_adapter(k)} == set(state)
    align_net.eval(), lora_net.eval()
    with torch.no_grad():
        assert torch.equal(lora_net(*_choice_args(batch)).logits, align_net(*_choice_args(batch)).logits)
    extra = {**state, "lm.extra.weight": torch.zeros(1)}  # a key of another net is not dropped silently
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*lm\.extra\.weight"):
        lora_net.load_state_dict(wrap_state_dict(extra, lora_net), strict=True)
