"""Image-text data: LLaVA conversations (labels, placeholders, skipped images) and tar shards
(disjoint split over workers x ranks, seeded order, skipped samples)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from recurvlm.data.image_text import (
    IGNORE_INDEX, ROLES, CaptionCollate, ConversationCollate, ConversationDataset, ConversationEncoder,
    ImageTextError, ShardDataset, expand_shards, extend_vocabulary, load_image, split_shards,
)
from recurvlm.models.tokenizer import WordTokenizer

TOK = WordTokenizer(["how", "many", "dots", "are", "there", "?", "two", "is", "it", "a", "maze", "no", "yes",
                     "curve", "user", ":", "assistant", "0", "1", "2", "3", "4", "5"])
IMG = 200  # image placeholder id, above every word id


def png_bytes(w: int, h: int, seed: int) -> bytes:
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(b, format="PNG")
    return b.getvalue()


def conv(question: str, answer: str, *more: str) -> list[dict[str, str]]:
    turns = [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]
    for i, text in enumerate(more):
        turns.append({"from": "human" if i % 2 == 0 else "gpt", "value": text})
    return turns


@pytest.fixture
def chat(tmp_path: Path) -> Path:
    """chat.json: records 0-2 good, 3 a truncated PNG, 4 a missing image, 5 good."""
    images = tmp_path / "images"
    images.mkdir()
    for i in (0, 1, 2, 5):
        (images / f"{i}.png").write_bytes(png_bytes(20 + i, 12, i))
    (images / "3.png").write_bytes(png_bytes(20, 20, 3)[:80])  # truncated: PIL fails to decode it
    recs = [{"id": i, "image": f"{i}.png", "conversations": conv("how many dots are there?", f"{i} dots",
                                                                 "is it a maze?", "no")} for i in range(6)]
    (tmp_path / "chat.json").write_text(json.dumps(recs))
    return tmp_path


def write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, parts in samples:
            for ext, data in parts.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def good(key: str, seed: int) -> tuple[str, dict[str, bytes]]:
    return key, {"png": png_bytes(16, 24, seed), "txt": f"a curve {key}".encode()}


@pytest.fixture
def shards(tmp_path: Path) -> str:
    """6 shards x 3 good samples each: a brace pattern."""
    for s in range(6):
        write_shard(tmp_path / f"shard-{s:06d}.tar", [good(f"s{s}k{k}", 10 * s + k) for k in range(3)])
    return str(tmp_path / "shard-{000000..000005}.tar")


# --- conversations -------------------------------------------------------------------------

@pytest.mark.parametrize("template", ["vicuna_v1", "plain"])
def test_labels_are_exactly_the_assistant_tokens_and_placeholders_number_num_image_tokens(template):
    turns = conv("how many dots are there?", "two dots", "is it a maze?", "no")
    if template == "plain":
        turns = turns[:2]
    enc = ConversationEncoder(TOK, num_image_tokens=7, image_token_id=IMG, max_length=100, template=template)
    ids, labels = (torch.tensor(x) for x in enc(turns))
    answers = [t["value"] for t in turns if t["from"] == "gpt"]
    expected = [i for a in answers for i in (*TOK.word_ids(a), TOK.eos_token_id)]
    learned = labels != IGNORE_INDEX
    assert labels[learned].tolist() == expected  # every assistant token + its EOS, in order, nothing else
    assert torch.equal(ids[learned], labels[learned])  # labels are the tokens at those positions
    assert int((ids == IMG).sum()) == 7 and not bool(learned[ids == IMG].any())
    assert ids[0] == TOK.bos_token_id
    prompt = TOK.decode([ids[~learned & (ids != IMG)].tolist()])[0]
    if template == "vicuna_v1":
        assert prompt == "user: how many dots are there? assistant: user: is it a maze? assistant:"
    else:
        assert prompt == ""  # plain: the human text is dropped (LLaVA's caption pretraining)


def test_a_hugging_face_tokenizer_encodes_turns_without_its_special_tokens(tmp_path):
    """As a Llama tokenizer: BOS added by the template, no EOS; pieces must come without either."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from recurvlm.models.tokenizer import HFTokenizer

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "user", ":", "assistant", "is", "it", "a", "maze",
                                         "?", "no"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                            pad_token="</s>").save_pretrained(tmp_path)
    hf = HFTokenizer(str(tmp_path), require_eos=False)
    enc = ConversationEncoder(hf, num_image_tokens=3, image_token_id=50, max_length=100)
    ids, labels = enc(conv("is it a maze?", "no"))
    # <s> USER: <image x 3> is it a maze? ASSISTANT: no </s>
    assert ids == [1, 3, 4, 50, 50, 50, 6, 7, 8, 9, 10, 5, 4, 11, 2]
    assert [x for x in labels if x != IGNORE_INDEX] == [11, 2]


def test_the_collate_pads_right_with_ignored_labels(chat):
    ds = ConversationDataset(chat / "chat.json", chat / "images", image_size=16)
    enc = ConversationEncoder(TOK, num_image_tokens=4, image_token_id=IMG, max_length=100)
    items = [ds[0], ds[1]]
    items[1]["conversations"] = conv("is it a maze?", "yes")  # a shorter sequence
    batch = ConversationCollate(enc, 16)(items)
    assert batch["image"].shape == (2, 3, 16, 16) and batch["image"].dtype == torch.uint8
    for row, item in enumerate(items):
        ids, labels = enc(item["conversations"])
        n = len(ids)
        assert batch["input_ids"][row, :n].tolist() == ids and batch["labels"][row, :n].tolist() == labels
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()
    assert int((batch["input_ids"] == IMG).sum(1).min()) == 4


def test_missing_and_corrupt_images_are_skipped_and_counted_or_raise_when_strict(chat):
    ds = ConversationDataset(chat / "chat.json", chat / "images", image_size=16)
    enc = ConversationEncoder(TOK, num_image_tokens=4, image_token_id=IMG, max_length=100)
    loader = DataLoader(ds, batch_size=4, collate_fn=ConversationCollate(enc, 16))
    with pytest.warns(UserWarning) as caught:
        batches = list(loader)
    assert sum(b["skipped"] for b in batches) == 2 and ds.skipped == 2
    assert [i for b in batches for i in b["id"]] == ["0", "1", "2", "5"]
    messages = " ".join(str(w.message) for w in caught)
    assert "3.png" in messages and "4.png" in messages and "skipped" in messages
    strict = ConversationDataset(chat / "chat.json", chat / "images", image_size=16, strict=True)
    with pytest.raises(ImageTextError, match=rf"{chat / 'chat.json'}: record 3 \(id 3\): image .*3\.png") as e:
        strict[3]
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("record", "why"), [
    ({"id": 1, "image": "1.png"}, r"\(id 1\): missing key\(s\) conversations"),
    ({"id": 1, "image": "1.png", "conversations": [{"from": "human", "value": "no marker"},
                                                   {"from": "gpt", "value": "x"}]}, "exactly one <image>"),
    ({"id": 1, "image": "1.png", "conversations": [{"from": "human", "value": "<image>"}]},
     "last turn must be from gpt"),
    ({"id": 1, "image": "1.png", "conversations": [{"from": "gpt", "value": "<image>"},
                                                   {"from": "human", "value": "x"}]}, "turns must alternate"),
])
def test_bad_records_fail_naming_file_and_record(chat, record, why):
    good_rec = {"id": 0, "image": "0.png", "conversations": conv("is it a maze?", "no")}
    path = chat / "bad.jsonl"
    path.write_text(json.dumps(good_rec) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ImageTextError, match=rf"{path}: record 1 .*{why}"):
        ConversationDataset(path, chat / "images", image_size=16)


def test_resize_crop_keeps_the_centre_and_pad_keeps_everything():
    bands = np.zeros((10, 30, 3), dtype=np.uint8)  # three vertical bands: red, green, blue
    bands[:, :10, 0] = bands[:, 10:20, 1] = bands[:, 20:, 2] = 255
    b = io.BytesIO()
    Image.fromarray(bands).save(b, format="PNG")
    crop = load_image(b.getvalue(), 8, resize="crop")  # [3, 8, 8]: the shorter side -> 8, centre square
    assert crop.shape == (3, 8, 8) and (crop[1] >= 240).all()
    assert (crop[[0, 2], :, 1:-1] <= 5).all()  # only green inside (bicubic blends the outermost columns)
    pad = load_image(b.getvalue(), 12, resize="pad", pad_color=(7, 7, 7))  # 30x30 canvas, bands in rows 10..19
    assert (pad[:, :2] == 7).all() and (pad[:, -2:] == 7).all()  # padded above and below
    assert pad[0, 6, 1] >= 250 and pad[2, 6, -2] >= 250  # the red and blue edges survive


def test_a_word_vocabulary_extended_by_the_data_keeps_every_id():
    ext = extend_vocabulary(TOK, ["<image>\nthe zebra", *ROLES.values()])
    assert ext.tokens[: TOK.vocab_size] == TOK.tokens and set(ext.tokens[TOK.vocab_size:]) == {"the", "zebra"}
    assert "<image>" not in ext.tokens and extend_vocabulary(TOK, ["two dots"]) is TOK


# --- shards --------------------------------------------------------------------------------

def test_brace_patterns_expand_in_order():
    assert expand_shards("d/s-{08..11}.tar") == ["d/s-08.tar", "d/s-09.tar", "d/s-10.tar", "d/s-11.tar"]
    assert expand_shards(["a{0..1}{x,y}"]) == ["a0x", "a0y", "a1x", "a1y"]


@pytest.mark.parametrize(("n_shards", "world_size", "num_workers"), [(12, 2, 3), (7, 2, 2), (5, 1, 1), (3, 2, 2)])
def test_shards_split_disjointly_over_workers_and_ranks_and_cover_all_once(n_shards, world_size, num_workers):
    shards = [f"s{i}" for i in range(n_shards)]
    parts = {(r, w): split_shards(shards, rank=r, world_size=world_size, worker=w, num_workers=num_workers)
             for r in range(world_size) for w in range(num_workers)}
    flat = [s for p in parts.values() for s in p]
    assert sorted(flat) == sorted(shards) and len(flat) == n_shards  # each exactly once
    per_rank = [sum(len(parts[r, w]) for w in range(num_workers)) for r in range(world_size)]
    assert max(per_rank) - min(per_rank) <= 1  # DDP ranks get (nearly) the same amount of data
    for r in range(world_size):
        per_worker = [len(parts[r, w]) for w in range(num_workers)]
        assert max(per_worker) - min(per_worker) <= 1


def test_real_workers_on_two_ranks_read_every_sample_exactly_once(shards):
    seen = []
    for rank in range(2):
        ds = ShardDataset(shards, image_size=16, seed=3, rank=rank, world_size=2)
        loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=CaptionCollate(TOK, 8, 16))
        ids = [i for b in loader for i in b["id"]]
        assert len(ids) == 9  # 3 of the 6 shards per rank, 3 samples each
        assert len({i.split("/")[0] for i in ids}) == 3
        seen += ids
    assert sorted(seen) == sorted(f"shard-{s:06d}.tar/s{s}k{k}" for s in range(6) for k in range(3))


def test_the_same_seed_gives_the_same_order_and_another_seed_or_epoch_another(shards):
    def order(seed: int, epoch: int = 0) -> list[str]:
        ds = ShardDataset(shards, image_size=16, seed=seed, shuffle_buffer=8)
        ds.set_epoch(epoch)
        return [it["id"] for it in ds]

    first = order(0)
    assert order(0) == first and sorted(first) == sorted(order(1))
    assert order(1) != first and order(0, epoch=1) != first
    unshuffled = [it["id"] for it in ShardDataset(shards, image_size=16, shuffle=False)]
    assert unshuffled == sorted(unshuffled)  # tar order, shard by shard


def test_corrupt_and_incomplete_shard_samples_are_skipped_and_counted(tmp_path):
    write_shard(tmp_path / "a.tar", [good("k0", 0), ("k1", {"png": b"not a png", "txt": b"x"}),
                                     ("k2", {"png": png_bytes(8, 8, 2)}), good("k3", 3)])
    write_shard(tmp_path / "b.tar", [good("k4", 4), good("k5", 5)])
    with tarfile.open(tmp_path / "b.tar") as tar:
        cut = tar.getmember("k5.png").offset_data + 100
    (tmp_path / "b.tar").write_bytes((tmp_path / "b.tar").read_bytes()[:cut])  # truncated inside k5's image
    ds = ShardDataset([str(tmp_path / "a.tar"), str(tmp_path / "b.tar")], image_size=16, shuffle=False)
    with pytest.warns(UserWarning) as caught:
        batches = list(DataLoader(ds, batch_size=3, collate_fn=CaptionCollate(TOK, 8, 16)))
    assert [i for b in batches for i in b["id"]] == ["a.tar/k0", "a.tar/k3", "b.tar/k4"]
    assert sum(b["skipped"] for b in batches) == 3 == ds.skipped
    messages = " ".join(str(w.message) for w in caught)
    assert "a.tar: sample k1" in messages and "a.tar: sample k2: missing txt" in messages
    assert "b.tar: unreadable after 1 sample(s)" in messages
    with pytest.raises(ImageTextError, match=r"a\.tar: sample k1: UnidentifiedImageError"):
        list(ShardDataset(str(tmp_path / "a.tar"), image_size=16, strict=True))
    with pytest.raises(ImageTextError, match=r"shard not found: .*c\.tar"):
        ShardDataset(str(tmp_path / "{a,c}.tar"), image_size=16)
