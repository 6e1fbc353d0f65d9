"""Curve tracing: the answer is read back from the rendered maps and image, the curves obey
their geometric rules, and the answer changes nothing but which curve end gets the second dot."""

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest
from scipy import ndimage

from recurvlm.data.stimuli import curve_tracing as ct
from recurvlm.data.stimuli import generate, render
from recurvlm.data.stimuli.base import sample_rng
from recurvlm.data.stimuli.curve_tracing import LEVELS, CurveTracingDifficulty

EIGHT = np.ones((3, 3), int)
CASES = [*LEVELS.items(), ("hard128", dataclasses.replace(LEVELS["hard"], image_size=128)),
         ("small32", CurveTracingDifficulty(contour_length=5, distractors=3, image_size=32, stroke_width=2.0)),
         ("curly", CurveTracingDifficulty(contour_length=12, max_turn=45.0, distractors=2))]
IDS = [c[0] for c in CASES]


def pixel(p) -> tuple[int, int]:
    """(row, col) of the pixel nearest to a marker centre (x, y)."""
    return int(round(p[1])), int(round(p[0]))


def scale(d) -> float:
    return d.image_size / 64.0


@pytest.mark.parametrize("name, d", CASES, ids=IDS)
def test_answer_matches_the_connectivity_of_the_target_curve(name, d):
    """The target-curve mask is one 8-connected stroke through the first dot; it reaches the
    second dot iff the answer is yes, and the instance map puts the second dot on curve 1 (yes)
    or on curve 2 (no). The masks are pixels the image really inks."""
    seen = set()
    for i in range(16):
        s = generate("curve_tracing", 1, i, d)
        target, inst = s.maps["target_curve"], s.maps["curves"]
        assert target.dtype == bool and inst.dtype == np.int8
        lab, n = ndimage.label(target, structure=EIGHT)
        assert n == 1
        a, b = (pixel(p) for p in s.info["markers"])
        assert target[a] and inst[a] == 1
        assert target[b] == (s.answer == "yes")
        assert inst[b] == (1 if s.answer == "yes" else 2)
        # Curve 1 in the instance map is part of the target mask; every mapped pixel is inked.
        assert not np.any((inst == 1) & ~target)
        grey = s.image.astype(int).sum(-1)
        assert np.all(grey[(inst > 0) | target] >= 3 * 50)
        assert set(np.unique(inst)) == set(range(len(np.unique(inst))))  # ids 0..C, all present
        assert len(np.unique(inst)) - 1 == 2 + d.distractors
        seen.add(s.answer)
    assert seen == {"no", "yes"}


@pytest.mark.parametrize("name, d", CASES, ids=IDS)
def test_each_dot_sits_alone_on_one_curve_end(name, d):
    """Around each dot only its own curve is drawn, it leaves the dot in one direction (an end,
    not a pass-through), and the dots are apart; the image border stays empty."""
    g = ct._geometry(d)
    yy, xx = np.mgrid[0 : d.image_size, 0 : d.image_size]
    for i in range(12):
        s = generate("curve_tracing", 2, i, d)
        inst = s.maps["curves"]
        (ax, ay), (bx, by) = s.info["markers"]
        assert math.hypot(bx - ax, by - ay) >= g.d_min - 1e-9
        for x, y in s.info["markers"]:
            r = np.hypot(xx - x, yy - y)
            own = inst[pixel((x, y))]
            near = inst[r <= g.c_mark - g.r_stroke - 0.5]
            assert set(np.unique(near[near > 0])) == {own}
            ring = (r >= g.c_mark - g.r_stroke - 1.5) & (r <= g.c_mark - g.r_stroke - 0.5)
            runs, n_runs = ndimage.label((inst == own) & ring, structure=EIGHT)
            assert n_runs == 1  # the curve crosses the ring once: the dot is on an end
        ink = s.image.astype(int).sum(-1) > 3 * 8
        assert not (ink[0].any() or ink[-1].any() or ink[:, 0].any() or ink[:, -1].any())


@pytest.mark.parametrize("name, d", CASES, ids=IDS)
def test_curves_respect_segment_length_turn_and_image(name, d):
    g = ct._geometry(d)
    for i in range(10):
        curves = ct._curves(sample_rng(3, i, "curve_tracing"), g, d.distractors)
        assert curves.shape == (2 + d.distractors, d.contour_length + 1)
        steps = np.diff(curves, axis=1)
        assert np.allclose(np.abs(steps), g.seg, atol=1e-2)
        turn = np.degrees(np.abs(np.angle(steps[:, 1:] / steps[:, :-1])))
        assert turn.max() <= d.max_turn + 0.05
        assert curves.real.min() >= g.margin - 1e-9 and curves.imag.min() >= g.margin - 1e-9
        assert max(curves.real.max(), curves.imag.max()) <= d.image_size - 1 - g.margin + 1e-9
        # Curves cross at an angle: no two strokes of different curves run close and nearly parallel.
        for p in range(len(curves)):
            for q in range(p + 1, len(curves)):
                a, u = curves[p, :-1, None], steps[p, :, None]
                c, w = curves[q, None, :-1], steps[q, None, :]
                sin = np.abs((np.conj(u) * w).imag) / (np.abs(u) * np.abs(w))
                mid = np.abs((a + u / 2) - (c + w / 2))  # segment midpoints
                assert not np.any((mid < 0.5 * g.seg) & (sin < math.sin(math.radians(20))))


@pytest.mark.parametrize("level", list(LEVELS))
def test_the_answer_only_moves_the_second_dot(level):
    """Same random stream, both answers: the same curves, the same first dot; the images differ
    only within the discs of the two candidate places of the second dot."""
    d = LEVELS[level]
    g = ct._geometry(d)
    yy, xx = np.mgrid[0 : d.image_size, 0 : d.image_size]
    for i in range(8):
        no, yes = (ct.make(sample_rng(4, i, "curve_tracing"), c, d) for c in (0, 1))
        assert no.answer == "no" and yes.answer == "yes"
        for key in ("curves", "target_curve"):
            assert np.array_equal(no.maps[key], yes.maps[key])
        assert no.info["markers"][0] == yes.info["markers"][0]
        assert no.info["markers"][1] != yes.info["markers"][1]
        differ = np.any(no.image != yes.image, axis=-1)
        allowed = np.zeros_like(differ)
        for x, y in (no.info["markers"][1], yes.info["markers"][1]):
            allowed |= np.hypot(xx - x, yy - y) <= g.r_marker + 1.0
        assert differ.any() and not np.any(differ & ~allowed)
        for k in ("n_crossings_target", "n_crossings_main", "n_curves", "contour_length"):
            assert no.info["nuisance"][k] == yes.info["nuisance"][k]


def test_marker_distance_is_matched_by_the_phantom_construction():
    """The "no" dot sits where a phantom curve from the first dot would end, so the distance
    and the stroke angles at the dots have one law: compare the class means on a quick sample."""
    d = LEVELS["easy"]
    rows = [ct.make(sample_rng(5, i, "curve_tracing"), i % 2, d).info["nuisance"] for i in range(400)]
    for key in ("marker_distance", "angle_at_first_marker", "angle_at_second_marker"):
        no = np.array([r[key] for r in rows[0::2]])
        yes = np.array([r[key] for r in rows[1::2]])
        se = math.sqrt(no.var() / len(no) + yes.var() / len(yes))
        assert abs(no.mean() - yes.mean()) < 4 * se, key


def test_dots_have_one_look():
    """Both dots: one radius, one colour, whatever the answer."""
    for i in range(6):
        s = generate("curve_tracing", 6, i, "medium")
        for p in s.info["markers"]:
            assert tuple(s.image[pixel(p)]) == tuple(round(255 * c) for c in ct.MARKER)


def test_levels_question_and_choices():
    assert list(LEVELS) == ["easy", "medium", "hard"]
    assert [LEVELS[k].contour_length for k in LEVELS] == [6, 9, 14]
    assert all(LEVELS[k].image_size == 64 for k in LEVELS)
    s = generate("curve_tracing", 0, 0, "easy")
    assert s.question == "Are the two dots on the same curve?" and s.choices == ("no", "yes")
    assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8


@pytest.mark.parametrize("knobs, match", [
    ({"contour_length": 2}, "contour_length=2 is out of range; valid: 3..20"),
    ({"contour_length": 9.0}, "contour_length=9.0"),
    ({"segment_length": 1.0}, "segment_length=1.0 is out of range; valid: 2.0..8.0"),
    ({"max_turn": 75.0}, "max_turn=75.0 is out of range; valid: 0.0..60.0"),
    ({"distractors": -1}, "distractors=-1 is out of range; valid: 0..30"),
    ({"stroke_width": 0.5}, "stroke_width=0.5 is out of range; valid: 1.0..3.0"),
    ({"image_size": 256}, "image_size=256 is out of range; valid: 32..128"),
    ({"contour_length": 20, "segment_length": 4.0}, "contour_length \\* segment_length = 80 px is out of range"),
])
def test_bad_knobs_fail_with_one_clear_line(knobs, match):
    with pytest.raises(ValueError, match=match):
        CurveTracingDifficulty(**knobs)


def test_a_layout_that_cannot_fit_fails_clearly():
    d = CurveTracingDifficulty(contour_length=8, segment_length=8.0, distractors=30)
    with pytest.raises(RuntimeError, match="fit"):
        ct.make(sample_rng(0, 0, "curve_tracing"), 1, d)


# Digests of the first 8 samples of set 0: speed-ups must leave every byte (image, maps, answer,
# info) as it was. Re-pinned when headings became whole multiples of 2 pi / 16384 (steps from a
# table, direction bins in whole numbers; first headings uniform on that grid, turns uniform on
# it within max_turn) and the distractor candidate rounds grew to 10 * distractors + 30: the same
# law up to that quantisation, other bytes. Re-pinned again when the rounds grew to
# 15 * distractors + 40 (other candidates, the same i.i.d. first-fit law; only the rare give-up
# of a layout whose distractors do not fit in ROUNDS rounds became rarer); without distractors
# the bytes stayed.
PINNED = [
    ("easy", "b616d1006fc3e17a"),
    ("medium", "d507444d7299aaff"),
    ("hard", "0547638e8e888c29"),
    ({"level": "hard", "image_size": 128}, "18f44c273e688cec"),
    ({"distractors": 0}, "c8a314ff67e3c873"),
    ({"contour_length": 5, "distractors": 3, "image_size": 32, "stroke_width": 2.0}, "c0936ac33bb80ddf"),
]


@pytest.mark.parametrize("difficulty, digest", PINNED, ids=[str(d) for d, _ in PINNED])
def test_samples_are_byte_for_byte_as_pinned(difficulty, digest):
    h = hashlib.sha256()
    for i in range(8):
        s = generate("curve_tracing", 0, i, difficulty)
        h.update(s.image.tobytes())
        for k in sorted(s.maps):
            h.update(k.encode() + np.ascontiguousarray(s.maps[k]).tobytes())
        h.update(json.dumps([s.question, s.answer, list(s.choices), s.info], sort_keys=True).encode())
    assert h.hexdigest()[:16] == digest


def test_direction_codes_match_the_plain_formula():
    """Headings are whole multiples of 2 pi / HEADINGS, and `_codes` computes their direction
    bins in whole numbers: the plain float formula (degrees(h) % 180 / 3) as int % 60 gives the
    same bins, except where a heading lies exactly on a bin boundary (the float formula may land
    a rounding error below it there)."""
    k = np.arange(ct.HEADINGS)
    h = k * (2.0 * math.pi / ct.HEADINGS)
    plain = (np.degrees(h) % 180.0 * (ct.DIR_BINS / 180.0)).astype(np.int64) % ct.DIR_BINS
    codes = ct._codes(k[None, :].copy())
    on_boundary = (k * ct.DIR_BINS) % (ct.HEADINGS // 2) == 0
    assert np.array_equal(codes[0][~on_boundary], plain[~on_boundary]) and np.all(codes[1] == ct.DIR_BINS)
    exact = (k % (ct.HEADINGS // 2)) * ct.DIR_BINS // (ct.HEADINGS // 2)
    assert np.array_equal(codes[0], exact)


@pytest.mark.parametrize("name, d", CASES, ids=IDS)
def test_picture_equals_drawing_the_dots_on_the_float_image(name, d):
    """`_picture` draws each dot in a fixed box (clipped at the far image edge): the bytes of
    `render.draw_disc` on the composited float image and `render.to_uint8`, also for dots at the
    extreme places the margin allows and dots as close as `d_min`."""
    g = ct._geometry(d)
    rng = np.random.default_rng(0)
    lo, hi = g.margin, d.image_size - 1 - g.margin
    q = 1.0 / 1024.0
    places = [((lo, lo), (hi, hi)), ((hi, lo), (lo, hi)), ((lo + 0.3, hi), (lo + 0.3 + g.d_min, hi)),
              ((hi - q, hi - 0.5), (hi - q - g.d_min, hi - 0.5))]
    while len(places) < 16:  # random places on the quantum grid, d_min apart (as every sample's dots are)
        a, b = (tuple((np.round(rng.uniform(lo, hi, 2) / q) * q).tolist()) for _ in range(2))
        if math.dist(a, b) >= g.d_min:
            places.append((a, b))
    for dots in places:
        lev = rng.integers(0, ct.ALPHA_LEVELS + 1, (d.image_size, d.image_size)) * (rng.random((d.image_size,) * 2) < 0.3)
        ref = ct._STROKE_RGB[lev].copy()
        for x, y in dots:
            render.draw_disc(ref, x, y, g.r_marker, ct.MARKER)
        assert np.array_equal(ct._picture(lev, dots, g), render.to_uint8(ref)), dots
