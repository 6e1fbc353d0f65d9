"""ViT: parity with HF CLIP/SigLIP towers loaded by plain copy, the feedback hook, gradients, errors."""

import json

import pytest
import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    SiglipConfig,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from recurvlm.models.pretrained import (
    StateDictMismatchError,
    load_state_dict_strict,
    load_vision_tower,
    vision_kwargs_from_hf_config,
)
from recurvlm.models.vit import VisionTransformer

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
TINY_TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, vocab_size=99,
                 bos_token_id=0, eos_token_id=1)
FAMILIES = {
    "clip": (CLIPVisionConfig, CLIPVisionModel, CLIPConfig, CLIPModel),
    "siglip": (SiglipVisionConfig, SiglipVisionModel, SiglipConfig, SiglipModel),
}
OURS = dict(image_size=32, patch_size=8, width=32, depth=2, heads=4, mlp_dim=64)
VARIANTS = {
    "clip": dict(OURS),
    "siglip": dict(OURS, act="gelu_tanh", class_token=False, pre_norm=False, pool="map", layer_norm_eps=1e-6),
    "mean": dict(OURS, act="gelu", class_token=False, pre_norm=False, pool="mean"),
}


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Random offsets on every weight, so layernorms are not identities and biases not zero:
    a swapped or unused parameter then shows in the outputs."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> directory with a tiny random vision-tower checkpoint."""
    torch.manual_seed(0)
    dirs = {}
    for family, (config_cls, model_cls, _, _) in FAMILIES.items():
        dirs[family] = tmp_path_factory.mktemp(family)
        _perturb(model_cls(config_cls(**TINY))).save_pretrained(dirs[family])
    return dirs


def _pixels(size=32, batch=2, seed=1):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_loaded_tower_matches_hugging_face(family, checkpoints, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ours = load_vision_tower(str(checkpoints[family]))
    theirs = FAMILIES[family][1].from_pretrained(checkpoints[family], attn_implementation="eager").eval()
    x = _pixels()
    with torch.no_grad():
        o = ours(x, return_hidden=True, return_attention=True)
        h = theirs(x, output_hidden_states=True, output_attentions=True)
    torch.testing.assert_close(o.last_hidden_state, h.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(o.pooled, h.pooler_output, atol=1e-5, rtol=1e-5)
    assert len(o.hidden_states) == len(h.hidden_states) == TINY["num_hidden_layers"] + 1
    for a, b in zip(o.hidden_states, h.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert len(o.attentions) == len(h.attentions) == TINY["num_hidden_layers"]
    for a, b in zip(o.attentions, h.attentions):
        assert a.shape == (2, 4, ours.num_prefix_tokens + 16, ours.num_prefix_tokens + 16)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # tokens: the patch tokens after the post-layernorm, in both families
    tokens = theirs.post_layernorm(h.hidden_states[-1])[:, ours.num_prefix_tokens :]
    torch.testing.assert_close(o.tokens, tokens, atol=1e-5, rtol=1e-5)
    assert o.tokens.shape == (2, ours.num_patches, 32) and ours.grid_size == o.grid_size == (4, 4)


@pytest.mark.parametrize("family", FAMILIES)
def test_full_model_checkpoint_gives_its_vision_tower(family, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, vision_cls, config_cls, model_cls = FAMILIES[family]
    full = _perturb(model_cls(config_cls(vision_config=TINY, text_config=TINY_TEXT))).eval()
    full.save_pretrained(tmp_path)
    ours = load_vision_tower(str(tmp_path), family=family)
    x = _pixels()
    with torch.no_grad():
        torch.testing.assert_close(ours(x).pooled, full.vision_model(x).pooler_output, atol=1e-5, rtol=1e-5)
    assert vision_kwargs_from_hf_config(full.config) == vision_kwargs_from_hf_config(full.config.vision_config)


@pytest.mark.parametrize("size", [48, 40])
def test_interpolated_positions_match_hugging_face(size, checkpoints):
    ours = load_vision_tower(str(checkpoints["clip"]))
    theirs = CLIPVisionModel.from_pretrained(checkpoints["clip"]).eval()
    x = _pixels(size)
    with torch.no_grad():
        o, h = ours(x, interpolate_pos_encoding=True), theirs(x, interpolate_pos_encoding=True)
    torch.testing.assert_close(o.last_hidden_state, h.last_hidden_state, atol=1e-5, rtol=1e-5)
    assert o.grid_size == (size // 8, size // 8) and o.tokens.shape[1] == (size // 8) ** 2


@pytest.mark.parametrize("variant", VARIANTS)
def test_interpolation_at_configured_size_is_identity(variant):
    model = VisionTransformer(**VARIANTS[variant]).eval()
    x = _pixels()
    a, b = model(x), model(x, interpolate_pos_encoding=True)
    assert torch.equal(a.last_hidden_state, b.last_hidden_state) and torch.equal(a.pooled, b.pooled)


@pytest.mark.parametrize("variant", VARIANTS)
def test_sdpa_path_equals_eager_path(variant):
    model = VisionTransformer(**VARIANTS[variant]).eval()
    x = _pixels()
    with torch.no_grad():
        sdpa, eager = model(x, return_hidden=True), model(x, return_hidden=True, return_attention=True)
    assert sdpa.attentions is None
    for a, b in zip([sdpa.pooled, sdpa.tokens, *sdpa.hidden_states], [eager.pooled, eager.tokens, *eager.hidden_states]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for weights in eager.attentions:
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))


def test_identity_hook_is_the_feedforward_model():
    model = VisionTransformer(**VARIANTS["clip"]).eval()
    seen = []

    def identity(i, x):
        seen.append(i)
        return x

    x = _pixels()
    plain, hooked = model(x), model(x, layer_hook=identity)
    assert seen == [0, 1]
    assert torch.equal(plain.pooled, hooked.pooled) and torch.equal(plain.tokens, hooked.tokens)


def test_feedback_hook_changes_only_downstream():
    model = VisionTransformer(**VARIANTS["clip"]).eval()
    x = _pixels()
    feedback = torch.zeros(1, 17, 32)
    # one patch token gets top-down input; not a constant vector, which layernorm would remove
    feedback[:, 5] = torch.randn(32, generator=torch.Generator().manual_seed(2))

    def add_at_layer_1(i, stream):
        return stream + feedback if i == 1 else stream

    with torch.no_grad():
        plain = model(x, return_hidden=True, return_attention=True)
        fed = model(x, layer_hook=add_at_layer_1, return_hidden=True, return_attention=True)
    # layer 0 ran before the feedback: untouched
    assert torch.equal(plain.hidden_states[0], fed.hidden_states[0])
    assert torch.equal(plain.attentions[0], fed.attentions[0])
    # block 1 reads the stream with the feedback added
    torch.testing.assert_close(fed.hidden_states[1], plain.hidden_states[1] + feedback)
    assert not torch.allclose(plain.tokens, fed.tokens) and not torch.allclose(plain.pooled, fed.pooled)


def test_hook_returning_wrong_shape_is_named():
    model = VisionTransformer(**VARIANTS["clip"])
    with pytest.raises(ValueError, match="layer_hook at layer 0"):
        model(_pixels(), layer_hook=lambda i, x: x[:, 1:])


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_gets_a_gradient(variant):
    model = VisionTransformer(**VARIANTS[variant])
    out = model(_pixels())
    (out.pooled.square().mean() + out.tokens.square().mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        # a key bias adds the same q.b_k to every logit of a query, which softmax ignores
        if not name.endswith("k_proj.bias"):
            assert p.grad.abs().sum() > 0, name


def test_image_size_not_divisible_by_patch_size():
    with pytest.raises(ValueError, match="image_size 66 is not divisible by patch_size 16"):
        VisionTransformer(**dict(OURS, image_size=66, patch_size=16))


def test_wrong_input_size_without_interpolation():
    model = VisionTransformer(**VARIANTS["clip"])
    with pytest.raises(ValueError, match=r"48x48 pixels .* built for 32x32.*interpolate_pos_encoding=True"):
        model(_pixels(48))
    with pytest.raises(ValueError, match="not divisible by patch_size 8"):
        model(_pixels(44), interpolate_pos_encoding=True)


def test_cls_pool_needs_a_class_token():
    with pytest.raises(ValueError, match="class_token"):
        VisionTransformer(**dict(OURS, class_token=False, pool="cls"))


def test_strict_copy_names_unexpected_and_missing_keys():
    deeper = CLIPVisionModel(CLIPVisionConfig(**dict(TINY, num_hidden_layers=3)))
    model = VisionTransformer(**VARIANTS["clip"])
    with pytest.raises(StateDictMismatchError, match=r"deeper\.ckpt.*unexpected keys \[encoder\.layers\.2\.") as err:
        load_state_dict_strict(model, deeper.state_dict(), source="deeper.ckpt")
    assert "\n" not in str(err.value)
    with pytest.raises(StateDictMismatchError, match=r"missing keys \[head\.") as err:
        load_state_dict_strict(VisionTransformer(**VARIANTS["siglip"]), SiglipVisionModel(
            SiglipVisionConfig(**dict(TINY, vision_use_head=False))).state_dict(), source="headless")
    assert "\n" not in str(err.value)


def test_checkpoint_short_of_its_config_raises(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # weights of a 2-layer tower under a config that says 3: HF would init layer 2 at random
    for f in checkpoints["clip"].iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, num_hidden_layers=3)))
    with pytest.raises(StateDictMismatchError, match=r"missing keys \[encoder\.layers\.2\.") as err:
        load_vision_tower(str(tmp_path))
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_family_must_match_the_checkpoint(checkpoints):
    with pytest.raises(ValueError, match="is a clip checkpoint"):
        load_vision_tower(str(checkpoints["clip"]), family="siglip")
