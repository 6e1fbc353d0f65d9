"""Interchange folders: round trip, foreign folders, bad items named by file and line, atomic writes."""

import json

import numpy as np
import pytest

from recurvlm.data import interchange
from recurvlm.data.datasets import InterchangeDataset, StimulusDataset
from recurvlm.data.stimuli import generate


def _samples(task="maze", n=6, seed=3):
    return [(interchange.sample_id(task, seed, i), generate(task, seed, i, "easy")) for i in range(n)]


@pytest.fixture
def folder(tmp_path):
    return interchange.write_folder(_samples(), tmp_path / "set", maps=True)


def test_round_trip_preserves_images_answers_and_maps(folder):
    original = dict(_samples())
    back = dict(interchange.iter_samples(folder))
    assert list(back) == list(original)
    for sid, s in original.items():
        b = back[sid]
        np.testing.assert_array_equal(b.image, s.image)
        assert (b.question, b.answer, b.choices, b.task, b.difficulty) == (s.question, s.answer, s.choices, s.task, s.difficulty)
        assert set(b.maps) == set(s.maps)
        for k in s.maps:
            np.testing.assert_array_equal(b.maps[k], s.maps[k])
    interchange.verify_manifest(folder)


def test_dataset_over_folder_matches_dataset_over_generator(folder):
    ds, gen = InterchangeDataset(folder, verify_checksums=True), StimulusDataset("maze", 6, seed=3, difficulty="easy")
    for i in range(6):
        a, b = ds[i], gen[i]
        assert a["id"] == b["id"] and a["label"] == b["label"] and a["choices"] == b["choices"]
        assert a["image"].equal(b["image"])


def test_manifest_catches_a_changed_image(folder):
    victim = sorted((folder / "images").iterdir())[2]
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(interchange.InterchangeError, match=rf"manifest.sha256:\d+: checksum mismatch for images/{victim.name}"):
        interchange.verify_manifest(folder)


def test_foreign_folder_with_only_the_required_keys(tmp_path):
    (tmp_path / "imgs").mkdir()
    s = generate("curve_tracing", 0, 0)
    from PIL import Image

    Image.fromarray(s.image).save(tmp_path / "imgs" / "a.png")
    rec = {"id": "a", "image": "imgs/a.png", "question": "same curve?", "answer": "B", "choices": ["A", "B"]}
    (tmp_path / "annotations.jsonl").write_text(json.dumps(rec) + "\n")
    ds = InterchangeDataset(tmp_path)
    item = ds[0]
    assert len(ds) == 1 and item["label"] == 1 and item["task"] == "unknown"
    assert tuple(item["image"].shape) == (3, *s.image.shape[:2])


def _corrupt(folder, lineno, how):
    ann = folder / "annotations.jsonl"
    lines = ann.read_text().splitlines()
    rec = json.loads(lines[lineno - 1])
    if how == "malformed":
        lines[lineno - 1] = lines[lineno - 1][:-5]
    elif how == "answer":
        rec["answer"] = "maybe"
        lines[lineno - 1] = json.dumps(rec)
    elif how == "missing_image":
        (folder / rec["image"]).unlink()
    elif how == "unreadable_image":
        (folder / rec["image"]).write_bytes(b"not a png at all")
    elif how == "missing_key":
        del rec["choices"]
        lines[lineno - 1] = json.dumps(rec)
    ann.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("how, message", [
    ("malformed", "malformed JSON"),
    ("answer", "answer 'maybe' is not among choices"),
    ("missing_image", r"image images/maze-s3-0000003.png is missing"),
    ("unreadable_image", r"image images/maze-s3-0000003.png is unreadable"),
    ("missing_key", "missing key\\(s\\) choices"),
])
def test_bad_item_names_file_and_line_or_is_skipped_and_counted(folder, how, message):
    _corrupt(folder, 4, how)
    with pytest.raises(interchange.InterchangeError, match=rf"annotations.jsonl:4: {message}"):
        InterchangeDataset(folder)
    with pytest.warns(UserWarning, match="skipped 1 bad item"):
        ds = InterchangeDataset(folder, strict=False)
    assert len(ds) == 5 and len(ds.skipped) == 1 and ":4:" in ds.skipped[0]


def test_failed_write_leaves_nothing_and_keeps_existing_folder(tmp_path):
    def broken():
        yield from _samples(n=3)
        raise RuntimeError("generator died")

    with pytest.raises(RuntimeError):
        interchange.write_folder(broken(), tmp_path / "new")
    assert list(tmp_path.iterdir()) == []

    good = interchange.write_folder(_samples(n=2), tmp_path / "keep")
    before = sorted(p.name for p in (good / "images").iterdir())
    with pytest.raises(RuntimeError):
        interchange.write_folder(broken(), good, overwrite=True)
    assert sorted(p.name for p in (good / "images").iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


def test_non_empty_folder_needs_overwrite(folder):
    with pytest.raises(FileExistsError, match="not empty"):
        interchange.write_folder(_samples(n=1), folder)
    interchange.write_folder(_samples(n=1), folder, overwrite=True)
    assert len(InterchangeDataset(folder)) == 1
