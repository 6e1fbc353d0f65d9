"""Border-ownership selectivity (recurvlm.neuro): the standard test set and the unit statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recurvlm.neuro import side_selectivity, zhou_responses, zhou_test_set


def test_zhou_set_keeps_the_local_edge_identical_within_a_polarity():
    z = zhou_test_set(4, seed=8000)
    assert z.images.shape == (4, 2, 2, 3, 64, 64) and torch.equal(z.images, zhou_test_set(4, seed=8000).images)
    for k in range(4):
        x, y = (int(v) for v in z.markers[k])
        win = z.images[k, :, :, :, y - 3 : y + 4, x - 3 : x + 4]  # [side, polarity, 3, 7, 7]
        for p in range(2):
            assert torch.equal(win[0, p], win[1, p])  # the dot's neighbourhood: same pixels
        assert not torch.equal(win[0, 0], win[0, 1])  # the polarities differ there
        assert not torch.equal(z.images[k, 0, 0], z.images[k, 1, 0])  # the owning side differs


def test_side_selectivity_finds_side_units_not_polarity_or_contrast_units():
    g = np.random.default_rng(0)
    n = 40
    noise = g.normal(size=(n, 2, 2, 4))
    resp = noise.copy()
    resp[:, 0, :, 0] += 1.5  # unit 0: prefers the figure on the left, at both polarities
    resp[:, :, 0, 1] += 3.0  # unit 1: polarity only
    resp[:, 0, 0, 2] += 3.0  # unit 2: a side effect that reverses with polarity (a contrast unit)
    resp[:, 1, 1, 2] += 3.0
    s = side_selectivity(resp, alpha=0.01)
    assert s["selective"].tolist() == [True, False, False, False]
    assert s["preferred"][0] == 0 and s["boi"][0] > 0.2 and s["share"] == 0.25
    many = g.normal(size=(n, 2, 2, 50))
    many[:, 0, :, :20] += 1.5
    assert side_selectivity(many)["share_p"] < 1e-6 and side_selectivity(g.normal(size=(n, 2, 2, 50)))["share_p"] > 0.01


def test_responses_are_the_dot_tokens_of_the_features_api():
    from recurvlm.models.clip import CLIPPair
    from recurvlm.models.text import TextTransformer
    from recurvlm.models.tokenizer import WordTokenizer
    from recurvlm.models.vit import VisionTransformer

    torch.manual_seed(0)
    tok = WordTokenizer.for_tasks()
    model = CLIPPair(vision=VisionTransformer(image_size=64, patch_size=8, width=16, depth=2, heads=2, mlp_dim=32,
                                              act="gelu"),
                     text=TextTransformer(vocab_size=tok.vocab_size, context_length=24, width=16, depth=1, heads=2,
                                          mlp_dim=32, act="gelu", eos_token_id=2),
                     vision_width=16, text_width=16, embed_dim=8).eval()
    z = zhou_test_set(3, seed=8000)
    resp, layers = zhou_responses(model, tok, 24, z, batch_size=5)  # batches that cut across instances
    assert resp.shape == (1, 2, 3, 2, 2, 16) and layers == (0, 1)
    k, side, pol = 2, 1, 0
    feats = model.features(z.images[k, side, pol][None])
    x, y = z.markers[k]
    token = int(y // 8) * 8 + int(x // 8)
    torch.testing.assert_close(torch.from_numpy(resp[0, :, k, side, pol]), feats.tokens[0, :, 0, token], rtol=1e-4, atol=1e-5)


def test_fgm_regions_index_and_latency():
    from recurvlm.neuro import fgm_regions, latency, modulation_index

    figure = torch.zeros(1, 8, 8, dtype=torch.bool)
    figure[0, 2:8, 2:8] = True  # patches (1,1),(1,2)... with patch 2: a 3x3 block of figure patches
    boundary = torch.zeros(1, 8, 8, dtype=torch.bool)
    boundary[0, 2, 2:8] = True
    boundary[0, 2:8, 2] = True
    reg = fgm_regions(figure, boundary, 2).view(4, 4)
    assert reg[0].tolist() == [0, 0, 0, 0] and reg[1].tolist() == [0, 2, 2, 2] and reg[2].tolist() == [0, 2, 1, 1]
    tokens = torch.ones(2, 1, 16, 3)  # [T, B, N, D]
    tokens[1, 0, reg.flatten() == 1] *= 3.0  # the centre doubles its norm... triples, at t = 2
    m = modulation_index(tokens, reg.flatten()[None])
    assert abs(m["centre"][0].item()) < 1e-6 and m["centre"][1].item() == pytest.approx(0.5)
    torch.testing.assert_close(m["edge"], torch.zeros(2, 1))
    assert latency([0.0, 0.2, 0.4]) == pytest.approx(2.0) and latency([0.4, 0.4]) == 1.0
    assert latency([0.0, 0.1, 0.3]) == pytest.approx(2.25) and np.isnan(latency([0.0, -0.1]))
