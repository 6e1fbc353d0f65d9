"""The feedforward CLIP-style pair: late fusion, choice scoring, losses, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from recurvlm.models import losses
from recurvlm.models.clip import CLIPPair
from recurvlm.models.text import TextTransformer
from recurvlm.models.tokenizer import WordTokenizer
from recurvlm.models.vit import VisionTransformer

TOK = WordTokenizer(["is", "the", "dot", "on", "figure", "yes", "no", "maybe", "curve", "same"])


def make_pair(*, logit_bias_init=None) -> CLIPPair:
    torch.manual_seed(0)
    vision = VisionTransformer(image_size=32, patch_size=8, width=32, depth=2, heads=4, mlp_dim=64, act="gelu")
    text = TextTransformer(vocab_size=TOK.vocab_size, context_length=12, width=32, depth=2, heads=4, mlp_dim=64,
                           eos_token_id=TOK.eos_token_id)
    return CLIPPair(vision=vision, text=text, vision_width=32, text_width=32, embed_dim=16, logit_bias_init=logit_bias_init)


def encode_choices(question: str, choices: list[str], k: int | None = None):
    k = k or len(choices)
    texts = [f"{question} {c}" for c in choices] + [""] * (k - len(choices))
    ids, mask = TOK.encode(texts, context_length=12)
    valid = torch.tensor([[i < len(choices) for i in range(k)]])
    return ids[None], mask[None], valid


def test_image_embedding_never_sees_the_question():
    model = make_pair().eval()
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    a = model(images, *encode_choices("is the dot on the figure?", ["yes", "no"]))
    b = model(images, *encode_choices("is the dot on the same curve?", ["no", "maybe", "yes"]))
    torch.testing.assert_close(a.image_embeds, b.image_embeds, rtol=0, atol=0)
    assert a.logits.shape == (1, 1, 2) and b.logits.shape == (1, 1, 3)


def test_padding_choices_score_minus_inf_and_leave_the_others_unchanged():
    model = make_pair().eval()
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    plain = model(images, *encode_choices("is the dot on the figure?", ["yes", "no"])).final_logits
    padded = model(images, *encode_choices("is the dot on the figure?", ["yes", "no"], k=4)).final_logits
    torch.testing.assert_close(padded[:, :2], plain)
    assert torch.isneginf(padded[:, 2:]).all()
    loss = model.loss(model(images, *encode_choices("is the dot on the figure?", ["yes", "no"], k=4)), torch.tensor([1]))
    assert torch.isfinite(loss["loss"]) and set(loss) == {"loss", "choice_loss"}


@pytest.mark.parametrize("bias", [None, -10.0])
def test_every_parameter_gets_a_gradient(bias):
    model = make_pair(logit_bias_init=bias)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    ids, mask = TOK.encode(["is the dot on the figure? yes", "is the dot on the same curve? no"], context_length=12)
    terms = model.contrastive_loss(images, ids, mask)
    out = model(images, *(t.expand(2, *t.shape[1:]) for t in encode_choices("is the dot on the figure?", ["yes", "no"])))
    (sum(terms.values()) + model.loss(out, torch.tensor([0, 1]))["loss"]).backward()
    # k_proj biases add one constant per query to every score: softmax is blind to them (zero gradient).
    dead = [n for n, p in model.named_parameters() if p.grad is None or (p.grad == 0).all() and not n.endswith("k_proj.bias")]
    assert dead == []
    assert ("sigmoid_loss" if bias is not None else "contrastive_loss") in terms


def test_infonce_rewards_matching_pairs():
    e = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    scale = torch.tensor(math.log(100.0))
    matched = losses.clip_loss(e, e, scale)["contrastive_loss"]
    shuffled = losses.clip_loss(e, e.roll(1, 0), scale)["contrastive_loss"]
    assert matched < 0.05 < shuffled


def test_sigmoid_loss_matches_its_definition():
    img = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    scale, bias = torch.tensor(1.5), torch.tensor(-2.0)
    z = scale.exp() * img @ txt.t() + bias
    expected = -sum(math.log(torch.sigmoid(z[i, j] if i == j else -z[i, j])) for i in range(3) for j in range(3)) / 3
    assert losses.siglip_loss(img, txt, scale, bias)["sigmoid_loss"].item() == pytest.approx(expected, rel=1e-5)
