"""Border ownership (Zhou, Friedman & von der Heydt 2000): ground truth read back from the
rendered image, identical local edges at the dot in both conditions, both polarities,
no corner or junction near the dot, ownership map signs, knob validation."""

import dataclasses
import math

import numpy as np
import pytest
from scipy import ndimage

from recurvlm.data.stimuli import generate
from recurvlm.data.stimuli.border_ownership import LEVELS, BorderOwnershipDifficulty, make

SINGLE = {
    "easy": LEVELS["easy"],
    "medium": LEVELS["medium"],
    "medium_o90": dataclasses.replace(LEVELS["medium"], orientation=90),
    "L_128": dataclasses.replace(LEVELS["medium"], shape="L", image_size=128, size=(14.0, 60.0)),
}
ALL = {**SINGLE, "hard": LEVELS["hard"], "hard_o90_128": dataclasses.replace(LEVELS["hard"], orientation=90,
                                                                                image_size=128, size=(18.0, 50.0))}


def _pair(k: int, d):
    """Both conditions from two copies of one rng."""
    return make(np.random.default_rng(k), 0, d), make(np.random.default_rng(k), 1, d)


def _grey_and_marker(img: np.ndarray):
    grey = img[..., 1].astype(np.int64)
    marker = img[..., 0] != img[..., 1]  # greys have R == G == B; the dot is red
    return grey, marker


def _edge_frame(s, d):
    """Marker position along / across the marked edge, and the image transposed so the edge is vertical."""
    (mx, my), = s.info["markers"]
    if d.orientation == 90:
        return s.image.transpose(1, 0, 2), my, mx, {k: v.T for k, v in s.maps.items()}
    return s.image, mx, my, s.maps


def _sides(img, x0, y_m):
    """Greys 3 px left and right of the marked edge at the dot's row (outside the dot)."""
    grey, _ = _grey_and_marker(img)
    r, ce = round(y_m), math.floor(x0 + 0.5)
    return grey[r, ce - 3], grey[r, ce + 3]


@pytest.mark.parametrize("name", list(SINGLE))
def test_answer_matches_the_side_of_the_figure_read_from_the_image(name):
    d = SINGLE[name]
    for k in range(12):
        for s in _pair(k, d):
            img, x0, y_m, maps = _edge_frame(s, d)
            grey, marker = _grey_and_marker(img)
            bg = grey[0, 0]  # figures keep off the border
            vals, counts = np.unique(grey[~marker & (grey != bg)], return_counts=True)
            fg = vals[counts.argmax()]
            fig = (np.abs(grey - bg) > abs(int(fg) - int(bg)) / 2) & ~marker
            assert ndimage.label(fig)[1] == 1  # one figure
            centroid = np.nonzero(fig)[1].mean()
            assert abs(centroid - x0) > 3
            left = centroid < x0
            assert s.answer == ("yes" if left else "no")
            # the generator's ownership map agrees at the dot: -1 = owner on the left / above
            assert maps["ownership"][round(y_m), math.floor(x0 + 0.5)] == (-1 if left else 1)
            # and its figure mask is the figure seen in the image (up to antialiased edge pixels)
            assert (maps["figure"] != fig).mean() < 0.05


def _bbox_misses(grey, near_marker, r, c):
    """Pixels inside the bounding box (less its 1-px rim) of the one-grey region at (r, c) that
    are not in it. The region is taken after a 3x3 erosion, which drops the 1-px antialiased
    edges whose mixed grey may happen to equal a figure's grey."""
    labels, _ = ndimage.label(ndimage.binary_erosion(grey == grey[r, c], np.ones((3, 3), bool)))
    comp = labels == labels[r, c]
    rows, cols = np.nonzero(comp)
    box = np.zeros_like(comp)
    box[rows.min() + 1:rows.max(), cols.min() + 1:cols.max()] = True
    return int((box & ~comp & ~near_marker).sum())


@pytest.mark.parametrize("name", ["hard", "hard_o90_128"])
def test_occlusion_answer_matches_the_unoccluded_surface_read_from_the_image(name):
    """The front surface is a whole rectangle in the image; the back one has a corner missing."""
    d = ALL[name]
    for k in range(12):
        for s in _pair(k, d):
            img, x0, y_m, maps = _edge_frame(s, d)
            grey, _ = _grey_and_marker(img)
            yy, xx = np.mgrid[:grey.shape[0], :grey.shape[1]]
            near_marker = np.hypot(xx - x0, yy - y_m) < 4.5
            r, ce = round(y_m), math.floor(x0 + 0.5)
            left, right = (_bbox_misses(grey, near_marker, r, ce + dc) for dc in (-4, 4))
            assert min(left, right) == 0 and max(left, right) >= 5, (left, right)
            front_left = left == 0
            assert s.answer == ("yes" if front_left else "no")
            assert maps["ownership"][r, ce] == (-1 if front_left else 1)


@pytest.mark.parametrize("name", list(ALL) + ["light", "dark"])
def test_local_edge_at_the_dot_is_identical_in_both_conditions(name):
    d = ALL.get(name) or dataclasses.replace(LEVELS["hard"] if name == "dark" else LEVELS["medium"], polarity=name)
    for k in range(25):
        s0, s1 = _pair(k, d)
        assert (s0.answer, s1.answer) == ("no", "yes")
        assert s0.info["markers"] == s1.info["markers"] and s0.info["nuisance"] == s1.info["nuisance"]
        (mx, my), = s0.info["markers"]
        r, c = round(my), round(mx)
        w0, w1 = (s.image[r - 4:r + 5, c - 4:c + 5] for s in (s0, s1))  # 7x7 bilinear window plus a margin
        assert w0.shape == (9, 9, 3) and np.array_equal(w0, w1)
        assert (s0.image != s1.image).any(axis=2).sum() > 50  # the figure moved to the other side
        # the owning figure lies on opposite sides of the dot
        i0, i1 = (s.maps["instances"] == 1 for s in (s0, s1))
        axis = 1 if d.orientation == 0 else 0
        ref = mx if d.orientation == 0 else my
        assert np.nonzero(i1)[axis].mean() < ref < np.nonzero(i0)[axis].mean()


@pytest.mark.parametrize("level", list(LEVELS))
def test_both_polarities_occur_in_both_classes(level):
    d = LEVELS[level]
    seen = set()
    for i in range(120):
        s = generate("border_ownership", 3, i, d)
        img, x0, y_m, _ = _edge_frame(s, d)
        g_left, g_right = _sides(img, x0, y_m)
        assert g_left != g_right
        seen.add((s.answer, bool(g_left > g_right)))
        assert s.info["nuisance"]["left_lighter"] == int(g_left > g_right)
    assert seen == {("no", False), ("no", True), ("yes", False), ("yes", True)}


@pytest.mark.parametrize("polarity", ["light", "dark"])
def test_fixed_polarity_fixes_the_edge_contrast(polarity):
    for base in ("easy", "hard"):
        d = dataclasses.replace(LEVELS[base], polarity=polarity)
        for i in range(30):
            img, x0, y_m, _ = _edge_frame(s := generate("border_ownership", 0, i, d), d)
            g_left, g_right = _sides(img, x0, y_m)
            assert (g_left > g_right) == (polarity == "light"), s.answer


@pytest.mark.parametrize("name", list(ALL))
def test_no_corner_or_junction_near_the_dot(name):
    """Straight edge for marker_margin px above and below the dot on both sides (read from the
    image), and no figure corner within marker_margin px (Chebyshev) of it."""
    d = ALL[name]
    m = d.marker_margin
    for k in range(15):
        for s in _pair(k, d):
            img, x0, y_m, _ = _edge_frame(s, d)
            grey, _ = _grey_and_marker(img)
            ce = math.floor(x0 + 0.5)
            rows = np.arange(math.ceil(y_m - m + 1), math.floor(y_m + m - 1) + 1)
            for col in (ce - 3, ce + 3):
                assert (grey[rows, col] == grey[round(y_m), col]).all()
            (mx, my), = s.info["markers"]
            for rects in s.info["figures"]:
                for xa, xb, ya, yb in rects:
                    for cx in (xa, xb):
                        for cy in (ya, yb):
                            assert max(abs(cx - mx), abs(cy - my)) >= m - 1e-9
            assert s.info["nuisance"]["marker_to_corner"] >= m and s.info["nuisance"]["marker_to_segment_end"] >= m


@pytest.mark.parametrize("name", list(SINGLE))
def test_ownership_map_points_to_the_figure_on_every_edge(name):
    """Every edge pixel of the rendered figure is marked, with the sign of the direction to it."""
    d = SINGLE[name]
    for k in range(8):
        for s in _pair(k, d):
            grey, marker = _grey_and_marker(s.image)
            (mx, my), = s.info["markers"]
            bg, fg = s.info["greys"]["background"], s.info["greys"]["figure"]
            f = (grey - bg) / (fg - bg)  # rendered coverage, up to uint8 rounding
            own = s.maps["ownership"]
            yy, xx = np.mgrid[:grey.shape[0], :grey.shape[1]]
            far = np.hypot(xx - mx, yy - my) > 4
            partial = (f > 0.02) & (f < 0.98) & far
            assert partial.any() and (own[partial] != 0).all()
            assert ((own != 0) & far <= ndimage.binary_dilation(f > 0.02)).all()
            fp = np.pad(f, 2, mode="edge")
            for r, c in zip(*np.nonzero((own != 0) & far)):
                gx = fp[r + 2, c + 4] - fp[r + 2, c]
                gy = fp[r + 4, c + 2] - fp[r, c + 2]
                assert own[r, c] in (np.sign(round(gx, 6)), np.sign(round(gy, 6))), (r, c, gx, gy)


def test_medium_mixes_the_shapes_and_levels_render_at_128():
    shapes = {generate("border_ownership", 0, i, "medium").info["shape"] for i in range(60)}
    assert shapes == {"square", "rectangle", "L"}
    for level, d in LEVELS.items():
        for size in (64, 128):
            s = generate("border_ownership", 1, 2, dataclasses.replace(d, image_size=size))
            assert s.image.shape == (size, size, 3)
            assert s.maps["ownership"].dtype == np.int8 and s.maps["figure"].dtype == bool
            assert set(np.unique(s.maps["ownership"])) == {-1, 0, 1}
            assert s.maps["instances"].max() == (2 if d.occlusion else 1)
    assert "above" in generate("border_ownership", 0, 0, {"level": "hard", "orientation": 90}).question


@pytest.mark.parametrize("knobs, match", [
    ({"shape": "circle"}, "shape='circle'"),
    ({"occlusion": True, "shape": "L"}, "shape='L' is not valid with occlusion"),
    ({"polarity": "grey"}, "polarity='grey'"),
    ({"orientation": 45}, "orientation=45"),
    ({"size": (8.0, 20.0)}, r"size=\(8.0, 20.0\)"),
    ({"size": (20.0, 14.0)}, "size="),
    ({"size": (14.0, 31.0)}, "size="),  # does not fit on both sides of the edge in 64 px
    ({"occlusion": True, "size": (14.0, 20.0)}, "size="),
    ({"marker_margin": 4.0}, "marker_margin=4.0"),
    ({"marker_radius": 0.2}, "marker_radius=0.2"),
    ({"image_size": 16}, "image_size=16"),
    ({"occlusion": 1}, "occlusion=1"),
])
def test_bad_knobs_fail_with_a_message_naming_the_knob(knobs, match):
    with pytest.raises(ValueError, match=match):
        BorderOwnershipDifficulty(**knobs)


def test_size_accepts_a_list_and_large_figures_fit_at_128():
    d = BorderOwnershipDifficulty(size=[20.0, 60.0], image_size=128)
    assert d.size == (20.0, 60.0)
    for k in range(10):
        for s in _pair(k, d):
            rects = s.info["figures"][0]
            assert min(r[0] for r in rects) >= 2 and max(r[1] for r in rects) <= 126
