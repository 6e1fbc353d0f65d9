"""The LLaVA-style pair: parity with transformers' LlavaForConditionalGeneration on a tiny
random llava-hf checkpoint saved to disk and loaded offline; splicing; choice scoring."""

from __future__ import annotations

import pytest
import torch

from recurvlm.models.llava import LlavaPair, Projector
from recurvlm.models.pretrained import StateDictMismatchError

IMAGE_TOKEN = 99


def tiny_llava(tmp_path, *, select: str = "default", layer: int = -2):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    vc = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                          image_size=32, patch_size=8, projection_dim=16)
    tc = LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=100, max_position_embeddings=128)
    cfg = LlavaConfig(vision_config=vc, text_config=tc, image_token_index=IMAGE_TOKEN, projector_hidden_act="gelu",
                      vision_feature_layer=layer, vision_feature_select_strategy=select,
                      image_seq_length=16 if select == "default" else 17)
    hf = LlavaForConditionalGeneration(cfg).eval()
    hf.save_pretrained(tmp_path)
    return hf


def prompt(b: int, n_image: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 90, (b, 5 + n_image + 4), generator=g)
    ids[:, 5 : 5 + n_image] = IMAGE_TOKEN
    return ids


@pytest.mark.parametrize("select,layer", [("default", -2), ("full", -1)])
def test_llava_pair_equals_transformers_llava(tmp_path, monkeypatch, select, layer):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = tiny_llava(tmp_path, select=select, layer=layer)
    ours = LlavaPair.from_pretrained(str(tmp_path))
    assert ours.num_image_tokens == (16 if select == "default" else 17)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ids = prompt(2, ours.num_image_tokens)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        want = hf(input_ids=ids, pixel_values=pixels, attention_mask=mask).logits
        got = ours.lm_logits(pixels, ids, mask)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_choice_logprobs_are_the_sums_of_next_token_logprobs(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny_llava(tmp_path)
    pair = LlavaPair.from_pretrained(str(tmp_path))
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    p_ids = prompt(2, 16, seed=3)
    p_mask = torch.ones_like(p_ids)
    a_ids = torch.tensor([[[5, 6, 0], [7, 0, 0]], [[8, 9, 10], [11, 12, 0]]])
    a_mask = a_ids != 0
    with torch.no_grad():
        scores = pair.choice_logprobs(pixels, p_ids, p_mask, a_ids, a_mask)
        for i in range(2):
            for k in range(2):
                n = int(a_mask[i, k].sum())
                seq = torch.cat([p_ids[i], a_ids[i, k, :n]])[None]
                logp = pair.lm_logits(pixels[i : i + 1], seq).log_softmax(-1)[0]
                want = sum(logp[len(p_ids[i]) - 1 + j, a_ids[i, k, j]] for j in range(n))
                torch.testing.assert_close(scores[i, k], want, rtol=1e-4, atol=1e-4)


def test_bad_inputs_fail_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = tiny_llava(tmp_path)
    pair = LlavaPair.from_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match=r"exactly 16 image tokens \(id 99\); got \[15, 16\]"):
        ids = prompt(2, 16)
        ids[0, 5] = 3
        pair.lm_logits(torch.zeros(2, 3, 32, 32), ids)
    with pytest.raises(ValueError, match="valid: linear, mlp<N>x_gelu"):
        Projector("mlp2x_relu", 4, 4)
    # a checkpoint that lacks the projector: a one-line error, not random weights
    from safetensors.torch import load_file, save_file

    f = next(tmp_path.glob("*.safetensors"))
    state = {k: v for k, v in load_file(f).items() if "multi_modal_projector" not in k}
    save_file(state, f, metadata={"format": "pt"})
    with pytest.raises(StateDictMismatchError, match="multi_modal_projector"):
        LlavaPair.from_pretrained(str(tmp_path))
    del hf


def test_matching_interface_scores_each_choice_after_its_own_unpadded_prompt(tmp_path, monkeypatch):
    """forward(images, choices, ..., question) = the log-likelihood of each answer after
    [image tokens, question], whatever the padding of a batch of different lengths."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny_llava(tmp_path)
    pair = LlavaPair.from_pretrained(str(tmp_path))
    bos, eos = 1, 2
    questions = [[bos, 10, 11, 12], [bos, 20, 21]]
    answers = [[[30], [31, 32]], [[40, 41, 42], [43]]]
    L = 9
    q_ids = torch.zeros(2, L, dtype=torch.long)
    c_ids = torch.zeros(2, 2, L, dtype=torch.long)
    for i, q in enumerate(questions):
        q_ids[i, : len(q) + 1] = torch.tensor(q + [eos])
        for k, a in enumerate(answers[i]):
            c_ids[i, k, : len(q) + len(a) + 1] = torch.tensor(q + a + [eos])
    q_mask, c_mask = q_ids != 0, c_ids != 0
    valid = torch.ones(2, 2, dtype=torch.bool)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = pair(images, c_ids, c_mask, valid, q_ids, q_mask)
        assert out.logits.shape == (1, 2, 2)
        for i, q in enumerate(questions):
            for k, a in enumerate(answers[i]):
                target = a + [eos]
                seq = torch.tensor([IMAGE_TOKEN] * 16 + q + target)[None]
                logp = pair.lm_logits(pair.preprocess(images[i : i + 1]), seq).log_softmax(-1)[0]
                start = 16 + len(q)
                want = sum(logp[start - 1 + j, t] for j, t in enumerate(target))
                torch.testing.assert_close(out.logits[0, i, k], want, rtol=1e-4, atol=1e-4)
        # a padding choice scores -inf
        valid[1, 1] = False
        assert pair(images, c_ids, c_mask, valid, q_ids, q_mask).logits[0, 1, 1] == float("-inf")


def test_features_api_and_recorded_attention(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny_llava(tmp_path)
    pair = LlavaPair.from_pretrained(str(tmp_path))
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    feats = pair.features(images, layers=[0, -1])
    with torch.no_grad():
        v = pair.vision_model(pair.preprocess(images), return_hidden=True)
    assert feats.layers == (0, 2) and feats.tokens.shape == (1, 2, 2, 16, 32) and feats.state is None
    torch.testing.assert_close(feats.tokens[0, 0], v.hidden_states[1][:, 1:], rtol=0, atol=0)
    torch.testing.assert_close(feats.tokens[0, 1], v.hidden_states[3][:, 1:], rtol=0, atol=0)
    ids = torch.tensor([[[1, 10, 30, 2], [1, 10, 31, 2]]] * 2)
    q = torch.tensor([[1, 10, 2, 0]] * 2)
    with torch.no_grad():
        plain = pair(images, ids, ids != 0, torch.ones(2, 2, dtype=torch.bool), q, q != 0)
        rec = pair(images, ids, ids != 0, torch.ones(2, 2, dtype=torch.bool), q, q != 0, record=True)
    assert len(rec.maps["attentions"]) == 1 and len(rec.maps["attentions"][0]) == 3
    assert rec.maps["attentions"][0][0].shape == (2, 2, 17, 17)
    torch.testing.assert_close(rec.logits, plain.logits, rtol=1e-5, atol=1e-5)  # the eager path changes nothing
