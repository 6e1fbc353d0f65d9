"""Small antialiased rasterisation primitives shared by the stimulus tasks (pure numpy).

Images are float32 [H, W, 3] in [0, 1] while drawing and uint8 at the end. Pixel centres
sit at integer coordinates; (x, y) is (column, row). Only +, -, *, /, sqrt, min and max
touch pixels (IEEE-exact everywhere), so equal geometry gives equal bytes on any machine.
"""

from __future__ import annotations

import numpy as np


def disc_alpha(h: int, w: int, cx: float, cy: float, r: float) -> tuple[slice, slice, np.ndarray]:
    """Coverage of a disc of radius `r` centred at (cx, cy), antialiased over one pixel.

    Returns the (rows, cols) slices of its bounding box clipped to the image and the
    alpha patch [h', w'] in [0, 1] for that box.
    """
    y0, y1 = max(int(np.floor(cy - r - 1)), 0), min(int(np.ceil(cy + r + 1)) + 1, h)
    x0, x1 = max(int(np.floor(cx - r - 1)), 0), min(int(np.ceil(cx + r + 1)) + 1, w)
    ys = np.arange(y0, y1, dtype=np.float64)[:, None] - cy
    xs = np.arange(x0, x1, dtype=np.float64)[None, :] - cx
    alpha = np.clip(r + 0.5 - np.sqrt(ys * ys + xs * xs), 0.0, 1.0)
    return slice(y0, y1), slice(x0, x1), alpha.astype(np.float32)


def paint(img: np.ndarray, rows: slice, cols: slice, alpha: np.ndarray, color) -> None:
    """Composite `color` over `img[rows, cols]` with coverage `alpha` (in place)."""
    a = alpha[..., None]
    img[rows, cols] = img[rows, cols] * (1.0 - a) + np.asarray(color, dtype=np.float32) * a


def draw_disc(img: np.ndarray, cx: float, cy: float, r: float, color) -> np.ndarray:
    """Draw an antialiased disc in place; returns its full-image alpha mask [H, W]."""
    h, w = img.shape[:2]
    rows, cols, alpha = disc_alpha(h, w, cx, cy, r)
    paint(img, rows, cols, alpha, color)
    full = np.zeros((h, w), dtype=np.float32)
    full[rows, cols] = alpha
    return full


def to_uint8(img: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as uint8 (round half to even, deterministic)."""
    return np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
