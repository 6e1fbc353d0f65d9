"""The recurrent top-down LLaVA variant: the feedforward pair at initialisation, the step loop,
gradients, the features API and recorded maps, and the image features each sweep hands the LM."""

from __future__ import annotations

import pytest
import torch

from recurvlm.models.llava import LlavaPair
from recurvlm.models.vit import VisionTransformer

from topdown_cases import (MECHANISMS, STATES, assert_every_parameter_gets_a_gradient,  # tests/models/
                           assert_record_returns_per_iteration_maps, top_down_config, trained_a_little)

IMAGE_TOKEN = 29


def parts(seed: int = 0):
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    vision = VisionTransformer(image_size=16, patch_size=4, width=16, depth=3, heads=2, mlp_dim=32, act="gelu")
    lm = AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=30, hidden_size=16, intermediate_size=32,
                                                      num_hidden_layers=2, num_attention_heads=2,
                                                      num_key_value_heads=2, max_position_embeddings=64))
    return vision, lm


def make(state: str = "gru", mechanism: str = "add", layers=(1,), iterations: int = 3, seed: int = 0,
         **kw) -> LlavaPair:
    vision, lm = parts(seed)
    top_down = top_down_config(state, mechanism, layers)
    return LlavaPair(vision=vision, lm=lm, image_token_id=IMAGE_TOKEN, top_down=top_down, iterations=iterations,
                     **kw)


def baseline_of(model: LlavaPair) -> LlavaPair:
    """The feedforward pair with the variant's tower, projector and LM (no top-down module)."""
    base = LlavaPair(vision=model.vision_model, lm=model.lm, image_token_id=IMAGE_TOKEN,
                     feature_layer=model.feature_layer, select=model.select)
    base.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("top_down.")})
    return base


def batch(b: int = 3, k: int = 2, seed: int = 1):
    """Questions [bos, w, w, (w), eos] of two lengths and choices "<question> <answer>", right-padded."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, 3, 16, 16), dtype=torch.uint8, generator=g)
    L = 8
    q_ids = torch.zeros(b, L, dtype=torch.long)
    c_ids = torch.zeros(b, k, L, dtype=torch.long)
    for i in range(b):
        q = [1] + torch.randint(3, 20, (2 + i % 2,), generator=g).tolist()
        q_ids[i, : len(q) + 1] = torch.tensor(q + [2])
        for j in range(k):
            c = q + [20 + j] + [2]
            c_ids[i, j, : len(c)] = torch.tensor(c)
    valid = torch.ones(b, k, dtype=torch.bool)
    return images, c_ids, c_ids != 0, valid, q_ids, q_ids != 0



@pytest.mark.parametrize("state", list(STATES))
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_at_initialisation_the_first_iteration_is_the_feedforward_pair(state, mechanism):
    model = make(state, mechanism).eval()
    x = batch()
    with torch.no_grad():
        out = model(*x)
        base = baseline_of(model)(*x)
    assert out.logits.shape == (3, 3, 2) and base.logits.shape == (1, 3, 2)
    torch.testing.assert_close(out.logits[0], base.logits[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.image_embeds[0], base.image_embeds[0], rtol=0, atol=1e-5)
    if mechanism in ("add", "gain"):  # zero feedback: every sweep is the feedforward sweep
        torch.testing.assert_close(out.logits, base.logits.expand(3, -1, -1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("state", list(STATES))
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_a_step_loop_equals_forward_at_any_t(state, mechanism):
    x = batch()
    model = trained_a_little(make(state, mechanism)).eval()
    with torch.no_grad():
        out = model(*x, iterations=5)  # trained at T = 3: any T at test time
        prompt = model.choice_prompt(x[1], x[2], x[3], x[4])
        carry = model.start(x[0], x[4], x[5])
        stepped = []
        for _ in range(5):
            (logits, _), carry = model.step(carry, prompt)
            stepped.append(logits)
        short = model(*x, iterations=2)
    assert out.logits.shape == (5, 3, 2)
    torch.testing.assert_close(torch.stack(stepped), out.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.state, carry.state, rtol=0, atol=1e-6)
    torch.testing.assert_close(short.logits, out.logits[:2], rtol=0, atol=1e-6)  # anytime
    # feedback and readout change the answer (by 6e-5 or more here; float32 noise is ~5e-7)
    assert (out.logits[0] - out.logits[-1]).abs().max() > 1e-5, "feedback and readout changed nothing"


@pytest.mark.parametrize("state", list(STATES))
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_every_parameter_receives_a_gradient_at_two_iterations(state, mechanism):
    """Including the last ViT block and the post-layernorm, which the LM's image tokens
    (feature_layer=-2) never read: they reach the answer through the state (its readout at
    every sweep, its feedback from sweep 2)."""
    x = batch()
    model = trained_a_little(make(state, mechanism, iterations=2))
    assert_every_parameter_gets_a_gradient(model, x, torch.tensor([1, 0, 1]))


def test_the_feedforward_pair_leaves_the_last_block_without_gradient():
    """The counterpart of the test above: at feature_layer=-2 the feedforward pair never reads
    the last block (as LLaVA-1.5), so the gradient test of the variant is not vacuous."""
    x = batch()
    base = baseline_of(make())
    base.loss(base(*x), torch.tensor([1, 0, 1]))["loss"].backward()
    assert all(p.grad is None for p in base.vision_model.encoder.layers[2].parameters())


@pytest.mark.parametrize("mechanism,layers,select", [("add", (1,), "default"), ("gain", (2,), "default"),
                                                     ("xattn", (1, 2), "full"), ("tokens", (1,), "full"),
                                                     ("add", (0, 2), "full")])
def test_each_sweep_hands_the_lm_the_towers_hidden_state_under_its_feedback(mechanism, layers, select):
    """Sweep t's image features = projector(hidden_states[feature_layer] of the ViT run with the
    feedback hook of state s_{t-1}) + the readout of s_t: the loop's bookkeeping of block outputs
    equals the tower's own forward, including feedback that enters the very stream the LM reads
    (layers containing 2 = depth + feature_layer)."""
    model = trained_a_little(make("gru", mechanism, layers=layers, select=select)).eval()
    x = batch()
    vit, td = model.vision_model, model.top_down
    pixels = model.preprocess(x[0])
    p = vit.num_prefix_tokens
    with torch.no_grad():
        carry = model.start(x[0], x[4], x[5])
        for t in range(3):
            previous = carry.state
            feats, carry = model.sweep(carry)
            hook = None if previous is None else td.feedback.hook(previous)
            h = vit(pixels, layer_hook=hook, return_hidden=True).hidden_states[model.feature_layer]
            h = h[:, p : p + vit.num_patches] if select == "default" else h[:, : p + vit.num_patches]
            read = td.readout(carry.state)
            if select == "full":
                read = torch.cat([torch.zeros_like(read[:, :p]), read], dim=1)
            torch.testing.assert_close(feats, model.multi_modal_projector(h) + read, rtol=0, atol=1e-5)
    assert feats.shape == (3, model.num_image_tokens, 16)


def test_features_follow_the_loop():
    model = make("gru", "add", layers=(1,), iterations=3)
    x = batch()
    ff = baseline_of(model).eval().features(x[0])
    trained_a_little(model).eval()
    feats = model.features(x[0], x[4], x[5], iterations=4)
    assert feats.tokens.shape == (4, 3, 3, 16, 16) and feats.state.shape == (4, 3, 16, 8)
    assert feats.image_embeds.shape == (4, 3, 16)
    torch.testing.assert_close(feats.tokens[0], ff.tokens[0], rtol=0, atol=1e-6)  # sweep 1: no feedback
    torch.testing.assert_close(feats.layer(0), ff.layer(0).expand(4, -1, -1, -1), rtol=0, atol=0)  # below feedback
    assert (feats.layer(1)[1] - feats.layer(1)[0]).abs().max() > 1e-4  # feedback changes the blocks it enters
    with torch.no_grad():
        out = model(*x, iterations=4)
    torch.testing.assert_close(feats.state[-1], out.state, rtol=0, atol=1e-6)
    torch.testing.assert_close(feats.image_embeds, out.image_embeds, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="needs question_ids"):
        model.features(x[0])


def test_record_returns_per_iteration_maps_and_changes_no_logits():
    assert_record_returns_per_iteration_maps(trained_a_little(make("gru", "gain", layers=(1, 2))).eval(), batch())


def test_progressive_and_the_iteration_losses():
    x = batch()
    labels = torch.tensor([0, 1, 1])
    model = trained_a_little(make("gru", "add", loss="mean"))
    full = model(*x, iterations=5)
    prog = model(*x, progressive=(3, 2))
    torch.testing.assert_close(prog.logits, full.logits[3:], rtol=0, atol=1e-5)
    prog.final_logits.sum().backward()
    assert model.top_down.feedback.proj["1"].weight.grad is not None
    out = model(*x)
    per_t = torch.stack([torch.nn.functional.cross_entropy(lg, labels) for lg in out.logits])
    torch.testing.assert_close(model.loss(out, labels)["loss"], per_t.mean())
    model.loss_mode = "last"
    torch.testing.assert_close(model.loss(out, labels)["loss"], per_t[-1])


def test_the_query_is_the_lms_reading_of_the_question_text_alone():
    """The mean last hidden state over the question's real tokens: padding and an image
    placeholder (a prompt template's <image>) change nothing."""
    model = make().eval()
    q = torch.tensor([[1, 5, 6, 7, 2]])
    padded = torch.tensor([[1, 5, 6, 7, 2, 0, 0]])
    with_image = torch.tensor([[1, IMAGE_TOKEN, 5, 6, 7, 2]])
    with torch.no_grad():
        want = model.lm(input_ids=q, output_hidden_states=True).hidden_states[-1].mean(1)
        for ids in (q, padded, with_image):
            torch.testing.assert_close(model.read_question(ids, ids != 0), want, rtol=0, atol=1e-5)


def test_bad_configurations_fail_naming_the_fix():
    with pytest.raises(ValueError, match="unknown loss 'final'; valid: last, mean, progressive"):
        make(loss="final")
    vision, lm = parts()
    with pytest.raises(ValueError, match="iterations=3 needs a top_down module"):
        LlavaPair(vision=vision, lm=lm, image_token_id=IMAGE_TOKEN, iterations=3)
    with pytest.raises(ValueError, match=r"feature_layer=0 reads the patch embeddings, below the first feedback "
                                         r"layer 1"):
        make(feature_layer=0)
    make(feature_layer=0, layers=(0,))  # feedback into block 0 enters the embeddings the LM reads
    with pytest.raises(ValueError, match="iterations/progressive need top_down"):
        baseline_of(make())(*batch(), iterations=2)


def test_a_pretrained_llava_checkpoint_starts_its_recurrent_variant(tmp_path, monkeypatch):
    """LlavaPair.from_pretrained(top_down=...): the llava-hf weights load into the tower, projector
    and LM as for the feedforward pair, and at initialisation iteration 1 is that pair."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    vc = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                          image_size=16, patch_size=4, projection_dim=8)
    tc = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=2, vocab_size=30, max_position_embeddings=64)
    LlavaForConditionalGeneration(LlavaConfig(vision_config=vc, text_config=tc, image_token_index=IMAGE_TOKEN,
                                              vision_feature_layer=-2, vision_feature_select_strategy="default",
                                              image_seq_length=16)).save_pretrained(tmp_path)
    plain = LlavaPair.from_pretrained(str(tmp_path))
    top_down = {"state": "gru", "state_dim": 8, "mechanism": "add", "layers": [1], "recall": True}
    rec = LlavaPair.from_pretrained(str(tmp_path), top_down=top_down, iterations=2)
    assert rec.recurrent and not plain.recurrent
    for name, p in plain.state_dict().items():
        torch.testing.assert_close(rec.state_dict()[name], p, rtol=0, atol=0)
    x = batch()
    with torch.no_grad():
        torch.testing.assert_close(rec(*x).logits, plain(*x).logits.expand(2, -1, -1), rtol=0, atol=1e-5)
