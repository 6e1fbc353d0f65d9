"""The optional auxiliary dense loss: targets, the collate that carries them, the head on both
model families, and a training run with it on (experiment=dense)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from recurvlm.data.datamodule import ChoiceCollate
from recurvlm.data.datasets import StimulusDataset
from recurvlm.models.clip import CLIPPair
from recurvlm.models.losses import dense_loss
from recurvlm.models.tokenizer import WordTokenizer
from recurvlm.train import train


def test_a_patch_is_positive_where_any_of_its_pixels_is():
    maps = torch.zeros(2, 8, 8, dtype=torch.bool)
    maps[0, 5, 2] = True  # patch (1, 0) of a 2x2 grid of 4-px patches
    maps[1, 0, 7] = True  # patch (0, 1)
    logits = torch.randn(3, 2, 2, 2)  # [T, B, h, w]
    target = torch.zeros(2, 2, 2)
    target[0, 1, 0] = target[1, 0, 1] = 1.0
    per_t = [F.binary_cross_entropy_with_logits(lg, target) for lg in logits]
    torch.testing.assert_close(dense_loss(logits, maps, mode="mean")["dense_loss"], torch.stack(per_t).mean())
    torch.testing.assert_close(dense_loss(logits, maps, mode="last")["dense_loss"], per_t[-1])
    only_first = dense_loss(logits, maps, torch.tensor([True, False]), mode="last")["dense_loss"]
    torch.testing.assert_close(only_first, F.binary_cross_entropy_with_logits(logits[-1, :1], target[:1]))
    assert dense_loss(logits, maps, torch.tensor([False, False]))["dense_loss"] == 0


def test_the_collate_carries_the_named_map_of_each_task_and_marks_the_rest():
    tok = WordTokenizer.for_tasks()
    curves = StimulusDataset("curve_tracing", 2, seed=3, difficulty="easy", with_maps=True)
    counts = StimulusDataset("counting", 1, seed=3, difficulty="easy", with_maps=True)
    items = [curves[0], counts[0], curves[1]]
    batch = ChoiceCollate(tok, 24, {"curve_tracing": "target_curve"})(items)
    assert batch["dense_valid"].tolist() == [True, False, True]
    assert torch.equal(batch["dense_maps"][0], curves[0]["maps"]["target_curve"].bool())
    assert not batch["dense_maps"][1].any() and "maps" not in batch
    with pytest.raises(KeyError, match="valid: curves, target_curve"):
        ChoiceCollate(tok, 24, {"curve_tracing": "path"})(items)


def towers():
    from recurvlm.models.text import TextTransformer
    from recurvlm.models.vit import VisionTransformer

    torch.manual_seed(0)
    return (VisionTransformer(image_size=16, patch_size=4, width=16, depth=3, heads=2, mlp_dim=32, act="gelu"),
            TextTransformer(vocab_size=20, context_length=8, width=16, depth=1, heads=2, mlp_dim=32, act="gelu",
                            eos_token_id=2))


def test_the_dense_head_reads_the_same_tokens_in_both_families():
    """At initialisation (zero feedback) every iteration of the recurrent model sees the
    feedforward vision tokens, so its dense logits equal the feedforward model's."""
    vision, text = towers()
    kw = dict(vision=vision, text=text, vision_width=16, text_width=16, embed_dim=8, dense_weight=1.0)
    rec = CLIPPair(**kw, iterations=3, top_down={"state": "gru", "state_dim": 8, "mechanism": "add", "layers": [1]})
    ff = CLIPPair(**kw)
    ff.load_state_dict({k: v for k, v in rec.state_dict().items() if not k.startswith("top_down.")})
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=g)
    ids = torch.randint(3, 20, (2, 2, 8), generator=g)
    ids[..., 5] = 2
    mask, valid = torch.ones(2, 2, 8, dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool)
    with torch.no_grad():
        a = rec(images, ids, mask, valid, ids[:, 0], mask[:, 0]).dense_logits
        b = ff(images, ids, mask, valid).dense_logits
    assert a.shape == (3, 2, 4, 4) and b.shape == (1, 2, 4, 4)
    torch.testing.assert_close(a, b.expand(3, -1, -1, -1), rtol=0, atol=1e-6)
    assert CLIPPair(**{**kw, "dense_weight": 0.0}).dense_head is None
    with pytest.raises(ValueError, match="dense_weight"):
        CLIPPair(**{**kw, "dense_weight": -1.0})


@pytest.mark.slow
def test_training_with_the_dense_loss_logs_it_and_needs_maps(train_cfg):
    cfg = train_cfg("experiment=dense", "task=curve_tracing", "model=recurrent_tiny", "model.net.iterations=2",
                    "task.train_levels=[easy]", "task.eval_levels=[easy]", "trainer.max_epochs=1")
    train(cfg)
    rows = list(csv.DictReader(open(next((Path(cfg.paths.output_dir) / "csv").rglob("metrics.csv")))))
    dense = [float(r["train/dense_loss"]) for r in rows if r.get("train/dense_loss")]
    assert dense and all(math.isfinite(x) and x > 0 for x in dense)
    assert any(r.get("val/dense_loss") for r in rows)
    bad = train_cfg("model.net.dense_weight=1.0", "task=curve_tracing", "trainer.max_epochs=1")
    with pytest.raises(ValueError, match="data.dense_maps"):
        train(bad)
