"""Text tower: parity with HF CLIPTextModel loaded by plain copy, EOS pooling, causality, gradients; tokenizers."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from recurvlm.data.stimuli import TASK_NAMES, generate, get_task
from recurvlm.models.pretrained import StateDictMismatchError, load_state_dict_strict
from recurvlm.models.text import TextTransformer, load_text_tower, text_kwargs_from_hf_config
from recurvlm.models.tokenizer import (
    SPECIAL_TOKENS,
    HFTokenizer,
    Tokenizer,
    WordTokenizer,
    normalize,
    split_words,
)

VOCAB, BOS, EOS, PAD = 99, 97, 98, 0
LEGACY_EOS = 2  # pre-PR-#24773 HF configs: pool at the largest id
TINY = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=16, bos_token_id=BOS, pad_token_id=PAD)
OURS = dict(vocab_size=VOCAB, context_length=16, width=32, depth=2, heads=4, mlp_dim=37, eos_token_id=EOS)


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Random offsets on every weight, so layernorms are not identities and biases not zero:
    a swapped or unused parameter then shows in the outputs."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def _batch(eos: int, *, length: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids [4, L] right-padded to lengths (L, 7, 3, 1), an EOS closing each row, and
    the padding filled with EOS as CLIP's tokenizer does (so "first EOS" matters)."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 90, (4, length), generator=gen)
    lengths = torch.tensor([length, 7, 3, 1])
    mask = torch.arange(length)[None] < lengths[:, None]  # [B, L]
    ids[~mask] = eos
    ids[torch.arange(4), lengths - 1] = eos
    return ids, mask


@pytest.fixture(scope="module", params=[EOS, LEGACY_EOS], ids=["eos_first", "eos_legacy_argmax"])
def checkpoint(request, tmp_path_factory):
    """(directory with a tiny random CLIPTextModel checkpoint, its eos_token_id)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip_text")
    _perturb(CLIPTextModel(CLIPTextConfig(**TINY, eos_token_id=request.param))).save_pretrained(path)
    return path, request.param


def test_parity_with_hf(checkpoint, monkeypatch):
    path, eos = checkpoint
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ours, ref = load_text_tower(str(path)), CLIPTextModel.from_pretrained(path).eval()
    assert ours.eos_token_id == (None if eos == LEGACY_EOS else eos)
    ids, mask = _batch(eos)
    with torch.no_grad():
        out, want = ours(ids, mask), ref(input_ids=ids, attention_mask=mask.long())
        # without a mask both are purely causal
        out_nomask, want_nomask = ours(ids), ref(input_ids=ids)
    torch.testing.assert_close(out.last_hidden_state, want.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooled, want.pooler_output, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_nomask.last_hidden_state, want_nomask.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_nomask.pooled, want_nomask.pooler_output, atol=1e-5, rtol=1e-5)


def test_left_padding_matches_hf_on_real_tokens(checkpoint):
    """Left padding leaves a pad query nothing to attend to; we let it see itself (no NaN on any
    backend), so only pad positions may differ from HF."""
    path, eos = checkpoint
    ours, ref = load_text_tower(str(path)), CLIPTextModel.from_pretrained(path).eval()
    ids, mask = _batch(eos)
    ids, mask = ids.flip(1), mask.flip(1)
    with torch.no_grad():
        out, want = ours(ids, mask), ref(input_ids=ids, attention_mask=mask.long())
    assert torch.isfinite(out.last_hidden_state).all()
    torch.testing.assert_close(out.last_hidden_state[mask], want.last_hidden_state[mask], atol=1e-5, rtol=1e-5)


def test_eos_pooling_rules():
    """eos_token_id=k pools at the first k (padding may be k too); None pools at the largest id."""
    ids = torch.tensor([[5, 60, 7, EOS, EOS, EOS], [5, EOS, 80, 3, EOS, EOS]])
    first = TextTransformer(**OURS)
    legacy = TextTransformer(**{**OURS, "eos_token_id": None})
    assert first.eos_positions(ids).tolist() == [3, 1]
    ids_legacy = torch.tensor([[5, 60, 7, 90, 0, 0], [5, 90, 80, 3, 90, 0]])
    assert legacy.eos_positions(ids_legacy).tolist() == [3, 1]  # first of equal maxima, as torch.argmax
    out = first(ids)
    torch.testing.assert_close(out.pooled, out.last_hidden_state[torch.arange(2), torch.tensor([3, 1])])


def test_legacy_config_maps_to_argmax():
    assert text_kwargs_from_hf_config(CLIPTextConfig(**TINY, eos_token_id=LEGACY_EOS))["eos_token_id"] is None
    assert text_kwargs_from_hf_config(CLIPTextConfig(**TINY, eos_token_id=EOS))["eos_token_id"] == EOS


def test_loads_text_tower_of_full_clip_model(tmp_path):
    torch.manual_seed(0)
    vision = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37, image_size=16,
                  patch_size=8)
    full = _perturb(CLIPModel(CLIPConfig(text_config={**TINY, "eos_token_id": EOS}, vision_config=vision,
                                         projection_dim=8))).eval()
    full.save_pretrained(tmp_path)
    ours = load_text_tower(str(tmp_path))
    ids, mask = _batch(EOS)
    with torch.no_grad():
        want = full.text_model(input_ids=ids, attention_mask=mask.long())
        out = ours(ids, mask)
    torch.testing.assert_close(out.pooled, want.pooler_output, atol=1e-5, rtol=1e-5)


def test_causal():
    torch.manual_seed(0)
    model = TextTransformer(**OURS).eval()
    ids, mask = _batch(EOS)
    changed = ids.clone()
    changed[:, 6] = 42
    with torch.no_grad():
        a, b = model(ids, mask).last_hidden_state, model(changed, mask).last_hidden_state
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=0, rtol=0)
    assert not torch.allclose(a[0, 6:], b[0, 6:])


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = TextTransformer(**OURS, act="gelu")
    ids, mask = _batch(EOS, length=16)  # every position is used, so every position embedding
    out = model(ids, mask)
    (out.pooled.sum() + out.last_hidden_state.pow(2).mean()).backward()
    for name, p in model.named_parameters():
        if name == "embeddings.token_embedding.weight":
            assert p.grad[ids.unique()].abs().sum(dim=1).gt(0).all(), name  # only the rows looked up
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_too_long_input_raises():
    with pytest.raises(ValueError, match="context length"):
        TextTransformer(**OURS)(torch.zeros(1, 17, dtype=torch.long))


def test_mismatched_checkpoint_raises_with_key_names(tmp_path):
    torch.manual_seed(0)
    CLIPTextModel(CLIPTextConfig(**TINY, eos_token_id=EOS)).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    dropped = next(k for k in weights if k.endswith("layer_norm2.bias"))
    del weights[dropped]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(StateDictMismatchError, match=r"missing keys \[.*layer_norm2\.bias"):
        load_text_tower(str(tmp_path))


def test_checkpoint_with_extra_layer_raises(tmp_path):
    """HF drops weights its config has no place for; a text-tower key left over is a mismatch."""
    torch.manual_seed(0)
    CLIPTextModel(CLIPTextConfig(**{**TINY, "num_hidden_layers": 3}, eos_token_id=EOS)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_hidden_layers"] = 2
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(StateDictMismatchError, match=r"unexpected keys \[encoder\.layers\.2\."):
        load_text_tower(str(tmp_path))


def test_strict_copy_names_keys():
    model = TextTransformer(**OURS)
    state = model.state_dict()
    state["final_layer_norm.gamma"] = state.pop("final_layer_norm.weight")
    with pytest.raises(StateDictMismatchError, match=r"final_layer_norm\.weight.*final_layer_norm\.gamma"):
        load_state_dict_strict(model, state, source="test")


# ---------------------------------------------------------------- tokenizers


@pytest.fixture(scope="module")
def word_tokenizer():
    return WordTokenizer.for_tasks()


def _task_texts(seed: int) -> list[str]:
    """Every task's questions and "<question> <answer>" texts at every level, from a seed the
    vocabulary was not built from."""
    texts = []
    for name in TASK_NAMES:
        task = get_task(name)
        for level in (None, *task.levels):
            for index in range(12):
                s = generate(name, seed, index, level)
                texts += [s.question, *(f"{s.question} {c}" for c in s.choices)]
    return texts


def test_word_tokenizer_round_trips_every_task_question(word_tokenizer):
    texts = _task_texts(seed=123)
    ids, mask = word_tokenizer.encode(texts, context_length=32)
    assert ids.shape == mask.shape == (len(texts), 32) and ids.dtype == torch.long and mask.dtype == torch.bool
    assert not (ids == word_tokenizer.unk_token_id).any(), sorted(word_tokenizer.unknown)
    assert word_tokenizer.decode(ids) == [normalize(t) for t in texts]
    assert (ids[:, 0] == word_tokenizer.bos_token_id).all()
    lengths = mask.sum(dim=1)
    assert (ids[torch.arange(len(texts)), lengths - 1] == word_tokenizer.eos_token_id).all()
    assert (ids[~mask] == word_tokenizer.pad_token_id).all()
    assert mask[:, :-1].int().diff(dim=1).le(0).all()  # right padding: one run of True, then False


def test_word_tokenizer_splits_punctuation_and_lowercases():
    assert split_words("How many Ts are there?") == ["how", "many", "ts", "are", "there", "?"]
    assert split_words("left, right.") == ["left", ",", "right", "."]
    assert normalize("Is  the dot ,on the figure ?") == "is the dot, on the figure?"


def test_word_tokenizer_truncation_keeps_eos(word_tokenizer):
    ids, mask = word_tokenizer.encode(["is the dot on the figure ?", ""], context_length=4)
    w = word_tokenizer._word_ids
    assert ids.tolist() == [[1, w["is"], w["the"], 2], [1, 2, 0, 0]]
    assert mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert word_tokenizer.decode(ids) == ["is the", ""]
    with pytest.raises(ValueError, match="at least 2"):
        word_tokenizer.encode(["x"], context_length=1)


def test_word_tokenizer_vocabulary_is_deterministic(word_tokenizer):
    again = WordTokenizer.for_tasks()
    assert again == word_tokenizer and again.tokens == word_tokenizer.tokens
    assert word_tokenizer.tokens[: len(SPECIAL_TOKENS)] == SPECIAL_TOKENS
    assert word_tokenizer.tokens[0] == "<pad>" and word_tokenizer.pad_token_id == 0
    assert WordTokenizer(["b", "a", "b"]).tokens == (*SPECIAL_TOKENS, "b", "a")


def test_word_tokenizer_save_load(word_tokenizer, tmp_path):
    word_tokenizer.save(tmp_path / "tokenizer.json")
    loaded = WordTokenizer.load(tmp_path / "tokenizer.json")
    assert loaded == word_tokenizer and loaded.vocab_size == word_tokenizer.vocab_size
    texts = _task_texts(seed=5)[:20]
    assert torch.equal(loaded.encode(texts, context_length=24)[0], word_tokenizer.encode(texts, context_length=24)[0])
    with pytest.raises(ValueError, match="starts with"):
        WordTokenizer.from_dict({"kind": "word", "tokens": ["a", "b"]})


def test_word_tokenizer_unknown_word():
    tok = WordTokenizer(["is", "the", "dot", "?"])
    with pytest.warns(UserWarning, match="not in the vocabulary") as record:
        ids, _ = tok.encode(["is the zebra ?", "<eos> zebra"], context_length=8)
    assert len(record) == 2  # once per new word
    assert ids[0].tolist()[:5] == [1, 4, 5, tok.unk_token_id, 7]
    assert ids[1].tolist()[:4] == [1, tok.unk_token_id, tok.unk_token_id, 2]  # text cannot inject specials
    assert tok.unknown == {"zebra": 2, "<eos>": 1}
    assert tok.decode(ids) == ["is the <unk>?", "<unk> <unk>"]


def test_word_tokenizer_drives_the_text_tower(word_tokenizer):
    model = TextTransformer(vocab_size=word_tokenizer.vocab_size, context_length=16, width=32, depth=1, heads=4,
                            mlp_dim=64, eos_token_id=word_tokenizer.eos_token_id,
                            pad_token_id=word_tokenizer.pad_token_id)
    ids, mask = word_tokenizer.encode(["is the dot on the figure? yes", "how many xs are there? 3"], context_length=16)
    out = model(ids, mask)
    assert out.pooled.shape == (2, 32)
    torch.testing.assert_close(out.pooled, out.last_hidden_state[torch.arange(2), mask.sum(dim=1) - 1])


@pytest.fixture(scope="module")
def clip_tokenizer_dir(tmp_path_factory):
    """A tiny CLIP BPE tokenizer on disk: single letters, a couple of merges, CLIP's specials."""
    letters = "abcdefghijklmnopqrstuvwxyz?"
    vocab = {ch: i for i, ch in enumerate(letters)}
    vocab.update({ch + "</w>": len(letters) + i for i, ch in enumerate(letters)})
    merges = [("t", "h"), ("th", "e</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    path = tmp_path_factory.mktemp("clip_tokenizer")
    CLIPTokenizer(vocab=vocab, merges=merges).save_pretrained(path)
    return path


def test_hf_tokenizer(clip_tokenizer_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = HFTokenizer(str(clip_tokenizer_dir))
    texts = ["is the dot on the figure?", "", "a b c d e f g h i j k l m n o p"]
    ids, mask = tok.encode(texts, context_length=10)
    assert ids.shape == mask.shape == (3, 10) and ids.dtype == torch.long and mask.dtype == torch.bool
    lengths = mask.sum(dim=1)
    assert lengths.tolist()[1:] == [2, 10]
    assert (ids[:, 0] == tok.tokenizer.bos_token_id).all()
    assert (ids[torch.arange(3), lengths - 1] == tok.eos_token_id).all()  # also when truncated
    assert tok.decode(ids)[2] == "a b c d e f g h"
    # the tower pools where the tokenizer put EOS, though CLIP pads with EOS too
    model = TextTransformer(vocab_size=tok.vocab_size, context_length=10, width=32, depth=1, heads=4, mlp_dim=64,
                            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    assert model.eos_positions(ids).tolist() == (lengths - 1).tolist()


def test_both_tokenizers_satisfy_the_protocol(word_tokenizer, clip_tokenizer_dir):
    assert isinstance(word_tokenizer, Tokenizer)
    assert isinstance(HFTokenizer(str(clip_tokenizer_dir)), Tokenizer)
