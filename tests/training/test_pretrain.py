"""Image-text pretraining: the LM loss, contrastive steps, recurvlm-pretrain end to end for both
pairs (lr_mult freezing honoured), and `recurvlm-train init_from=` fine-tuning from its checkpoint."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from recurvlm.data.image_text import IGNORE_INDEX, CaptionCollate, ShardDataModule, ShardDataset
from recurvlm.models.lora import is_adapter, unwrapped_name
from recurvlm.models.tokenizer import split_words
from recurvlm.pretrain import pretrain
from recurvlm.train import build_model, train
from recurvlm.training.checkpoints import CheckpointError, load_checkpoint, load_model
from recurvlm.training.pretraining import ContrastiveModule, lm_loss

CAPTIONS = ["a maze", "two dots on a curve", "a red square", "the figure on the ground", "three circles",
            "a green plus sign", "one blue triangle", "a curve and a line"]


def png_bytes(seed: int, size: int = 24) -> bytes:
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size + 4, 3), dtype=np.uint8)).save(b, "PNG")
    return b.getvalue()


def make_shards(root: Path) -> str:
    """Two shards of 4 image-caption pairs; one sample's image is corrupt."""
    for s in range(2):
        with tarfile.open(root / f"shard-{s}.tar", "w") as tar:
            for k in range(4):
                i = 4 * s + k
                for ext, data in (("png", png_bytes(i) if i != 5 else b"corrupt"), ("txt", CAPTIONS[i].encode())):
                    info = tarfile.TarInfo(f"{i:04d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(root / "shard-{0..1}.tar")


def make_chat(root: Path) -> tuple[Path, Path]:
    """chat.json over images/: 6 conversations, one of them with a missing image."""
    images = root / "images"
    images.mkdir()
    recs = []
    for i in range(6):
        if i != 4:
            (images / f"{i}.png").write_bytes(png_bytes(i))
        recs.append({"id": i, "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nhow many dots are there?"}, {"from": "gpt", "value": f"{i} dots"},
            {"from": "human", "value": "is it a maze?"}, {"from": "gpt", "value": "yes" if i % 2 else "no"}]})
    (root / "chat.json").write_text(json.dumps(recs))
    return root / "chat.json", images


@pytest.fixture
def pretrain_cfg(compose_cfg, tiny_overrides, tmp_path):
    """`pretrain_cfg(*overrides)`: the pretrain config with train's tiny model overrides."""
    counter = iter(range(100))

    def make(*overrides: str, tiny: bool = True):
        """tiny: the CLIP towers' tiny sizes (train's conftest); else only the quiet trainer."""
        out = tmp_path / f"pretrain{next(counter)}"
        out.mkdir()
        skip = ("debug=",) if tiny else ("debug=", "model.")
        base = [o for o in tiny_overrides if not o.startswith(skip)]
        return compose_cfg("pretrain", [*base, "trainer.log_every_n_steps=1", "optim.scheduler.warmup_steps=1",
                                        *overrides], out)

    return make


def test_lm_loss_equals_the_hf_causal_lm_loss():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=4)).eval()
    ids = torch.randint(0, 50, (3, 9))
    labels = ids.masked_fill(torch.rand(3, 9) < 0.5, IGNORE_INDEX)
    out = lm(input_ids=ids, labels=labels)
    assert torch.allclose(lm_loss(out.logits, labels)["lm_loss"], out.loss, atol=1e-6)
    assert lm_loss(out.logits, torch.full_like(ids, IGNORE_INDEX))["lm_loss"] == 0  # nothing to learn: 0, not NaN


def test_contrastive_steps_lower_the_loss_on_a_fixed_batch(pretrain_cfg, tmp_path):
    cfg = pretrain_cfg()
    tok = instantiate(cfg.model.tokenizer)
    L.seed_everything(0)
    net = build_model(cfg.model.net, tok)
    ds = ShardDataset(make_shards(tmp_path), image_size=cfg.task.image_size, shuffle=False)
    with pytest.warns(UserWarning, match="0005"):
        batch = CaptionCollate(tok, cfg.model.context_length, cfg.task.image_size)(list(ds))
    assert batch["skipped"] == 1 and len(batch["image"]) == 7
    module = ContrastiveModule(model=net, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3))
    opt = module.configure_optimizers()
    losses = []
    for _ in range(30):
        loss = module.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_pretrain_on_shards_then_fine_tune_with_init_from(pretrain_cfg, train_cfg, tmp_path, capsys):
    cfg = pretrain_cfg(f"pretrain_data.shards='{make_shards(tmp_path)}'", "pretrain_data.batch_size=4",
                       "trainer.max_steps=4")
    with pytest.warns(UserWarning, match="0005"):
        result = pretrain(cfg)
    ckpt = load_checkpoint(result["checkpoint"], family="clip")
    assert ckpt["global_step"] == 4 and result["skipped"] >= 1
    assert capsys.readouterr().out.strip().splitlines()[-2] == f"skipped: {result['skipped']}"
    net, tok, _ = load_model(result["checkpoint"])  # the recurvlm entry rebuilds the net
    assert all(w in tok.tokens for c in CAPTIONS for w in split_words(c))  # the data's words were appended
    assert (Path(cfg.paths.output_dir) / "parts.md").read_text().startswith("| part |")

    # lr 0: fine-tuning leaves the weights as loaded, so the run's checkpoint holds exactly the pretrained net
    ft = train_cfg(f"init_from={result['checkpoint']}", "optim.optimizer.lr=0", "test=false", "data.n_train=16")
    train(ft)
    tuned = torch.load(Path(ft.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert tuned["recurvlm"]["tokenizer"] == ckpt["recurvlm"]["tokenizer"]  # the checkpoint's vocabulary
    pre = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    assert pre.keys() == {k for k in tuned["state_dict"] if k.startswith("model.")}
    assert all(torch.equal(v, tuned["state_dict"][k]) for k, v in pre.items())
    fresh = build_model(ft.model.net, tok).state_dict()
    assert not torch.equal(fresh["vision_model.embeddings.patch_embedding.weight"],
                           pre["model.vision_model.embeddings.patch_embedding.weight"])

    with pytest.raises(CheckpointError, match=r"init_from=.*last\.ckpt does not fit model\.net: shape mismatch: "
                                              r"vision_model\.") as e:
        train(train_cfg(f"init_from={result['checkpoint']}", "model.net.vision.width=48"))
    assert "\n" not in str(e.value)


def test_llava_lm_pretraining_honours_lr_mult_freezing_and_instruct_lora_starts_from_it(pretrain_cfg, train_cfg,
                                                                                        tmp_path):
    chat, images = make_chat(tmp_path)
    cfg = pretrain_cfg("model=llava_tiny", "pretrain_data=llava_json", f"pretrain_data.path={chat}",
                       f"pretrain_data.image_folder={images}", "pretrain_data.batch_size=3", "trainer.max_steps=3",
                       "++model.lr_mult={vision_model: 0, lm: 0}", tiny=False)  # as stage=align: the projector alone
    with pytest.warns(UserWarning, match=r"chat\.json: record 4 \(id 4\): image .*4\.png") as caught:
        result = pretrain(cfg)
    assert not [w for w in caught if "not in the vocabulary" in str(w.message)]  # role names included
    assert result["skipped"] >= 1 and np.isfinite(result["train_loss"])
    tuned, tok, _ = load_model(result["checkpoint"])
    L.seed_everything(cfg.seed)  # pretrain() builds its net right after seeding: the same initial weights
    initial = build_model(cfg.model.net, tok).state_dict()
    changed = {k for k, v in tuned.state_dict().items() if not torch.equal(v, initial[k])}
    assert changed and all(k.startswith("multi_modal_projector.") for k in changed)
    assert changed == {k for k in initial if k.startswith("multi_modal_projector.")}  # every projector weight trained
    parts = (Path(cfg.paths.output_dir) / "parts.md").read_text()
    assert "| vision_model |" in parts and "| lm |" in parts and parts.count("frozen") == 2

    # stage=instruct_lora fine-tunes it: the LoRA-wrapped LM takes the base weights, adapters start at zero effect
    ft = train_cfg("model=llava_tiny", "stage=instruct_lora", f"init_from={result['checkpoint']}", "debug=fast",
                   "data.n_train=4", "data.n_val=4", "optim.optimizer.lr=0", "test=false",
                   "trainer.enable_progress_bar=false", "callbacks.progress_bar=null", tiny=False)
    train(ft)
    lora_net, _, _ = load_model(Path(ft.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert any(is_adapter(k) for k in lora_net.state_dict())
    assert {unwrapped_name(k): v for k, v in lora_net.state_dict().items() if not is_adapter(k)}.keys() == \
        tuned.state_dict().keys()
    assert all(torch.equal(v, tuned.state_dict()[unwrapped_name(k)]) for k, v in lora_net.state_dict().items()
               if not is_adapter(k))


def test_shard_epochs_reshuffle_and_skips_in_worker_processes_are_counted(pretrain_cfg, tmp_path):
    """Lightning tells only samplers the epoch: the module hands it to the shards, whose
    non-persistent workers then read a new order; skips made inside workers reach the count."""
    cfg = pretrain_cfg("task.image_size=16", "model.net.vision.depth=1")
    tok = instantiate(cfg.model.tokenizer)
    dm = ShardDataModule(shards=make_shards(tmp_path), image_size=16, batch_size=2, num_workers=2, shuffle_buffer=4)
    dm.collate = CaptionCollate(tok, cfg.model.context_length, 16)
    seen: dict[int, list[str]] = {}

    class Recording(ContrastiveModule):
        def training_step(self, batch, batch_idx):
            seen.setdefault(self.current_epoch, []).extend(batch["id"])
            return super().training_step(batch, batch_idx)

    module = Recording(model=build_model(cfg.model.net, tok), optimizer=lambda params: torch.optim.SGD(params, lr=0.0))
    L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(module, datamodule=dm)
    good = sorted(f"shard-{i // 4}.tar/{i:04d}" for i in range(8) if i != 5)
    assert all(sorted(ids) == good for ids in seen.values()) and len(seen) == 3
    assert len({tuple(ids) for ids in seen.values()}) == 3  # a new order every epoch
    assert module.skipped == 3  # the corrupt sample, once per epoch, counted from the worker processes
