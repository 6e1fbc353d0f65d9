"""Border ownership: is the figure whose edge passes through the red dot on the left of the dot?

Follows the standard test of Zhou, Friedman & von der Heydt (2000, J Neurosci 20:6594): a
uniform figure on a uniform background, one of whose edges passes through a fixed location
(the "receptive field", here a red dot), in two conditions that make the local edge at the
dot IDENTICAL while the side that owns it differs -- figure colour A on background B with
the figure on the left of the edge, or figure colour B on background A with the figure on
the right -- and both contrast polarities.

Construction (everything is drawn BEFORE the condition is looked at, from one block of
`N_DRAWS` uniforms taken from the rng at once, so `make(rng_k, 0, d)` and `make(rng_k, 1, d)`
consume the same numbers, have the same geometry, greys and nuisance values, and differ
only where the condition enters):

1. Geometry in an edge frame (u, y): u >= 0 is depth into the owning figure measured from
   the marked edge, which lies on u = 0. Shapes are unions of disjoint axis-aligned
   rectangles: "square", "rectangle" (sides drawn independently), "L" (a bounding box minus
   a corner notch; the arm along the marked edge is >= `marker_margin` px thick; a notch on
   the marked side shortens the marked segment and is only used when the marker still
   fits). With `occlusion` two rectangles overlap: the front one owns the marked edge, the
   back one sticks out `a` >= `marker_margin` px beyond it on the other side and passes
   >= `MIN_HIDDEN` px under it; their vertical ranges overlap partially, each sticking out
   >= `MIN_HIDDEN` px beyond the other (the front covers one corner of the back: the
   classic display, with one T-junction on the marked edge).
2. The edge position x0 and the marker height y_m are drawn uniformly (on the
   `base.GEOMETRY_QUANTUM` grid, so all coverages are exact): x0 keeps the figure inside the
   image (>= `BORDER_PAD` px from its border) whichever side it lies on; y_m keeps at least
   `marker_margin` px of straight edge above and below the marker, so no corner, junction
   or notch lies within `marker_margin` px (Chebyshev) of it -- beyond the 7-px window.
3. Greys (integers 0..255): `left` is the grey on the left of the marked edge, `right` the
   grey on its right; with occlusion also a background grey (three levels, dark/mid/light,
   randomly permuted over left/right/background). `polarity` = "random" draws which side
   is lighter; "light"/"dark" fixes it (see below). With "random", (left, right) is
   exchangeable, so figure and background greys have one distribution for both answers.
4. Only now the condition: 1 (yes, the left side owns the border): the figure lies at
   x = x0 - u, coloured `left`, on a `right` background (with occlusion: front `left`, back
   `right`). 0 (no): the figure lies at x = x0 + u, coloured `right`, on a `left` background
   (front `right`, back `left`). Each class is rendered directly -- never by mirroring an
   image -- with exact area coverage (the coverage of a rectangle is the outer product of
   two 1-D overlap vectors) composited in float64 on the 0..255 scale: every number stays a
   dyadic rational that float64 holds exactly, so the edge column is B + (A - B) * f in
   both classes to the last bit and the whole neighbourhood of the marker is identical.
5. The red dot is drawn last with `render.draw_disc` at (x0, y_m), the same in both classes.

Polarity: in Zhou's test "polarity" is the contrast of the local edge. `polarity="light"`
makes the left side of the marked edge (the upper side for orientation 90) the lighter grey
in every sample, "dark" the darker one; the figure is then lighter than the background in
one class and darker in the other, exactly as in the standard test. Use them to build the
standard test, not for training: with a fixed edge polarity the global brightness carries
the answer (the figure is the smaller region). Fixing the figure's contrast instead would
put the answer into the local edge. The levels use "random".

Orientation: 0 = a vertical marked edge ("on the left of the dot?"); 90 = a horizontal one
("above the dot?"), made by transposing the rendering before the dot is drawn.

Maps:
- "ownership" (int8): for every pixel that a visible figure edge passes through (the pixel
  whose cell [c - 0.5, c + 0.5) contains the edge's coordinate, along the edge's extent),
  the direction of the owner along the edge normal: -1 = the owning surface lies on the
  left (vertical edges) or above (horizontal edges), +1 = on the right / below; 0 off
  edges. All figure edges are marked, not only the one at the dot; with occlusion the
  front surface owns its whole outline and the back surface the visible part of its own.
  At pixels where two edges meet, edges parallel to the marked edge win, then the nearer
  surface. So at the dot, -1 means answer "yes".
- "figure" (bool): pixel centres inside any figure (front or back).
- "instances" (int8): 0 background, 1 the figure that owns the marked edge (the front one),
  2 the visible part of the occluded one (occlusion only).

info["markers"] = [[x, y]] (the dot); info["nuisance"]: shape id, figure width (across the
marked edge) and height, area, marker position and sub-pixel offsets, marker distance to
the nearest corner (Chebyshev) and to the ends of the straight marked segment, the greys of
the two sides, edge polarity ("left_lighter"), contrast, L notch size, back-figure geometry
and background grey (occlusion). info also holds "shape", "owner_side", "figure_lighter",
"greys" and "figures" (image-frame rectangles [x0, x1, y0, y1] of the front figure and, with
occlusion, the back one).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import render
from .base import GEOMETRY_QUANTUM, Sample, Task, as_dict

CHOICES = ("no", "yes")
SHAPES = ("square", "rectangle", "L")
SHAPE_OPTIONS = SHAPES + ("random",)
OCCLUSION_SHAPES = ("square", "rectangle")
POLARITIES = ("random", "light", "dark")
ORIENTATIONS = (0, 90)

MARKER_COLOR = (0.95, 0.1, 0.1)  # red: differs from every grey
BORDER_PAD = 2.0  # px between every figure and the image border
# Two greys: the lighter from LIGHT, the darker from DARK (contrast >= 40 levels).
LIGHT, DARK = (150, 220), (35, 110)
# Three greys with occlusion: one from each range, randomly assigned to left/right/background.
GREY3 = ((30, 75), (105, 150), (180, 225))
NOTCH_FRACTION = (0.35, 0.6)  # L: notch side / bounding-box side
MIN_HIDDEN = 4.0  # occlusion: px of the back figure hidden under the front one, and of each one beyond the other in y
_Q = GEOMETRY_QUANTUM


@dataclass(frozen=True)
class BorderOwnershipDifficulty:
    """Knobs of the border-ownership task."""

    shape: str = "square"  # "square", "rectangle", "L" or "random" (with occlusion: square/rectangle/random)
    size: tuple[float, float] = (14.0, 26.0)  # figure side range in px (each side of a rectangle/L box)
    polarity: str = "random"  # edge polarity at the dot: "random", "light" or "dark" (left/upper side lighter)
    occlusion: bool = False  # two overlapping figures; the dot is on the front one's edge over the back one
    orientation: int = 0  # 0: vertical marked edge (left/right); 90: horizontal (above/below)
    marker_margin: float = 6.0  # px of straight edge above and below the dot (no corner or junction)
    marker_radius: float = 1.5  # px
    image_size: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.size, list):  # accept lists (from JSON / Hydra)
            object.__setattr__(self, "size", tuple(self.size))
        if not (isinstance(self.image_size, int) and 32 <= self.image_size <= 1024):
            raise ValueError(f"border_ownership: image_size={self.image_size!r} is out of range; valid: 32..1024")
        if self.shape not in SHAPE_OPTIONS:
            raise ValueError(f"border_ownership: shape={self.shape!r} is not valid; valid: {', '.join(SHAPE_OPTIONS)}")
        if self.polarity not in POLARITIES:
            raise ValueError(f"border_ownership: polarity={self.polarity!r} is not valid; "
                             f"valid: {', '.join(POLARITIES)}")
        if not isinstance(self.occlusion, bool):
            raise ValueError(f"border_ownership: occlusion={self.occlusion!r} is not valid; valid: True, False")
        if self.occlusion and self.shape not in OCCLUSION_SHAPES + ("random",):
            raise ValueError(f"border_ownership: shape={self.shape!r} is not valid with occlusion=True; "
                             f"valid: {', '.join(OCCLUSION_SHAPES)}, random")
        if self.orientation not in ORIENTATIONS or isinstance(self.orientation, bool):
            raise ValueError(f"border_ownership: orientation={self.orientation!r} is not valid; valid: 0, 90")
        if not 6.0 <= self.marker_margin <= 16.0:
            raise ValueError(f"border_ownership: marker_margin={self.marker_margin!r} is out of range; valid: 6..16")
        if not 1.0 <= self.marker_radius <= 3.0:
            raise ValueError(f"border_ownership: marker_radius={self.marker_radius!r} is out of range; valid: 1..3")
        s = self.size
        lo_min = 2 * self.marker_margin + (MIN_HIDDEN + 1 if self.occlusion else 2)
        hi_max = (self.image_size - 2 * BORDER_PAD) / 2
        if not (isinstance(s, tuple) and len(s) == 2 and lo_min <= s[0] <= s[1] <= hi_max):
            why = f"{MIN_HIDDEN + 1:g} with occlusion" if self.occlusion else "2"
            raise ValueError(f"border_ownership: size={s!r} is out of range; valid: (lo, hi) with "
                             f"{lo_min:g} <= lo <= hi <= {hi_max:g} (2 * marker_margin + {why}; "
                             f"half the image minus the border)")


LEVELS = {
    "easy": BorderOwnershipDifficulty(),
    "medium": BorderOwnershipDifficulty(shape="random", size=(14.0, 28.0)),
    "hard": BorderOwnershipDifficulty(shape="random", size=(18.0, 28.0), occlusion=True),
}


# ----------------------------------------------------------------------------- geometry

class _Draws:
    """A fixed block of uniforms drawn from the sample's rng at once, consumed in order.

    Every sample takes the same `N_DRAWS` numbers whatever its condition and knobs, so two
    copies of one rng give the same geometry for both conditions by construction.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self._u = rng.random(N_DRAWS).tolist()
        self._i = 0

    def _next(self) -> float:
        r = self._u[self._i]
        self._i += 1
        return r

    def index(self, n: int) -> int:
        """Uniform integer in 0..n-1."""
        return min(int(self._next() * n), n - 1)

    def integer(self, lo: int, hi: int) -> int:
        """Uniform integer in lo..hi (inclusive)."""
        return lo + self.index(hi - lo + 1)

    def grid(self, lo: float, hi: float) -> float:
        """Uniform on the GEOMETRY_QUANTUM grid within [lo, hi]: an exact dyadic value, never outside."""
        k_lo, k_hi = math.ceil(lo / _Q - 1e-9), math.floor(hi / _Q + 1e-9)
        if k_hi < k_lo:  # prevented by the knob checks
            raise AssertionError(f"border_ownership: empty range [{lo}, {hi}]")
        return (k_lo + self.index(k_hi - k_lo + 1)) * _Q  # already on the quantize() grid


N_DRAWS = 16  # >= the most any configuration consumes (occlusion: 1 + 7 + 3 + 4)
_PERMUTATIONS = tuple(itertools.permutations(range(3)))


def _single_figure(draws: _Draws, d: BorderOwnershipDifficulty, shape: str):
    """Rectangles [(u0, u1, y0, y1)] of the figure (y relative to its top), the marked segment on u = 0."""
    lo, hi = d.size
    m = d.marker_margin
    w = draws.grid(lo, hi)
    h = w if shape == "square" else draws.grid(lo, hi)
    notch = (0.0, 0.0)
    if shape != "L":
        return [(0.0, w, 0.0, h)], (0.0, h), w, h, notch
    nw = draws.grid(NOTCH_FRACTION[0] * w, min(NOTCH_FRACTION[1] * w, w - m))  # arm at the marker >= m thick
    nh = draws.grid(NOTCH_FRACTION[0] * h, NOTCH_FRACTION[1] * h)
    corner = draws.index(4)  # bit 0: top/bottom; bit 1: on the marked side (u = 0) or the far side
    top, near = corner & 1 == 0, corner & 2 == 2
    if near and h - nh < 2 * m + 1:
        near = False  # the marker would not fit on the shortened marked segment
    notch = (nw, nh)
    if near:  # notch [0, nw] x (top: [0, nh], bottom: [h - nh, h])
        if top:
            rects, seg = [(0.0, nw, nh, h), (nw, w, 0.0, h)], (nh, h)
        else:
            rects, seg = [(0.0, nw, 0.0, h - nh), (nw, w, 0.0, h)], (0.0, h - nh)
    else:  # notch [w - nw, w] x ...
        if top:
            rects = [(0.0, w - nw, 0.0, h), (w - nw, w, nh, h)]
        else:
            rects = [(0.0, w - nw, 0.0, h), (w - nw, w, 0.0, h - nh)]
        seg = (0.0, h)
    return rects, seg, w, h, notch


def _corner_distance(rects, y: float) -> float:
    """Chebyshev distance from the marker (u = 0, y) to the nearest rectangle corner."""
    return min(max(abs(u), abs(y - v)) for r in rects for u in r[:2] for v in r[2:])


# ----------------------------------------------------------------------------- rendering

@lru_cache(maxsize=8)
def _centres(n: int) -> np.ndarray:
    c = np.arange(n, dtype=np.float64)
    c.setflags(write=False)
    return c


def _overlap(c: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Length of [c - 0.5, c + 0.5] inside [lo, hi] per pixel: exact for dyadic inputs."""
    return np.maximum(np.minimum(c + 0.5, hi) - np.maximum(c - 0.5, lo), 0.0)  # <= 1 by construction


def _coverage(rects, c: np.ndarray) -> np.ndarray:
    """Exact area coverage [H, W] of a union of disjoint image-frame rectangles (x0, x1, y0, y1)."""
    x0, x1, y0, y1 = rects[0]
    cov = _overlap(c, y0, y1)[:, None] * _overlap(c, x0, x1)[None, :]
    for x0, x1, y0, y1 in rects[1:]:
        cov += _overlap(c, y0, y1)[:, None] * _overlap(c, x0, x1)[None, :]  # disjoint: exact sums of exact values
    return cov


def _inside(rects, c: np.ndarray) -> np.ndarray:
    """Pixel centres inside a union of rectangles (half-open [lo, hi))."""
    m = np.zeros((c.size, c.size), dtype=bool)
    for x0, x1, y0, y1 in rects:
        m[math.ceil(y0):math.ceil(y1), math.ceil(x0):math.ceil(x1)] = True  # centres k with lo <= k < hi
    return m


def _subtract(lo: float, hi: float, cuts) -> list[tuple[float, float]]:
    """[lo, hi] minus the closed intervals in `cuts`."""
    parts = [(lo, hi)]
    for a, b in cuts:
        nxt = []
        for p, q in parts:
            if b <= p or a >= q:
                nxt.append((p, q))
                continue
            if a > p:
                nxt.append((p, a))
            if b < q:
                nxt.append((b, q))
        parts = nxt
    return parts


def _outline(rects, front=()):
    """Visible outline of a union of disjoint rectangles behind the rectangles `front`.

    Returns segments (vertical, coordinate, lo, hi, sign): sign is the direction of the
    interior along +x (vertical segments) or +y (horizontal ones).
    """
    segs = []
    for vertical in (True, False):
        a, b, p, q = (0, 1, 2, 3) if vertical else (2, 3, 0, 1)
        sides = [(r[a], r[p], r[q], +1) for r in rects] + [(r[b], r[p], r[q], -1) for r in rects]
        for e, lo, hi, sign in sides:
            # interior side segments: another rectangle of the union on the other side
            cuts = [(s[1], s[2]) for s in sides if s[0] == e and s[3] == -sign]
            # hidden behind a front rectangle (coincident edges count as hidden: the front owns them)
            cuts += [(f[p], f[q]) for f in front if f[a] <= e <= f[b]]
            segs += [(vertical, e, s, t, sign) for s, t in _subtract(lo, hi, cuts) if t > s]
    return segs


def _raster(own: np.ndarray, segs, vertical: bool) -> None:
    """Write the signs of the segments of one orientation into the ownership map."""
    n = own.shape[0]
    for v, e, lo, hi, sign in segs:
        if v != vertical:
            continue
        k = math.floor(e + 0.5)  # the pixel whose cell [k - 0.5, k + 0.5) contains the edge
        i0, i1 = max(math.floor(lo - 0.5) + 1, 0), min(math.ceil(hi + 0.5) - 1, n - 1)
        if not (0 <= k < n) or i1 < i0:
            continue
        if vertical:
            own[i0:i1 + 1, k] = sign
        else:
            own[k, i0:i1 + 1] = sign


def _place(rects, x0: float, y_top: float, left: bool):
    """Edge-frame rectangles (u0, u1, y0, y1) to image-frame (x0, x1, y0, y1)."""
    if left:
        return [(x0 - u1, x0 - u0, y_top + a, y_top + b) for u0, u1, a, b in rects]
    return [(x0 + u0, x0 + u1, y_top + a, y_top + b) for u0, u1, a, b in rects]


# ----------------------------------------------------------------------------- the task

@lru_cache(maxsize=64)
def _knobs(d: BorderOwnershipDifficulty) -> dict:
    return as_dict(d)


def make(rng: np.random.Generator, condition: int, d: BorderOwnershipDifficulty) -> Sample:
    """One border-ownership sample: condition 1 = the figure (front surface) lies on the left of the dot."""
    if condition not in (0, 1):
        raise ValueError(f"border_ownership: condition={condition!r} is not valid; valid: 0, 1")
    n = d.image_size
    m = d.marker_margin
    pad = BORDER_PAD

    # ---- 1. geometry in the edge frame (class-independent draws only) ----
    draws = _Draws(rng)
    options = OCCLUSION_SHAPES if d.occlusion else SHAPES
    shape = options[draws.index(len(options))] if d.shape == "random" else d.shape
    if not d.occlusion:
        rects, seg, w, h, (nw, nh) = _single_figure(draws, d, shape)
        back, ext, height = [], w, h
        extra = {"notch_width": nw, "notch_height": nh}
    else:
        lo, hi = d.size
        w = draws.grid(lo, hi)
        h = w if shape == "square" else draws.grid(lo, hi)
        bw = draws.grid(lo, hi)
        bh = bw if shape == "square" else draws.grid(lo, hi)
        a = draws.grid(max(m, bw - w + MIN_HIDDEN), bw - MIN_HIDDEN)  # back's overhang beyond the marked edge
        shared = draws.grid(2 * m + 1, min(h, bh) - MIN_HIDDEN)  # vertical overlap of front and back
        back_above = draws.index(2) == 1
        if back_above:  # back [yb, yb + bh] with yb < 0 (front at [0, h]), yb + bh = shared
            yb = shared - bh
            seg = (0.0, shared)
        else:
            yb = h - shared
            seg = (h - shared, h)
        top = min(0.0, yb)
        rects = [(0.0, w, -top, h - top)]
        back = [(-a, bw - a, yb - top, yb + bh - top)]
        seg = (seg[0] - top, seg[1] - top)
        ext, height = max(w, a), max(h, yb + bh) - top
        extra = {"back_width": bw, "back_height": bh, "back_overhang": a, "back_hidden": bw - a,
                 "overlap_height": shared, "back_above": int(back_above)}
    x0 = draws.grid(pad + ext, n - pad - ext)
    y_top = draws.grid(pad, n - pad - height)
    y_m = draws.grid(seg[0] + m, seg[1] - m)  # relative to y_top
    to_corner = _corner_distance(rects + back, y_m)

    # greys (integers on the 0..255 scale)
    if not d.occlusion:
        light, dark = draws.integer(*LIGHT), draws.integer(*DARK)
        left_light = draws.index(2) == 1 if d.polarity == "random" else d.polarity == "light"
        g_left, g_right = (light, dark) if left_light else (dark, light)
        g_bg = None
    else:
        levels = [draws.integer(lo_, hi_) for lo_, hi_ in GREY3]
        g_left, g_right, g_bg = (levels[i] for i in _PERMUTATIONS[draws.index(6)])
        if d.polarity != "random" and (g_left > g_right) != (d.polarity == "light"):
            g_left, g_right = g_right, g_left

    # ---- 2. the condition: which side the figure lies on, rendered directly ----
    left = condition == 1
    own_grey, other_grey = (g_left, g_right) if left else (g_right, g_left)
    front = _place(rects, x0, y_top, left)
    behind = _place(back, x0, y_top, left)
    c = _centres(n)
    if not d.occlusion:
        img = other_grey + (own_grey - other_grey) * _coverage(front, c)
    else:
        img = g_bg + (other_grey - g_bg) * _coverage(behind, c)
        img += (own_grey - img) * _coverage(front, c)

    instances = np.zeros((n, n), dtype=np.int8)
    if behind:
        instances[_inside(behind, c)] = 2
    instances[_inside(front, c)] = 1
    own = np.zeros((n, n), dtype=np.int8)
    segs = _outline(behind, front) + _outline(front) if behind else _outline(front)
    _raster(own, segs, vertical=False)
    _raster(own, segs, vertical=True)  # parallel to the marked edge: wins at corners; the front (last) wins

    mx, my = x0, y_top + y_m
    rgb = np.repeat((img / 255.0)[:, :, None], 3, axis=2)
    if d.orientation == 90:
        rgb = rgb.transpose(1, 0, 2).copy()
        instances, own = instances.T.copy(), own.T.copy()
        mx, my = my, mx
    render.draw_disc(rgb, mx, my, d.marker_radius, MARKER_COLOR)
    image = render.to_uint8(rgb)

    where = "on the left of" if d.orientation == 0 else "above"
    what = "the figure in front" if d.occlusion else "the figure"
    question = f"Is {what} {where} the dot?"
    ax, ay = (0, 1) if d.orientation == 0 else (1, 0)  # image axes of the edge frame's x, y
    figures = [[[r[2 * ax], r[2 * ax + 1], r[2 * ay], r[2 * ay + 1]] for r in rs] for rs in (front, behind) if rs]
    nuisance = {
        "shape": SHAPES.index(shape),
        "width": w,  # depth of the owning figure across the marked edge
        "height": h,  # its extent along the marked edge
        "area": float(sum((r[1] - r[0]) * (r[3] - r[2]) for r in rects)),
        "marker_x": float(mx), "marker_y": float(my),
        "marker_x_frac": float(mx - math.floor(mx)), "marker_y_frac": float(my - math.floor(my)),
        "marker_to_corner": float(to_corner),
        "marker_to_segment_end": float(min(y_m - seg[0], seg[1] - y_m)),
        "left_lighter": int(g_left > g_right),
        "grey_left": g_left, "grey_right": g_right,
        "contrast": abs(g_left - g_right),
        **{k: float(v) for k, v in extra.items()},
    }
    if d.occlusion:
        nuisance["grey_background"] = g_bg
    info = {
        "markers": [[float(mx), float(my)]],
        "nuisance": nuisance,
        "shape": shape,
        "owner_side": ("left" if left else "right") if d.orientation == 0 else ("above" if left else "below"),
        "figure_lighter": bool(own_grey > (g_bg if d.occlusion else other_grey)),
        "greys": {"figure": own_grey, "background": g_bg if d.occlusion else other_grey,
                  **({"back": other_grey} if d.occlusion else {})},
        "figures": figures,  # image-frame rectangles [x0, x1, y0, y1] of the front figure (and the back one)
    }
    knobs = {k: (list(v) if isinstance(v, list) else v) for k, v in _knobs(d).items()}  # a fresh copy
    return Sample(image=image, question=question, answer=CHOICES[condition], choices=CHOICES,
                  task="border_ownership", difficulty=knobs,
                  maps={"ownership": own, "figure": instances > 0, "instances": instances}, info=info)


TASK = Task(name="border_ownership", difficulty=BorderOwnershipDifficulty, levels=LEVELS, make=make,
            n_conditions=lambda d: 2, binary=True)
