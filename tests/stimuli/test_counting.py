"""Counting stimuli: the answer equals the number of target-shaped blobs in the rendered image."""

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from recurvlm.data.stimuli import counting, generate
from recurvlm.data.stimuli.counting import LEVELS, CountingDifficulty

# The glyphs drawn by hand, independently of the module's bitmap code.
ART = {
    ("t", 5): ["#####", "..#..", "..#..", "..#..", "..#.."],
    ("l", 5): ["#....", "#....", "#....", "#....", "#####"],
    ("plus", 5): ["..#..", "..#..", "#####", "..#..", "..#.."],
    ("x", 5): ["#...#", ".#.#.", "..#..", ".#.#.", "#...#"],
    ("plus", 7): ["...#...", "...#...", "...#...", "#######", "...#...", "...#...", "...#..."],
    ("x", 7): ["#.....#", ".#...#.", "..#.#..", "...#...", "..#.#..", ".#...#.", "#.....#"],
    ("t", 7): ["#######", "...#...", "...#...", "...#...", "...#...", "...#...", "...#..."],
    ("l", 7): ["#......", "#......", "#......", "#......", "#......", "#......", "#######"],
}


def art(name: str, g: int) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in ART[(name, g)]])


def rotations(b: np.ndarray) -> list[np.ndarray]:
    return [np.rot90(b, k) for k in range(4)]


def components(image: np.ndarray):
    """8-connected blobs of ink (anything not the most common colour) with their crops."""
    flat = image.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    ink = np.any(image != colours[counts.argmax()], axis=2)
    lab, n = ndimage.label(ink, structure=np.ones((3, 3), int))
    boxes = ndimage.find_objects(lab)
    return ink, lab, [(lab[b] == i + 1, b) for i, b in enumerate(boxes)]


def classify(crop: np.ndarray, d: CountingDifficulty) -> tuple[str, int]:
    """('target' | 'distractor', rotation) of one blob, by matching the hand-drawn glyphs."""
    target, distractor = d.pair.split("_")
    hits = [(kind, k) for kind, name in (("target", target), ("distractor", distractor))
            for k, r in enumerate(rotations(art(name, d.glyph_size))) if r.shape == crop.shape and np.array_equal(r, crop)]
    assert hits, f"blob matches neither glyph:\n{crop.astype(int)}"
    assert len({kind for kind, _ in hits}) == 1, "blob matches both glyphs"
    return hits[0][0], min(k for _, k in hits)


CASES = [*LEVELS.items(),
         ("hard128", dataclasses.replace(LEVELS["hard"], image_size=128, n_objects=40)),
         ("l_t7", CountingDifficulty(pair="l_t", glyph_size=7, n_objects=10, spacing=1, jitter=1, count_min=0, count_max=4))]


@pytest.mark.parametrize("name, d", CASES, ids=[c[0] for c in CASES])
def test_answer_is_the_number_of_target_shaped_blobs(name, d):
    for i in range(40):
        s = generate("counting", 3, i, d)
        ink, lab, blobs = components(s.image)
        kinds = [classify(crop, d)[0] for crop, _ in blobs]
        assert len(blobs) == d.n_objects  # no glyph merged with another
        assert kinds.count("target") == int(s.answer)
        assert s.question == f"How many {counting.GLYPH_NAMES[d.pair.split('_')[0]]}s are there?"
        # The "targets" map holds exactly `answer` instances, each one whole target-shaped blob.
        t = s.maps["targets"]
        assert sorted(np.unique(t[t > 0]).tolist()) == list(range(1, int(s.answer) + 1))
        target_blobs = {j + 1 for j, k in enumerate(kinds) if k == "target"}
        for tid in range(1, int(s.answer) + 1):
            blob_ids = np.unique(lab[t == tid])
            assert len(blob_ids) == 1 and blob_ids[0] in target_blobs
            assert np.array_equal(lab == blob_ids[0], t == tid)
        # "objects" covers exactly the ink, one instance per blob.
        o = s.maps["objects"]
        assert np.array_equal(o > 0, ink)
        assert len(np.unique(o[o > 0])) == d.n_objects


def test_ink_and_colours_do_not_depend_on_the_count():
    d = LEVELS["hard"]
    hists = set()
    for seed in range(5):
        for c in range(counting.TASK.n_conditions(d)):
            s = counting.make(np.random.default_rng(seed), c, d)
            assert int(s.answer) == d.count_min + c
            colours, counts = np.unique(s.image.reshape(-1, 3), axis=0, return_counts=True)
            hists.add((colours.tobytes(), counts.tobytes()))
            assert s.info["nuisance"]["ink"] == int((s.maps["objects"] > 0).sum())
    assert len(hists) == 1  # the colour histogram is one and the same for every count and layout


def test_layout_is_drawn_before_the_count():
    """Same rng, different counts: the same glyph boxes, only the shapes inside them differ."""
    d = LEVELS["medium"]
    for seed in range(5):
        boxes, nuis = set(), []
        for c in range(counting.TASK.n_conditions(d)):
            s = counting.make(np.random.default_rng(seed), c, d)
            boxes.add(tuple((b[0].start, b[1].start) for _, b in components(s.image)[2]))
            nuis.append(s.info["nuisance"])
        assert len(boxes) == 1 and all(n == nuis[0] for n in nuis)


@pytest.mark.parametrize("spacing", [1, 3])
def test_glyph_boxes_keep_the_minimum_gap(spacing):
    d = dataclasses.replace(LEVELS["hard"], spacing=spacing, jitter=2, n_objects=16)
    gaps = []
    for i in range(30):
        boxes = [b for _, b in components(generate("counting", 0, i, d).image)[2]]
        y0, y1 = np.array([b[0].start for b in boxes]), np.array([b[0].stop for b in boxes])
        x0, x1 = np.array([b[1].start for b in boxes]), np.array([b[1].stop for b in boxes])
        gy = np.maximum(y0[:, None] - y1[None, :], y0[None, :] - y1[:, None])
        gx = np.maximum(x0[:, None] - x1[None, :], x0[None, :] - x1[:, None])
        g = np.maximum(gy, gx)
        np.fill_diagonal(g, 10**6)
        gaps.append(g.min())
    assert min(gaps) >= spacing
    assert min(gaps) == spacing  # the knob is reached: crowding at the minimum actually happens


def test_every_pair_is_told_apart_only_by_shape():
    for pair in counting.PAIRS:
        target, distractor = pair.split("_")
        for g in (3, 5, 7):
            a, b = counting.glyph_bitmap(target, g), counting.glyph_bitmap(distractor, g)
            assert a.sum() == b.sum() == 2 * g - 1  # equal ink
            assert not any(np.array_equal(r, b) for r in rotations(a))  # no rotation turns one into the other


@pytest.mark.parametrize("rotate", [True, False])
def test_rotate_knob(rotate):
    d = dataclasses.replace(LEVELS["hard"], rotate=rotate)
    seen = {"target": set(), "distractor": set()}
    for i in range(20):
        for crop, _ in components(generate("counting", 1, i, d).image)[2]:
            kind, k = classify(crop, d)
            seen[kind].add(k)
    expect = {0, 1, 2, 3} if rotate else {0}
    assert seen == {"target": expect, "distractor": expect}


def test_levels_and_choices():
    for name, d in LEVELS.items():
        s = generate("counting", 0, 0, name)
        assert s.image.shape == (64, 64, 3) and s.info["markers"] == []
        assert s.choices == tuple(str(c) for c in range(d.count_min, d.count_max + 1))
        assert counting.TASK.n_conditions(d) == len(s.choices)
    s = counting.make(np.random.default_rng(0), 0, dataclasses.replace(LEVELS["easy"], count_min=0))
    assert s.answer == "0" and not s.maps["targets"].any()


@pytest.mark.parametrize("knobs, match", [
    (dict(count_max=20, n_objects=16), "count_max=20 exceeds n_objects=16"),
    (dict(pair="t_t"), "pair='t_t'"),
    (dict(glyph_size=4), "glyph_size=4"),
    (dict(spacing=0), "spacing=0"),
    (dict(n_objects=50), r"n_objects=50 is out of range; valid: 1\.\.49"),
    (dict(count_min=3, count_max=3), "count_max=3"),
    (dict(count_min=-1), "count_min=-1"),
])
def test_knob_validation(knobs, match):
    with pytest.raises(ValueError, match=match) as e:
        dataclasses.replace(LEVELS["hard"], **knobs)
    assert "\n" not in str(e.value)


def test_condition_out_of_range():
    with pytest.raises(ValueError, match="condition=6"):
        counting.make(np.random.default_rng(0), 6, LEVELS["hard"])
