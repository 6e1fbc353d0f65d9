"""Figure-ground stimuli: the orientation field read back from the pixels matches the figure
mask, the dot is on the figure iff the answer is "yes", and only the dot depends on the answer."""

import dataclasses

import numpy as np
import pytest

from recurvlm.data.stimuli import figure_ground as fg
from recurvlm.data.stimuli import generate
from recurvlm.data.stimuli.figure_ground import LEVELS, STANDARD, FigureGroundDifficulty

BG = round(fg.BACKGROUND * 255)


def _marker_pixels(img: np.ndarray) -> np.ndarray:
    """Pixels touched by the coloured dot (the texture is grey: R == G == B)."""
    return (img[..., 0] != img[..., 1]) | (img[..., 1] != img[..., 2])


def _cell_orientations(img: np.ndarray, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """Orientation (degrees, counter-clockwise on screen, in [0, 180)) of the ink in every
    texture cell from its second moments, and the ink mass left after removing dot pixels."""
    h = img.shape[0]
    n = h // cell
    ink = np.clip((BG - img[..., 1].astype(np.float64)) / BG, 0, None)
    ink[_marker_pixels(img)] = 0.0
    w = ink.reshape(n, cell, n, cell).transpose(0, 2, 1, 3)  # [n, n, cell, cell]
    yy, xx = np.mgrid[0:cell, 0:cell].astype(np.float64)
    m = w.sum(axis=(2, 3))
    mx, my = (w * xx).sum(axis=(2, 3)) / m, (w * yy).sum(axis=(2, 3)) / m
    cxx = (w * xx * xx).sum(axis=(2, 3)) / m - mx * mx
    cyy = (w * yy * yy).sum(axis=(2, 3)) / m - my * my
    cxy = (w * xx * yy).sum(axis=(2, 3)) / m - mx * my
    phi = 0.5 * np.degrees(np.arctan2(2 * cxy, cxx - cyy))  # y points down
    return np.mod(-phi, 180.0), m


def _angle_diff(a, b):
    d = np.mod(np.asarray(a) - np.asarray(b), 180.0)
    return np.minimum(d, 180.0 - d)


@pytest.mark.parametrize("level", list(LEVELS))
def test_orientation_read_from_pixels_matches_the_figure_mask(level):
    d = LEVELS[level]
    c = d.cell
    for i in range(40):
        s = generate("figure_ground", 3, i, level)
        est, mass = _cell_orientations(s.image, c)
        fig_cells = s.maps["figure"][::c, ::c]
        # The figure mask is a union of whole cells, off the outermost ring of cells.
        assert np.array_equal(s.maps["figure"], np.kron(fig_cells, np.ones((c, c), dtype=bool)))
        assert not fig_cells[[0, -1], :].any() and not fig_cells[:, [0, -1]].any()
        assert fig_cells.sum() >= 2
        clean = ~_marker_pixels(s.image).reshape(d.n_cells, c, d.n_cells, c).any(axis=(1, 3))
        nu = s.info["figure"]
        want = np.where(fig_cells, nu["theta_figure"], nu["theta_ground"])
        assert _angle_diff(est[clean], want[clean]).max() < 6.0
        # ... and the two orientations differ by the contrast knob.
        assert _angle_diff(nu["theta_figure"], nu["theta_ground"]) == pytest.approx(d.orientation_contrast, abs=1e-2)
        assert np.array_equal(s.maps["orientation"][::c, ::c], np.round(want).astype(np.int16) % 180)
        assert mass[clean].std() < 0.1 * mass[clean].mean()  # same amount of ink in every cell


def _edge_distance(figure: np.ndarray, x: float, y: float) -> float:
    """Distance from (x, y) to the nearest pixel edge between figure and ground pixels
    (pixel (r, c) spans [c - 0.5, c + 0.5] x [r - 0.5, r + 0.5]); pixel level, no cells."""
    r, c = np.nonzero(figure[:, 1:] != figure[:, :-1])  # edge at x = c + 0.5, y in [r - .5, r + .5]
    dv = np.hypot(x - (c + 0.5), np.maximum(np.abs(y - r) - 0.5, 0))
    r2, c2 = np.nonzero(figure[1:, :] != figure[:-1, :])  # edge at y = r2 + 0.5
    dh = np.hypot(y - (r2 + 0.5), np.maximum(np.abs(x - c2) - 0.5, 0))
    return float(min(dv.min(), dh.min()))


@pytest.mark.parametrize("level", list(LEVELS))
def test_dot_is_on_the_figure_iff_yes(level):
    d = LEVELS[level]
    c = d.cell
    n_read = 0
    for i in range(60):
        s = generate("figure_ground", 4, i, level)
        ((x, y),) = s.info["markers"]
        # The dot is drawn where info says: the centroid of its coloured pixels.
        red = _marker_pixels(s.image)
        ry, rx = np.nonzero(red)
        wgt = s.image[ry, rx, 0].astype(float) - s.image[ry, rx, 1]
        assert abs((rx * wgt).sum() / wgt.sum() - x) < 0.25 and abs((ry * wgt).sum() / wgt.sum() - y) < 0.25
        on_figure = bool(s.maps["figure"][int(round(y)), int(round(x))])
        assert on_figure == (s.answer == "yes")
        # Its distance to the figure's contour, measured on the pixel mask, is the recorded one,
        # at least 1 px, and the dot keeps clear of the image border.
        dist = _edge_distance(s.maps["figure"], x, y)
        assert dist == pytest.approx(s.info["nuisance"]["probe_boundary_distance"], abs=1e-6)
        assert dist >= 1.0 - fg._DISTANCE_TOL
        assert fg.PROBE_MARGIN_PX <= min(x, y) and max(x, y) <= d.image_size - 1 - fg.PROBE_MARGIN_PX
        # Independent of the maps: the orientation of the dot's own cell, read from the pixels
        # left uncovered by the dot, is the figure's iff "yes" (where enough of it shows).
        est, mass = _cell_orientations(s.image, c)
        i_c, j_c = int((y + 0.5) // c), int((x + 0.5) // c)
        nu = s.info["figure"]
        if mass[i_c, j_c] > 0.6 * np.median(mass):
            n_read += 1
            closer_to_figure = _angle_diff(est[i_c, j_c], nu["theta_figure"]) < _angle_diff(est[i_c, j_c], nu["theta_ground"])
            assert closer_to_figure == (s.answer == "yes")
    assert n_read >= 20


def test_boundary_map_is_the_two_cell_band_along_the_edge():
    for level in LEVELS:
        c = LEVELS[level].cell
        for i in range(10):
            s = generate("figure_ground", 5, i, level)
            f = s.maps["figure"]
            # A pixel is on the boundary iff the pixel one cell away in some 4-direction lies
            # in the other region (inside the image).
            p = np.pad(f, c, mode="edge")
            h, w = f.shape
            other = np.zeros_like(f)
            for dy, dx in ((c, 0), (-c, 0), (0, c), (0, -c)):
                other |= p[c + dy:c + dy + h, c + dx:c + dx + w] != f
            assert np.array_equal(s.maps["boundary"], other)
            assert s.maps["boundary"][f].any() and s.maps["boundary"][~f].any()


def _foreign_pattern(s, c: int) -> tuple:
    """For the 3 x 3 cells around the dot's cell: does each lie in the other region?"""
    ((x, y),) = s.info["markers"]
    i, j = int((y + 0.5) // c), int((x + 0.5) // c)
    cells = np.pad(s.maps["figure"][::c, ::c], 1)  # outside the image counts as ground
    block = cells[i:i + 3, j:j + 3]
    return tuple((block != block[1, 1]).ravel())


@pytest.mark.parametrize("level", list(LEVELS))
def test_only_the_dot_depends_on_the_answer(level):
    """The same rng stream with either answer gives the same texture, figure and maps; the
    images differ only around the two dots."""
    d = LEVELS[level]
    for k in range(20):
        no, yes = fg.make(np.random.default_rng(k), 0, d), fg.make(np.random.default_rng(k), 1, d)
        assert (no.answer, yes.answer) == ("no", "yes")
        for name in no.maps:
            assert np.array_equal(no.maps[name], yes.maps[name])
        assert no.info["figure"] == yes.info["figure"]  # position, shape, orientations
        for key, value in no.info["nuisance"].items():  # offsets, key, figure size, theta_g
            if key != "probe_boundary_distance":
                assert yes.info["nuisance"][key] == value, key
        assert abs(no.info["nuisance"]["probe_boundary_distance"]
                   - yes.info["nuisance"]["probe_boundary_distance"]) <= fg._DISTANCE_TOL
        # What a small receptive field sees of the layout is the same: which of the 8 cells
        # around the dot's cell lie in the other region (read from the figure map).
        assert _foreign_pattern(no, d.cell) == _foreign_pattern(yes, d.cell)
        near = np.zeros(no.image.shape[:2], dtype=bool)
        yy, xx = np.mgrid[0:d.image_size, 0:d.image_size]
        for s in (no, yes):
            ((x, y),) = s.info["markers"]
            near |= np.hypot(xx - x, yy - y) <= d.marker_radius + 1.0
        assert np.array_equal(no.image[~near], yes.image[~near])
        assert not np.array_equal(no.image, yes.image)


def test_no_luminance_cue_inside_vs_outside_the_figure():
    for level in LEVELS:
        diffs = []
        for i in range(200):
            s = generate("figure_ground", 6, i, level)
            g = s.image[..., 1].astype(float)
            keep = ~_marker_pixels(s.image)
            f = s.maps["figure"]
            diffs.append(g[f & keep].mean() - g[~f & keep].mean())
        diffs = np.array(diffs)
        # Per image the two textures' antialiased ink differs a little with orientation;
        # over images the difference averages out (both orientations are uniform).
        assert np.abs(diffs).max() < 2.0  # grey levels of 255
        assert abs(diffs.mean()) < 3 * diffs.std() / np.sqrt(len(diffs)) + 0.05


def test_orientations_and_contrast_sign_are_random():
    nus = [generate("figure_ground", 7, i, "medium").info["figure"] for i in range(400)]
    theta_g = np.array([nu["theta_ground"] for nu in nus])
    theta_f = np.array([nu["theta_figure"] for nu in nus])
    signs = np.array([nu["contrast_sign"] for nu in nus])
    assert set(signs) == {-1, 1} and abs(signs.mean()) < 0.15
    for th in (theta_g, theta_f):
        assert th.min() >= 0 and th.max() < 180
        assert np.histogram(th, bins=6, range=(0, 180))[0].min() > 40
    assert np.allclose(np.mod(theta_f - theta_g - 45.0 * signs + 1.0, 180.0), 1.0, atol=1e-2)


def test_standard_mode_fixes_the_dot_and_the_texture_around_it():
    d = STANDARD
    c, pc = d.cell, d.n_cells // 2
    assert fg.TASK.n_conditions(d) == 6 and fg.TASK.n_conditions(LEVELS["easy"]) == 2
    samples = [generate("figure_ground", seed, i, d) for seed in (0, 1) for i in range(12)]
    assert {s.info["markers"][0][0] for s in samples} == {pc * c + (c - 1) / 2}
    assert {tuple(s.info["markers"][0]) for s in samples} == {(pc * c + (c - 1) / 2,) * 2}
    block = (slice((pc - 1) * c, (pc + 2) * c),) * 2  # the dot's 3 x 3 cells
    patches = {}
    for s in samples:
        cond, a = s.info["condition"], s.info["texture_assignment"]
        fig_cells = s.maps["figure"][::c, ::c]
        near = fig_cells[pc - 1:pc + 2, pc - 1:pc + 2]
        assert s.answer == ("no" if cond == "ground" else "yes")
        if cond == "centre":
            assert near.all()
        elif cond == "ground":
            assert not near.any()
        else:  # the dot's cell is a figure cell with exactly one ground 4-neighbour
            assert near[1, 1] and (~near[[0, 1, 1, 2], [1, 0, 2, 1]]).sum() == 1
        # The dot's cell carries texture A (assignment 0) or B (assignment 1).
        nu = s.info["figure"]
        dot_theta = nu["theta_figure"] if cond != "ground" else nu["theta_ground"]
        assert dot_theta == pytest.approx((d.standard_theta + a * d.orientation_contrast) % 180.0, abs=1e-2)
        if cond != "edge":
            patches.setdefault(a, []).append((cond, s.image[block]))
    for a, items in patches.items():
        assert {cond for cond, _ in items} == {"centre", "ground"}
        for _, patch in items[1:]:
            assert np.array_equal(patch, items[0][1])  # identical pixels, figure or ground
    assert not np.array_equal(patches[0][0][1], patches[1][0][1])


@pytest.mark.parametrize("knobs, match", [
    ({"orientation_contrast": 10.0}, "orientation_contrast=10.0 is out of range; valid: 15..90"),
    ({"orientation_contrast": 95.0}, "orientation_contrast"),
    ({"figure_size": (0.5, 0.3)}, "figure_size"),
    ({"figure_size": (0.05, 0.3)}, "figure_size"),
    ({"figure_size": (0.3, 0.8)}, "figure_size"),
    ({"shape": "triangle"}, "shape='triangle' is not valid; valid: square, rectangle, disc, blob, random"),
    ({"cell": 7}, "cell=7 does not fit image_size=64"),
    ({"cell": 2}, "cell=2 is out of range"),
    ({"segment_length": 7.0}, "segment_length=7.0 is out of range"),
    ({"jitter": 2.0}, "segment_length"),  # a jitter that pushes segments out of their cell
    ({"jitter": -1.0}, "jitter"),
    ({"line_width": 0.0}, "line_width"),
    ({"probe_distance": (0.0, 1.0)}, "probe_distance"),
    ({"marker_radius": 9.0}, "marker_radius"),
    ({"mode": "test"}, "mode='test' is not valid; valid: task, standard"),
    ({"mode": "standard"}, "mode='standard' needs >= 12 cells per side"),
    ({"standard_theta": 180.0}, "standard_theta"),
    ({"image_size": 20}, "image_size=20 is out of range"),
])
def test_bad_knobs_fail_with_one_clear_line(knobs, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)")):
        fg.TASK.resolve(knobs)


def test_every_level_and_shape_generates_at_64_and_128():
    for level, d in LEVELS.items():
        for size in (64, 128):
            dd = dataclasses.replace(d, image_size=size)
            for i in range(6):
                s = generate("figure_ground", 8, i, dd)
                assert s.image.shape == (size, size, 3) and s.maps["figure"].any()
    shapes = {generate("figure_ground", 9, i, "hard").info["figure"]["shape"] for i in range(60)}
    assert shapes == set(fg.SHAPES)
    for shape in fg.SHAPES:
        s = generate("figure_ground", 9, 0, {"shape": shape, "figure_size": (0.3, 0.4)})
        assert s.info["figure"]["shape"] == shape
    # Lists (as difficulties come back from JSON) are accepted for tuple knobs.
    assert fg.TASK.resolve({"figure_size": [0.3, 0.4]}).figure_size == (0.3, 0.4)
