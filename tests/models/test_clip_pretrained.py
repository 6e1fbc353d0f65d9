"""CLIPPair.from_pretrained: parity with HF CLIPModel / SiglipModel on tiny random checkpoints
saved to disk and loaded offline; strict loading; the recurrent variant from pretrained towers."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    SiglipConfig,
    SiglipModel,
)

from recurvlm.models.clip import CLIP_MEAN, CLIP_STD, SIGLIP_MEAN, CLIPPair
from recurvlm.models.pretrained import StateDictMismatchError
from recurvlm.models.text import load_text_tower

VISION = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64)
TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=99,
            max_position_embeddings=16)
EOS = 98  # CLIP pools at the first EOS (a non-legacy eos_token_id); SigLIP pools the last position
CONFIGS = {
    "clip": lambda: CLIPConfig(text_config=dict(TEXT, eos_token_id=EOS, bos_token_id=97, pad_token_id=EOS),
                               vision_config=VISION, projection_dim=16),
    "siglip": lambda: SiglipConfig(text_config=dict(TEXT, eos_token_id=EOS, pad_token_id=EOS), vision_config=VISION),
}
MODELS = {"clip": CLIPModel, "siglip": SiglipModel}


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Random offsets on every weight, so layernorms are not identities and biases not zero."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (directory with a tiny random full checkpoint, the HF model)."""
    torch.manual_seed(0)
    out = {}
    for family, make in CONFIGS.items():
        path = tmp_path_factory.mktemp(family)
        hf = _perturb(MODELS[family](make())).eval()
        hf.save_pretrained(path)
        out[family] = (path, hf)
    return out


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def texts(n: int = 3, length: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [n, length] right-padded with EOS as CLIP / SigLIP tokenizers pad, and their mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((n, length), EOS)
    mask = torch.zeros(n, length, dtype=torch.bool)
    for i, real in enumerate(torch.randint(3, length, (n,), generator=g).tolist()):
        ids[i, 0] = 97
        ids[i, 1 : real - 1] = torch.randint(2, 90, (real - 2,), generator=g)
        mask[i, :real] = True  # the row's EOS sits at real - 1
    return ids, mask


def images(b: int = 2, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", CONFIGS)
def test_embeddings_and_logits_equal_hugging_face(family, checkpoints):
    path, hf = checkpoints[family]
    pair = CLIPPair.from_pretrained(str(path))
    x = images()
    ids, mask = texts()
    pixels = pair.preprocess(x)
    with torch.no_grad():
        # SigLIP was trained with no attention mask (padding attended), and our tower does the same
        want = hf(input_ids=ids, pixel_values=pixels, attention_mask=mask if family == "clip" else None)
        got_img, got_txt = pair.encode_image(x), pair.encode_text(ids, mask)
        got_logits = pair.logits_per_image(x, ids, mask)
    torch.testing.assert_close(got_img, want.image_embeds, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_txt, want.text_embeds, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_logits, want.logits_per_image, rtol=1e-5, atol=1e-5)
    assert (pair.logit_bias is not None) == (family == "siglip")
    if family == "siglip":  # no projections: both are identities
        for proj in (pair.visual_projection, pair.text_projection):
            torch.testing.assert_close(proj.weight, torch.eye(32))


def test_siglip_text_tower_with_a_padding_mask_equals_hf_with_one(checkpoints):
    """The bidirectional padding-mask path (mask_padding=True) against HF given the mask."""
    path, hf = checkpoints["siglip"]
    tower = load_text_tower(str(path))
    tower.mask_padding = True
    ids, mask = texts(seed=3)
    with torch.no_grad():
        want = hf.text_model(input_ids=ids, attention_mask=mask).pooler_output
        torch.testing.assert_close(tower(ids, mask).pooled, want, rtol=1e-5, atol=1e-5)
        # SigLIP's own setting ignores the mask: the pooled state then differs (padding is attended)
        tower.mask_padding = False
        assert not torch.allclose(tower(ids, mask).pooled, want, atol=1e-4)


def test_pixel_statistics_and_resize_follow_the_checkpoint(checkpoints, tmp_path):
    clip_path, _ = checkpoints["clip"]
    pair = CLIPPair.from_pretrained(str(clip_path))  # no preprocessor_config.json: CLIP's values
    torch.testing.assert_close(pair.image_mean.flatten(), torch.tensor(CLIP_MEAN))
    torch.testing.assert_close(pair.image_std.flatten(), torch.tensor(CLIP_STD))
    assert pair.image_resize == 32
    siglip = CLIPPair.from_pretrained(str(checkpoints["siglip"][0]))
    torch.testing.assert_close(siglip.image_mean.flatten(), torch.tensor(SIGLIP_MEAN))
    # a checkpoint with its own image processor: its statistics, and pixels close to what HF's
    # processor makes of a larger image (PIL's bicubic on uint8 vs ours on floats: a few grey levels)
    hf = CLIPModel(CONFIGS["clip"]())
    hf.save_pretrained(tmp_path)
    mean, std = [0.2, 0.3, 0.4], [0.5, 0.6, 0.7]
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                   image_mean=mean, image_std=std)
    processor.save_pretrained(tmp_path)
    pair = CLIPPair.from_pretrained(str(tmp_path))
    torch.testing.assert_close(pair.image_mean.flatten(), torch.tensor(mean))
    big = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    big[:, 0, 16:48, 8:40] = 255  # a sharp red square, as our stimuli are line drawings
    big[:, 2, :, 40:] = 128
    want = processor(images=[big[0].permute(1, 2, 0).numpy()], return_tensors="pt")["pixel_values"]
    got = pair.preprocess(big)
    assert got.shape == want.shape == (1, 3, 32, 32)
    assert (got - want).abs().mean() < 0.05 and (got - want).abs().max() < 0.5


def test_wrong_kind_of_checkpoint_is_one_line(tmp_path):
    CLIPVisionModel(CLIPVisionConfig(**VISION)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'clip_vision_model' checkpoint") as e:
        CLIPPair.from_pretrained(str(tmp_path))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("family", CONFIGS)
def test_missing_weights_are_one_line_naming_keys(family, checkpoints, tmp_path):
    path, _ = checkpoints[family]
    for f in path.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    weights = load_file(tmp_path / "model.safetensors")
    drop = ["logit_scale", "text_model.final_layer_norm.weight"]
    save_file({k: v for k, v in weights.items() if k not in drop}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(StateDictMismatchError) as e:
        CLIPPair.from_pretrained(str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and all(k in msg for k in drop)


@pytest.mark.parametrize("mechanism", ["add", "gain"])
def test_recurrent_variant_from_pretrained_equals_the_pretrained_pair(mechanism, checkpoints):
    path, _ = checkpoints["clip"]
    ff = CLIPPair.from_pretrained(str(path))
    rec = CLIPPair.from_pretrained(str(path), top_down=dict(state="gru", state_dim=16, mechanism=mechanism,
                                                            layers=[1]), iterations=3)
    shared = ff.state_dict()
    assert all(torch.equal(v, shared[k]) for k, v in rec.state_dict().items() if k in shared)
    assert set(shared) <= set(rec.state_dict())
    ids, mask = texts(n=4, seed=5)
    choice_ids, choice_mask = ids.view(2, 2, -1), mask.view(2, 2, -1)
    valid = torch.ones(2, 2, dtype=torch.bool)
    q_ids, q_mask = texts(n=2, seed=6)
    with torch.no_grad():
        want = ff(images(), choice_ids, choice_mask, valid).logits
        got = rec(images(), choice_ids, choice_mask, valid, q_ids, q_mask).logits
    assert got.shape == (3, 2, 2)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    # zero-initialised feedback and readout: every iteration is still the feedforward pair
    torch.testing.assert_close(got, want.expand_as(got), rtol=1e-5, atol=1e-5)
    assert any(k.startswith("top_down.") for k, p in rec.named_parameters() if p.requires_grad)


def test_pretrained_pair_still_trains(checkpoints):
    """Every parameter of a loaded pair receives a gradient from the choice loss (the
    identity projections of SigLIP included: lr_mult decides what is frozen, not loading)."""
    pair = CLIPPair.from_pretrained(str(checkpoints["siglip"][0])).train()
    ids, mask = texts(n=4, seed=7)
    out = pair(images(), ids.view(2, 2, -1), mask.view(2, 2, -1), torch.ones(2, 2, dtype=torch.bool))
    pair.loss(out, torch.tensor([0, 1]))["loss"].backward()
    # k_proj biases add one constant per query to every score: softmax is blind to them
    dead = [n for n, p in pair.named_parameters() if (p.grad is None or not p.grad.any()) and not n.endswith("k_proj.bias")]
    assert dead == ["logit_bias"]  # a bias shared by every choice cancels in the softmax over choices
