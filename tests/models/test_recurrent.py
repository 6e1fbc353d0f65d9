"""The recurrent top-down CLIP variant: invariances of the iteration loop, state modules, feedback."""

from __future__ import annotations

import pytest
import torch

from recurvlm.models.clip import CLIPPair
from recurvlm.models.state import GRUState, MambaState, XLSTMState, build_state
from recurvlm.models.text import TextTransformer
from recurvlm.models.vit import VisionTransformer

from topdown_cases import (MECHANISMS, STATES, assert_every_parameter_gets_a_gradient,  # tests/models/
                           assert_record_returns_per_iteration_maps, top_down_config, trained_a_little)



def towers(seed: int = 0):
    torch.manual_seed(seed)
    vision = VisionTransformer(image_size=16, patch_size=4, width=16, depth=3, heads=2, mlp_dim=32, act="gelu")
    text = TextTransformer(vocab_size=20, context_length=8, width=16, depth=1, heads=2, mlp_dim=32, act="gelu",
                           eos_token_id=2)
    return vision, text


def make(state: str = "gru", mechanism: str = "add", layers=(1,), iterations: int = 3, seed: int = 0,
         scan: str = "none", **kw) -> CLIPPair:
    vision, text = towers(seed)
    top_down = top_down_config(state, mechanism, layers, scan=scan)
    return CLIPPair(vision=vision, text=text, vision_width=16, text_width=16, embed_dim=8, top_down=top_down,
                    iterations=iterations, **kw)


def batch(b: int = 3, k: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, 3, 16, 16), dtype=torch.uint8, generator=g)
    ids = torch.randint(3, 20, (b, k, 8), generator=g)
    ids[..., 5] = 2  # <eos>
    mask = torch.ones(b, k, 8, dtype=torch.bool)
    valid = torch.ones(b, k, dtype=torch.bool)
    q_ids, q_mask = ids[:, 0].clone(), mask[:, 0].clone()
    q_ids[:, 4] = 2
    return images, ids, mask, valid, q_ids, q_mask


def baseline_of(model: CLIPPair) -> CLIPPair:
    """The feedforward pair with the variant's towers and projections (no top-down module)."""
    base = CLIPPair(vision=model.vision_model, text=model.text_model, vision_width=16, text_width=16, embed_dim=8)
    base.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("top_down.")})
    return base


@pytest.mark.parametrize("state", list(STATES))
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_at_initialisation_the_first_iteration_is_the_feedforward_baseline(state, mechanism):
    model = make(state, mechanism).eval()
    x = batch()
    with torch.no_grad():
        out = model(*x)
        base = baseline_of(model)(*x[:4])
    assert out.logits.shape == (3, 3, 2) and base.logits.shape == (1, 3, 2)
    torch.testing.assert_close(out.logits[0], base.logits[0], rtol=0, atol=1e-5)
    if mechanism in ("add", "gain"):  # zero feedback: every sweep is the feedforward sweep
        torch.testing.assert_close(out.logits, base.logits.expand(3, -1, -1), rtol=0, atol=1e-5)



@pytest.mark.parametrize("state", list(STATES))
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_a_step_loop_equals_forward(state, mechanism):
    x = batch()
    model = trained_a_little(make(state, mechanism)).eval()
    with torch.no_grad():
        out = model(*x, iterations=5)
        txt = model.encode_choices(x[1], x[2])
        carry = model.start(x[0], x[4], x[5])
        stepped = []
        for _ in range(5):
            (logits, _), carry = model.step(carry, txt, x[3])
            stepped.append(logits)
        short = model(*x, iterations=2)
    torch.testing.assert_close(torch.stack(stepped), out.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.state, carry.state, rtol=0, atol=1e-6)
    torch.testing.assert_close(short.logits, out.logits[:2], rtol=0, atol=1e-6)  # anytime: T is free at test
    assert not torch.allclose(out.logits[0], out.logits[-1]), "feedback changed nothing after training"


@pytest.mark.parametrize("state", list(STATES))
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_every_parameter_receives_a_gradient_at_two_iterations(state, mechanism):
    x = batch()
    model = trained_a_little(make(state, mechanism, iterations=2))
    assert_every_parameter_gets_a_gradient(model, x, torch.tensor([1, 0, 1]))


def test_progressive_runs_n_without_gradient_then_k_with():
    x = batch()
    model = trained_a_little(make("gru", "add"))
    full = model(*x, iterations=5)
    prog = model(*x, progressive=(3, 2))
    assert prog.logits.shape[0] == 2
    torch.testing.assert_close(prog.logits, full.logits[3:], rtol=0, atol=1e-5)
    prog.final_logits.sum().backward()
    assert model.top_down.feedback.proj["1"].weight.grad is not None
    only_k = model(*x, progressive=(0, 5))
    torch.testing.assert_close(only_k.logits, full.logits, rtol=0, atol=1e-6)


def test_mean_loss_averages_iterations_and_last_loss_reads_the_last():
    x = batch()
    labels = torch.tensor([0, 1, 1])
    torch.manual_seed(3)
    mean_model = trained_a_little(make("gru", "add", loss="mean"))
    out = mean_model(*x)
    per_t = torch.stack([torch.nn.functional.cross_entropy(lg, labels) for lg in out.logits])
    torch.testing.assert_close(mean_model.loss(out, labels)["loss"], per_t.mean())
    mean_model.loss_mode = "last"
    torch.testing.assert_close(mean_model.loss(out, labels)["loss"], per_t[-1])


def test_record_returns_per_iteration_maps_and_changes_no_logits():
    assert_record_returns_per_iteration_maps(trained_a_little(make("gru", "gain", layers=(1, 2))).eval(), batch())


def test_mamba_and_xlstm_steps_equal_their_library_sequence_paths():
    torch.manual_seed(0)
    u = torch.randn(2, 6, 5, 8)  # [B, T, N, S]
    for module in (MambaState(8, layers=2, state_size=4, expand=2, conv_kernel=3),
                   XLSTMState(8, blocks=2, slstm_at=[1], heads=2, max_iterations=6)):
        torch.testing.assert_close(module(u), module.scan(u), rtol=1e-4, atol=1e-5)
    gru = GRUState(8)
    ref = torch.nn.GRU(8, 8, batch_first=True)
    ref.load_state_dict({k.replace("cell.", "").replace("_ih", "_ih_l0").replace("_hh", "_hh_l0"): v
                         for k, v in gru.state_dict().items()})
    expected = ref(u.permute(0, 2, 1, 3).reshape(10, 6, 8))[0].reshape(2, 5, 6, 8).permute(0, 2, 1, 3)
    torch.testing.assert_close(gru(u), expected, rtol=1e-5, atol=1e-6)


def test_bad_configurations_fail_naming_the_valid_options():
    with pytest.raises(ValueError, match="unknown state module 'lstm'; valid: gru, mamba, xlstm, none"):
        build_state("lstm", 8)
    with pytest.raises(ValueError, match="unknown feedback mechanism 'mul'; valid: add, gain, tokens, xattn"):
        make("gru", "mul")
    with pytest.raises(ValueError, match=r"feedback layers \[3\] out of range; valid: a non-empty subset of 0..2"):
        make("gru", "add", layers=(3,))
    with pytest.raises(ValueError, match="unknown loss 'final'; valid: last, mean, progressive"):
        make("gru", "add", loss="final")
    vision, text = towers()
    with pytest.raises(ValueError, match="iterations=3 needs a top_down module"):
        CLIPPair(vision=vision, text=text, vision_width=16, text_width=16, embed_dim=8, iterations=3)
    model = make()
    with pytest.raises(ValueError, match="needs question_ids and question_mask"):
        model(*batch()[:4])


# --- the features API (CLIPPair.features): per-block, per-iteration patch tokens ---


def test_feedforward_features_are_hf_style_hidden_states():
    base = baseline_of(make()).eval()
    images = batch()[0]
    feats = base.features(images)
    with torch.no_grad():
        v = base.vision_model(base.preprocess(images), return_hidden=True)
        emb = base.encode_image(images)
    assert feats.tokens.shape == (1, 3, 3, 16, 16) and feats.grid_size == (4, 4) and feats.state is None
    for block in range(3):  # after block i = the stream block i + 1 reads (hidden_states[i + 1])
        torch.testing.assert_close(feats.layer(block)[0], v.hidden_states[block + 1][:, 1:], rtol=0, atol=0)
    torch.testing.assert_close(feats.image_embeds[0], emb)
    grid = feats.grid()  # [T, L, B, D, H, W]: token (r, c) at row-major position r * W + c
    assert grid.shape == (1, 3, 3, 16, 4, 4)
    torch.testing.assert_close(grid[0, 2, 1, :, 2, 3], feats.tokens[0, 2, 1, 2 * 4 + 3])


@pytest.mark.parametrize("mechanism", ["add", "tokens"])
def test_recurrent_features_follow_the_loop(mechanism):
    model = make("gru", mechanism, layers=(1,), iterations=3)
    x = batch()
    base = baseline_of(model).eval()
    ff = base.features(x[0])
    trained_a_little(model)  # non-zero feedback and readout
    model.eval()
    feats = model.features(x[0], x[4], x[5], iterations=4)
    assert feats.tokens.shape == (4, 3, 3, 16, 16) and feats.state.shape == (4, 3, 16, 8)
    # sweep 1 has no feedback: the feedforward features
    torch.testing.assert_close(feats.tokens[0], ff.tokens[0], rtol=0, atol=1e-6)
    # block 0 sits below the first feedback layer: the same at every sweep
    torch.testing.assert_close(feats.layer(0), ff.layer(0).expand(4, -1, -1, -1), rtol=0, atol=0)
    # from sweep 2 the feedback changes the blocks it enters
    assert (feats.layer(1)[1] - feats.layer(1)[0]).abs().max() > 1e-4
    # the same loop as forward: its final state and per-sweep image embeddings
    with torch.no_grad():
        out = model(*x, iterations=4)
    torch.testing.assert_close(feats.state[-1], out.state, rtol=0, atol=1e-6)
    torch.testing.assert_close(feats.image_embeds, out.image_embeds, rtol=0, atol=1e-6)


def test_layer_selection_and_bad_requests_fail_naming_the_valid_ones():
    model = make().eval()
    x = batch()
    feats = model.features(x[0], x[4], x[5], layers=[-1, 0])
    assert feats.layers == (2, 0) and feats.tokens.shape[1] == 2
    with pytest.raises(ValueError, match=r"layers=\[3\]: valid blocks are 0..2"):
        model.features(x[0], x[4], x[5], layers=[3])
    with pytest.raises(KeyError, match=r"block 1 was not kept; kept: \[2, 0\]"):
        feats.layer(1)
    with pytest.raises(ValueError, match="needs question_ids"):
        model.features(x[0])
    with pytest.raises(ValueError, match="feedforward model runs one iteration"):
        baseline_of(model).features(x[0], iterations=2)


# --- grid scans (state along the token grid within one iteration) ------------------------

from recurvlm.models.state import GridScan, scan_permutations  # noqa: E402


def test_scan_orders_visit_every_token_once_in_row_and_column_order():
    raster, back, cols, cols_back = scan_permutations("cross", (2, 3))
    assert raster.tolist() == [0, 1, 2, 3, 4, 5] and back.tolist() == [5, 4, 3, 2, 1, 0]
    assert cols.tolist() == [0, 3, 1, 4, 2, 5] and cols_back.tolist() == [5, 2, 4, 1, 3, 0]
    assert len(scan_permutations("raster", (2, 3))) == 2
    with pytest.raises(ValueError, match="valid: none, raster, cross"):
        scan_permutations("spiral", (2, 3))


@pytest.mark.parametrize("kind", ["gru", "mamba", "xlstm"])
@pytest.mark.parametrize("direction", [0, 1, 2, 3])
def test_each_scan_direction_is_causal_along_its_own_order(kind, direction):
    """Read through one direction only, the output at a token depends on exactly the tokens
    at or before it in that direction's order: the path is what carries the signal."""
    torch.manual_seed(0)
    kw = {k: v for k, v in STATES[kind].items() if k != "max_iterations"}
    scan = GridScan(kind=kind, order="cross", dim=8, grid_size=(3, 3), **kw)
    with torch.no_grad():
        scan.out.weight.zero_()
        scan.out.weight[:, 8 * direction : 8 * (direction + 1)] = torch.eye(8)
    u = torch.randn(1, 9, 8, requires_grad=True)
    read = torch.randn(8)  # a random readout (a plain sum of a normalised output is constant)
    order = scan_permutations("cross", (3, 3))[direction].tolist()
    for pos, token in enumerate(order):
        (grad,) = torch.autograd.grad(scan(u, (3, 3))[0, token] @ read, u)
        reached = set((grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist())
        assert reached == set(order[: pos + 1]), (token, reached)


@pytest.mark.parametrize("state", ["gru", "mamba", "xlstm"])
def test_a_scanning_model_starts_as_the_model_without_scan_and_steps_like_forward(state):
    x = batch()
    plain = make(state, "add")
    scanning = make(state, "add", scan="cross")
    scanning.load_state_dict(plain.state_dict(), strict=False)  # the scan's own weights stay as built
    with torch.no_grad():
        torch.testing.assert_close(scanning(*x).logits, plain(*x).logits, rtol=0, atol=1e-6)
    model = trained_a_little(scanning).eval()
    with torch.no_grad():
        out = model(*x, iterations=4)
        txt = model.encode_choices(x[1], x[2])
        carry, stepped = model.start(x[0], x[4], x[5]), []
        for _ in range(4):
            (logits, _), carry = model.step(carry, txt, x[3])
            stepped.append(logits)
    torch.testing.assert_close(torch.stack(stepped), out.logits, rtol=0, atol=1e-6)
    assert not torch.allclose(out.logits, plain(*x, iterations=4).logits, atol=1e-4)  # the scan does act


@pytest.mark.parametrize("state", ["gru", "mamba"])
def test_every_scan_parameter_receives_a_gradient(state):
    x = batch()
    model = trained_a_little(make(state, "add", iterations=2, scan="raster"))
    assert_every_parameter_gets_a_gradient(model, x, torch.tensor([1, 0, 1]))


def test_scan_needs_a_sequence_state_and_its_grid():
    vision, text = towers(0)
    with pytest.raises(ValueError, match="needs a sequence model"):
        CLIPPair(vision=vision, text=text, vision_width=16, text_width=16, embed_dim=8, iterations=2,
                 top_down={"state": "none", "state_dim": 8, "scan": "raster"})
    with pytest.raises(ValueError, match="valid: none, raster, cross"):
        CLIPPair(vision=vision, text=text, vision_width=16, text_width=16, embed_dim=8, iterations=2,
                 top_down={"state": "gru", "state_dim": 8, "scan": "zigzag"})
