"""The shortcut baselines must be able to find planted cues; otherwise 'at chance' means nothing."""

import numpy as np
import pytest

from recurvlm.data import shortcuts
from recurvlm.data.shortcuts import Split
from recurvlm.data.stimuli import render

PLUS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
CORNER = np.array([[1, 1, 1], [1, 0, 0], [1, 0, 0]], bool)  # same ink (5 pixels) as PLUS


def _glyph_split(n: int, seed: int, size: int = 32) -> Split:
    """8 glyphs at random places; positives hold one PLUS among CORNERs, negatives none.

    Ink is identical in both classes, so only a local detector with pooling can tell them apart.
    """
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 3), np.uint8)
    labels = np.arange(n) % 2
    for i in range(n):
        cells = rng.choice(64, size=8, replace=False)
        for k, c in enumerate(cells):
            y, x = divmod(int(c), 8)
            g = PLUS if (labels[i] and k == 0) else np.rot90(CORNER, rng.integers(4))
            images[i, 4 * y : 4 * y + 3, 4 * x : 4 * x + 3] = g[..., None] * 255
    return Split(images, labels, np.zeros((n, 0, 2)), 2)


def test_local_cnn_finds_a_planted_local_cue():
    train, test = _glyph_split(1200, 0), _glyph_split(400, 1)
    _, acc, _ = shortcuts.local_cnn(train, test, epochs=6, width=16)
    assert acc > 0.9


def test_pixel_stats_blind_to_the_planted_local_cue_but_not_to_ink():
    train, test = _glyph_split(800, 0), _glyph_split(400, 1)
    _, acc, _ = shortcuts.pixel_stats(train, test)
    assert abs(acc - 0.5) < 0.07
    # Now add ink to positives: one extra pixel is enough for global statistics.
    for s in (train, test):
        s.images[s.labels == 1, 0, 0] = 255
    _, acc, _ = shortcuts.pixel_stats(train, test)
    assert acc > 0.95


def _marker_split(n: int, seed: int, leak: float) -> Split:
    """A disc marker at a random sub-pixel place; positives shift its x by `leak` pixels
    relative to the recorded marker position (a rendering leak)."""
    rng = np.random.default_rng(seed)
    images, markers = np.zeros((n, 24, 24, 3), np.uint8), np.zeros((n, 1, 2))
    labels = np.arange(n) % 2
    for i in range(n):
        x, y = rng.uniform(8, 16, size=2)
        img = np.zeros((24, 24, 3), np.float32)
        render.draw_disc(img, x + leak * labels[i], y, 1.5, (1.0, 0.0, 0.0))
        images[i], markers[i, 0] = render.to_uint8(img), (x, y)
    return Split(images, labels, markers, 2)


@pytest.mark.parametrize("leak, expect_leak", [(0.0, False), (0.35, True)])
def test_marker_window_detects_a_subpixel_rendering_leak(leak, expect_leak):
    _, acc, _ = shortcuts.marker_window(_marker_split(1000, 0, leak), _marker_split(600, 1, leak))
    assert (acc > 0.9) if expect_leak else (abs(acc - 0.5) < 0.07)


@pytest.mark.parametrize("fx, fy", [(0.0, 0.0), (0.3, 0.7), (0.5, 0.5), (0.9, 0.1)])
def test_marker_windows_are_centred_without_rounding(fx, fy):
    """The window's intensity centroid sits at its centre whatever the marker's sub-pixel
    offset (rounding the centre to a pixel would move it by up to half a pixel)."""
    img = np.zeros((20, 20, 3), np.float32)
    x, y = 9 + fx, 10 + fy
    render.draw_disc(img, x, y, 2.0, (1.0, 1.0, 1.0))
    win = shortcuts.marker_windows(render.to_uint8(img)[None], np.array([[[x, y]]]), size=7).reshape(7, 7, 3)[..., 0]
    grid = np.arange(7) - 3.0
    cy, cx = (win.sum(1) * grid).sum() / win.sum(), (win.sum(0) * grid).sum() / win.sum()
    assert abs(cx) < 0.05 and abs(cy) < 0.05


def test_unknown_baseline_is_named():
    with pytest.raises(KeyError, match="valid baselines: pixel_stats, local_cnn, marker_window"):
        shortcuts.run_baselines("maze", baselines=("pixel",))
