"""Curve tracing: are the two dots on the same curve? A Pathfinder-like long-range grouping task.

Follows the Pathfinder challenge of Linsley et al. (2018), "Learning long-range spatial
dependencies with horizontal gated recurrent units" (NeurIPS). Every curve is a random walk
of `contour_length` straight segments of `segment_length`, each turning from the last by a
uniform angle in [-max_turn, max_turn] (headings on a grid of 2 pi / 16384); strokes are
white-ish and antialiased on black, and the two dots (red discs of one radius) are drawn on
top, exactly on curve ends (sub-pixel).
Lengths are in pixels of a 64-pixel image and scale with `image_size`.

The picture does not depend on the answer; the answer only picks which end gets the second dot:

1. Dot A is the start of main curve S1, which leaves A with heading h; B1 is S1's far end.
2. A phantom walk P (never drawn), independent of S1 but of the same law, also leaves A with
   heading h. Its far end E2 is the start of main curve S2, which leaves E2 the way P arrives
   there (heading reversed) and then turns on its own. A second phantom Q leaves B1 the way
   S1 arrives there.
3. "yes" puts the second dot on B1, "no" on E2. (S1, B1) and (P, E2) are exchangeable and
   every rule below is applied alike to the pairs (S1, S2) and (P, Q), so the second dot's
   distance from A, its direction seen from A's stroke and the stroke direction at the dot
   have one distribution for both answers ("does the marked curve point at the other dot"
   tells nothing), and in both answers S2 heads back past A: the curves must be followed.
4. `distractors` more walks of the same length are placed one by one at random.

Rules, checked on the unmarked picture with all three dot places A, B1 and E2: no other curve
comes within a clearance of them (a dot never touches a second curve, nor its own curve
twice); no curve ends on another stroke; strokes that come close cross at 30 degrees or more
(no parallel runs); curves keep clear of themselves; the dots are two clearances apart at
least; everything stays inside the image. Curves do cross, as in Pathfinder.

Maps: "target_curve" (bool) holds the pixels of curve 1, the curve through the first dot,
where its own stroke coverage is at least MEMBER_ALPHA; "curves" (int8) the id of the most
covering curve at such pixels: 0 background, 1 = S1, 2 = S2, 3... the distractors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .base import GEOMETRY_QUANTUM, Sample, Task, as_dict
from .render import to_uint8

QUESTION = "Are the two dots on the same curve?"
CHOICES = ("no", "yes")

BACKGROUND = (0.0, 0.0, 0.0)
STROKE = (0.9, 0.9, 0.9)
MARKER = (1.0, 0.25, 0.25)

MARKER_RADIUS = 1.5  # in stroke widths
MARKER_GAP = 2.0  # px at 64: free space between a marker disc and the stroke of any other curve
END_GAP = 1.5  # px at 64: free space between a curve end and any other curve
CLOSE = 1.0  # px at 64 (plus a stroke width): strokes this close must cross at an angle
MIN_CROSS_DEG = 30.0  # smallest angle at which two strokes may cross or come close
SELF_ARC = 2.0  # parts of one curve further apart along it than SELF_ARC clearances keep a clearance
ALPHA_LEVELS = 4095  # stroke coverage is quantised to this many levels before compositing
MEMBER_ALPHA = 0.25  # a pixel belongs to a curve (maps) where its coverage is at least this
MAIN_BATCH = 16  # main-curve configurations drawn at once
PAIR_CHUNK = 2  # of which this many at a time (of those passing the rules on the ends) go through the crossing rule
MAX_TRIES = 200  # main-curve batches before giving up (a knob combination that does not fit)
MAX_LAYOUTS = 50  # main-curve layouts tried for the distractors before giving up
ROUNDS = 4  # rounds of distractor candidates per main-curve layout before giving up on it
HEADINGS = 16384  # headings are whole multiples of 2 pi / HEADINGS (a power of 2): steps come from a table

_SIN_CROSS2 = math.sin(math.radians(MIN_CROSS_DEG)) ** 2
_BG = np.array(BACKGROUND, np.float32)
_FG_MINUS_BG = np.array(STROKE, np.float32) - _BG


@dataclass(frozen=True)
class CurveTracingDifficulty:
    """Knobs of the curve-tracing stimulus; lengths in pixels of a 64-pixel image."""

    contour_length: int = 9  # segments per curve (Pathfinder: 6, 9, 14)
    segment_length: float = 4.0  # px at image_size 64
    max_turn: float = 30.0  # degrees between consecutive segments
    distractors: int = 6  # curves besides the two main ones
    stroke_width: float = 1.5  # px at image_size 64
    image_size: int = 64

    def __post_init__(self) -> None:
        if not (isinstance(self.contour_length, int) and 3 <= self.contour_length <= 20):
            raise ValueError(f"curve_tracing: contour_length={self.contour_length!r} is out of range; valid: 3..20")
        if not (2.0 <= self.segment_length <= 8.0):
            raise ValueError(f"curve_tracing: segment_length={self.segment_length!r} is out of range; valid: 2.0..8.0")
        if not (0.0 <= self.max_turn <= 60.0):
            raise ValueError(f"curve_tracing: max_turn={self.max_turn!r} is out of range; valid: 0.0..60.0")
        if not (isinstance(self.distractors, int) and 0 <= self.distractors <= 30):
            raise ValueError(f"curve_tracing: distractors={self.distractors!r} is out of range; valid: 0..30")
        if not (1.0 <= self.stroke_width <= 3.0):
            raise ValueError(f"curve_tracing: stroke_width={self.stroke_width!r} is out of range; valid: 1.0..3.0")
        if not (isinstance(self.image_size, int) and 32 <= self.image_size <= 128):
            raise ValueError(f"curve_tracing: image_size={self.image_size!r} is out of range; valid: 32..128")
        if self.contour_length * self.segment_length > 64.0:
            raise ValueError(f"curve_tracing: contour_length * segment_length = "
                             f"{self.contour_length * self.segment_length:g} px is out of range; valid: <= 64 px")


LEVELS: dict[str, CurveTracingDifficulty] = {
    "easy": CurveTracingDifficulty(contour_length=6, distractors=6),
    "medium": CurveTracingDifficulty(contour_length=9, distractors=4),
    "hard": CurveTracingDifficulty(contour_length=14, distractors=3),
}


# --- geometry ------------------------------------------------------------------------------
#
# Points are complex numbers x + iy and curves complex polylines v [..., n + 1]. Headings are
# whole multiples of 2 pi / HEADINGS; steps come out of a table of exp(ih), quantised, so
# vertices are exact dyadic sums (in any order of summation, also in float32). Complex numbers
# are only added and subtracted, or scaled by reals (exact per component); every product of
# two coordinates is taken on real and imaginary parts, or is exact (the cross products of
# `_target_crossings`), so all results are machine-independent.


@dataclass(frozen=True, eq=False)
class _Geo:
    """Pixel-unit constants and index tables of one difficulty."""

    size: int
    n: int  # segments per curve
    seg: float  # segment length
    turn: int  # max turn (whole heading units of 2 pi / HEADINGS, rounded down)
    steps: np.ndarray  # [HEADINGS] complex64 step of each heading: seg * exp(ih), quantised (exact in float32)
    running: np.ndarray  # [n + 1, n] float32: the running sums of n steps from 0 as a matrix (lower triangle of ones)
    r_stroke: float  # half stroke width
    r_marker: float
    c_mark: float  # marker centre to any other curve (and to its own curve beyond the end)
    c_end: float  # curve end to any other curve
    close: float  # strokes closer than this must meet at an angle
    d_min: float  # smallest marker distance
    margin: float  # every vertex stays this far inside the image
    at_pair: tuple  # `_along` [P'] of samples along a curve (spacing <= 2 px) for the exact main-curve rules
    seg_of_pair_pt: np.ndarray  # [P'] segment of each of those samples
    end_rule: np.ndarray  # [4, 2, 1] squared clearances of the ends of S1, P, Q, S2 from the partner walk
    at_self: tuple  # `_along` [P''] of samples along a curve for the self rule (spacing < 2 c_end)
    self_d2: np.ndarray  # [n, P''] squared clearance of segment and sample: c_end where far apart along the
                         # curve, c_mark (or c_end if more) from the ends to segments far from them, else 0
    free_turn: float  # heading range (heading units) under which the self rules hold by themselves
    pad: int  # padding of the occupancy grid
    grid: int  # side of the occupancy grid
    look_at: tuple  # `_along` [L] of the grid lookups of a curve: its P dense points, then its ends 5 times each
    look_code: np.ndarray  # [L] their direction-code column: the segment, n at the ends (they clash with any stroke)
    look_off: np.ndarray  # [L] flat grid offset added to its pixel: the padding, plus the 4-neighbours at the ends
    grid_xy: np.ndarray  # [2] flat grid index of a pixel (x, y): x + grid * y
    coarse_code: np.ndarray  # [n + 1] direction-code row of the vertex lookups (`_candidates`): n at the ends
    mark_pt: np.ndarray  # [M] looked-up point of each grid entry a placed distractor sets ...
    mark_off: np.ndarray  # [M] ... its flat offset: a `close` disc around every dense point, no-go discs at the ends
    mark_seg: np.ndarray  # [M] ... and its segment (n at the no-go discs: they set FORBIDDEN)
    main_pt: np.ndarray  # [M'] the same for S1 and S2 (points into both rows of their lookups, flattened) ...
    main_off: np.ndarray  # [M'] ... with no-go discs around A, B1, E2 and S2's free end
    main_seg: np.ndarray  # [M'] ... (segments into both columns of their codes [n + 1, 2], flattened)
    dot_span: np.ndarray  # [k] offsets 0..k-1 of the box `_picture` draws a dot in: k is the most `render.disc_alpha` spans
    win: int  # render window side per segment
    win_x: np.ndarray  # [W * W] pixel x offsets of a render window
    win_y: np.ndarray  # [W * W] pixel y offsets of a render window
    win_flat: np.ndarray  # [W * W] flat canvas offsets of a render window
    difficulty: dict  # as_dict of the difficulty


_GEO_CACHE: dict[CurveTracingDifficulty, _Geo] = {}


def _disc_offsets(radius: float, grid: int) -> np.ndarray:
    k = int(math.ceil(radius))
    dy, dx = np.mgrid[-k : k + 1, -k : k + 1]
    keep = dx * dx + dy * dy <= radius * radius
    return (dy[keep] * grid + dx[keep]).astype(np.int64)


def _samples(n: int, sub: int) -> np.ndarray:
    return np.minimum(np.arange(n * sub + 1) // sub, n - 1)


def _along(n: int, sub: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples along a curve of n segments for `_dense`: `sub` per segment at fractions k / sub,
    then the last vertex as the end (fraction 1) of the last segment -> the index of the
    segment's first and second vertex and the fraction, [n * sub + 1] each."""
    seg = _samples(n, sub)
    return seg, seg + 1, np.append(np.tile(np.arange(sub) / sub, n), 1.0)


def _geometry(d: CurveTracingDifficulty) -> _Geo:
    g = _GEO_CACHE.get(d)
    if g is not None:
        return g
    s = d.image_size / 64.0
    n, seg = d.contour_length, d.segment_length * s
    r_stroke, r_marker = 0.5 * d.stroke_width * s, MARKER_RADIUS * d.stroke_width * s
    c_mark = r_marker + r_stroke + MARKER_GAP * s
    c_end = 2 * r_stroke + END_GAP * s
    close = 2 * r_stroke + CLOSE * s
    sub, sub_pair = int(math.ceil(seg)), int(math.ceil(seg / 2))
    # Self rule: the distance of two segments that do not cross is reached at an end point of
    # one of them, and crossing ones have a sample within half the spacing of the crossing, so
    # samples spaced below 2 c_end decide "nearer than c_end" exactly (vertices, as a rule).
    sub_self = int(math.ceil(seg / (2 * c_end) + 1e-9))
    arc = np.arange(n * sub_self + 1) / sub_self  # arc position of each sample, in segments
    j = np.arange(n)
    gap = seg * np.maximum(np.maximum(j[None, :] - arc[:, None], arc[:, None] - (j[None, :] + 1)), 0.0)
    self_d2 = np.where(gap >= SELF_ARC * c_end, c_end ** 2, 0.0).T  # [n, P'']
    self_d2[seg * j >= SELF_ARC * c_mark, 0] = max(c_mark, c_end) ** 2  # the start, from segments far from it
    self_d2[seg * (n - 1 - j) >= SELF_ARC * c_mark, -1] = max(c_mark, c_end) ** 2  # the end
    end_rule = np.array([[c_mark, c_mark], [c_mark, c_mark], [c_mark, c_end], [c_mark, c_end]])[:, :, None] ** 2
    pad = int(math.ceil(c_mark)) + 4
    grid = d.image_size + 2 * pad
    win = int(math.floor(seg + 2 * r_stroke + 1.0 + 0.01)) + 1  # covers a segment's box grown by r_stroke + 0.5
    canvas = d.image_size + 2 * win
    wy, wx = np.divmod(np.arange(win * win), win)
    slack = 0.5 + 2 * math.sqrt(0.5)  # dense points lie <= 0.5 px off the curve; points and centres get rounded
    off_close, off_mark = _disc_offsets(close, grid), _disc_offsets(c_mark + slack, grid)
    k_close = int(math.ceil(close))
    off_free_end = off_end = _disc_offsets(c_end + slack, grid)
    off_cross = np.array([0, 1, -1, grid, -grid])
    # Grid lookups of a curve: its P dense points (spacing <= 1 px), then the two ends and their 4-neighbours.
    seg_of_pt, _, frac = _along(n, sub)
    P = len(seg_of_pt)
    ends = np.repeat([0, P - 1], len(off_cross))
    look_pt = np.concatenate([np.arange(P), ends])
    look_code = np.concatenate([seg_of_pt, np.full(len(ends), n)])
    look_off = np.concatenate([np.zeros(P, np.int64), off_cross, off_cross]) + pad * (grid + 1)
    L = len(look_pt)
    # Grid entries of a placed curve: `close` discs with the direction bit of the point's segment,
    # no-go discs (FORBIDDEN, "segment" n) around the two ends.
    def entries(pts, offs, segs):
        return (np.concatenate([np.repeat(p, len(o)) for p, o in zip(pts, offs)]),
                np.concatenate([np.tile(o, len(p)) for p, o in zip(pts, offs)]),
                np.concatenate([np.repeat(q, len(o)) for q, o in zip(segs, offs)]))
    # A `close` disc that lies inside a no-go disc of the same curve adds nothing: FORBIDDEN clashes
    # with every lookup (it is in every `_CLASH` mask), so the other bits of such a cell are never
    # read. Dense point k lies at most k seg / sub from the start along the curve (and the last,
    # P - 1 = n sub, is the end), and rounding both to pixels moves them apart by at most sqrt(2), so
    # the disc of k is inside the no-go disc of radius R around an end (the two taken from the
    # same rounded points) when that arc + sqrt(2) + the largest `close` offset <= R (a 1e-6 spare
    # for the float dense points): those entries are left out, and the grid answers every lookup as before.
    arc = np.arange(P) * (seg / sub)
    d2_close = [dx * dx + dy * dy for dx in range(-k_close, k_close + 1) for dy in range(-k_close, k_close + 1)]
    reach = math.sqrt(2.0) + math.sqrt(max(q for q in d2_close if q <= close * close)) + 1e-6
    def inside(radius_start, radius_end):
        return (arc + reach <= radius_start) | (n * seg - arc + reach <= radius_end)
    R_mark, R_end = c_mark + slack, c_end + slack
    keep_d, keep_1, keep_2 = (np.flatnonzero(~inside(*r)) for r in ((R_end, R_end), (R_mark, R_mark), (R_mark, R_end)))
    mark = entries([keep_d, [0, P - 1]], [off_close, off_end], [seg_of_pt[keep_d], [n, n]])
    main = entries([keep_1, L + keep_2, [0, P - 1, L], [L + P - 1]], [off_close, off_close, off_mark, off_free_end],
                   [2 * seg_of_pt[keep_1], 2 * seg_of_pt[keep_2] + 1, [2 * n] * 3, [2 * n]])
    g = _Geo(
        size=d.image_size, n=n, seg=seg, turn=int(math.floor(d.max_turn / 360.0 * HEADINGS + 1e-9)), steps=_steps(seg),
        running=np.tri(n + 1, n, -1, np.float32),
        r_stroke=r_stroke, r_marker=r_marker,
        c_mark=c_mark, c_end=c_end, close=close, d_min=2 * c_mark, margin=r_marker + 1.0,
        at_pair=_along(n, sub_pair), seg_of_pair_pt=_samples(n, sub_pair),
        end_rule=end_rule,
        at_self=_along(n, sub_self), self_d2=self_d2,
        # All headings within a window w: parts `SELF_ARC * c` apart along the curve are at
        # least SELF_ARC * c * cos(w / 2) apart in the plane, so cos(w / 2) > 1 / SELF_ARC suffices.
        free_turn=2.0 * math.acos(1.0 / SELF_ARC + 0.01) / (2.0 * math.pi) * HEADINGS, pad=pad, grid=grid,
        look_at=tuple(a[look_pt] for a in _along(n, sub)), look_code=look_code, look_off=look_off.astype(np.float64),
        grid_xy=np.array([1.0, grid]), coarse_code=np.r_[n, 1 : n, n],
        mark_pt=mark[0], mark_off=mark[1], mark_seg=mark[2], main_pt=main[0], main_off=main[1], main_seg=main[2],
        dot_span=np.arange(int(math.ceil(2 * r_marker + 2)) + 2),
        win=win, win_x=wx.astype(np.float64), win_y=wy.astype(np.float64), win_flat=wy * canvas + wx,
        difficulty=as_dict(d),
    )
    _GEO_CACHE[d] = g
    return g


# A batch of walks keeps the walk axis last, [n + 1, W] (reductions and running sums along
# a curve then run over whole rows); single curves and configurations are [..., n + 1]. The
# work is in few numpy calls on whole batches: `take` rather than fancy indexing, no Python
# loops over points or pixels.


def _steps(seg: float) -> np.ndarray:
    """The step of every heading k 2 pi / HEADINGS: seg * exp(ih), quantised -> complex64 [HEADINGS]
    (a small table: it stays in cache; float32 holds the quantised steps and their sums exactly)."""
    z = np.exp(1j * (np.arange(HEADINGS) * (2.0 * math.pi / HEADINGS)))
    x = z.view(np.float64)  # quantised in place: seg * exp(ih) / GEOMETRY_QUANTUM, rounded, rescaled
    x *= seg / GEOMETRY_QUANTUM  # (the same as multiplying by seg, then dividing: the quantum is a power of 2)
    np.rint(x, out=x)
    x *= GEOMETRY_QUANTUM
    return z.astype(np.complex64)


class _Walks(NamedTuple):
    """A batch of W walks, walk axis last: segment headings (whole heading units in
    0..HEADINGS - 1; `_codes` turns them into direction codes, only for the walks that need
    them) [n, W], vertices [n + 1, W],
    their extent (smallest and largest (x, y)) [W, 2] each, heading range [W] (heading units),
    and placement draws [W', 2] (one per configuration or candidate)."""

    h: np.ndarray
    v: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    turn: np.ndarray
    unit: np.ndarray


def _draw(rng: np.random.Generator, g: _Geo, B: int, m: int) -> _Walks:
    """One draw of B main configurations and m distractor candidates, as walks from 0.

    A configuration is four walks [S1, P, Q, S2]: S1 and P leave A = 0 with one heading; Q
    leaves B1 = end(S1) with S1's last heading reversed, S2 leaves E2 = end(P) with P's last
    heading reversed; walk i is paired with walk 3 - i. Walk i of configuration b is walk
    i * B + b, then come the candidates; placement draws: B, then m. Headings are whole heading
    units (2 pi / HEADINGS): first headings uniform over all of them, turns uniform over those
    within max_turn.
    """
    n, W = g.n, 4 * B + m
    h0 = rng.integers(0, HEADINGS, B + m)
    turns = rng.integers(-g.turn, g.turn + 1, (n - 1, W))  # (column: walk)
    unit = rng.uniform(0.0, 1.0, (B + m, 2))
    h = np.empty((n, W), np.int64)  # headings relative to the first
    h[0] = 0
    np.add.accumulate(turns, axis=0, out=h[1:])
    turn = np.maximum.reduce(h, axis=0) - np.minimum.reduce(h, axis=0)
    start = np.empty(W, np.int64)  # first headings
    if B:  # (candidates alone skip the configuration steps: numpy calls on empty arrays still cost)
        start[: 2 * B].reshape(2, B)[:] = h0[:B]  # S1 and P
        np.add(h[-1, : 2 * B], start[: 2 * B] + HEADINGS // 2, out=start[2 * B : 4 * B])  # Q and S2: reversed last heading
    start[4 * B :] = h0[B:]
    h += start
    h &= HEADINGS - 1  # (whole turns off)
    # The vertices: running sums of the steps (exact in any order and in float32: they are multiples of the quantum, as all partial sums).
    v = (g.running @ g.steps.take(h).view(np.float32)).astype(np.float64).view(np.complex128)
    if B:
        vc = v[:, : 4 * B].reshape(n + 1, 4, B)
        vc[:, 2:] += vc[-1, :2]  # Q leaves B1, S2 leaves E2
    xy = v.view(np.float64).reshape(n + 1, W, 2)
    return _Walks(h, v, np.minimum.reduce(xy, axis=0), np.maximum.reduce(xy, axis=0), turn, unit)


def _codes(h: np.ndarray) -> np.ndarray:
    """Direction bins (heading mod 180 degrees, in DIR_BINS bins: exact in whole numbers) of
    segment headings h [n, W] (whole heading units in 0..HEADINGS - 1), then a row of DIR_BINS
    (the code of the ends) -> [n + 1, W]."""
    c = np.empty((len(h) + 1,) + h.shape[1:], np.int64)
    c[-1] = DIR_BINS
    b = c[:-1]
    np.bitwise_and(h, HEADINGS // 2 - 1, out=b)
    b *= DIR_BINS
    b >>= _HALF_BITS
    return c


def _pts_segs_d2(p: np.ndarray, v: np.ndarray, points_first: bool = False) -> np.ndarray:
    """Squared distances of points p [..., k] to the segments of polylines v [..., n + 1] -> [..., n, k],
    or [..., k, n] with points_first (the same numbers; numpy is much faster with the longer
    axis last, as broadcasting over a short last axis runs its inner loop a few values at a time)."""
    long, short = (Ellipsis, None, slice(None)), (Ellipsis, slice(None), None)  # index the last axis as [1, x] / [x, 1]
    seg, pt = (long, short) if points_first else (short, long)
    vx, vy = v.real, v.imag
    ax, ay = vx[..., :-1][seg], vy[..., :-1][seg]
    ux, uy = vx[..., 1:][seg] - ax, vy[..., 1:][seg] - ay
    qx, qy = p.real[pt] - ax, p.imag[pt] - ay
    t = qx * ux  # (in place from here: the same operations as on fresh arrays)
    t += qy * uy
    t /= ux * ux + uy * uy
    t.clip(0.0, 1.0, out=t)  # (as min(max(t, 0), 1): t is never NaN; one pass instead of two)
    qx -= t * ux
    qy -= t * uy
    qx *= qx
    qy *= qy
    qx += qy
    return qx


def _dense(v: np.ndarray, at: tuple) -> np.ndarray:
    """Points a + f (b - a) along polylines v [..., n + 1], where `at` = (index of a, index of b,
    f) [P] comes from `_along` -> [..., P]."""
    i, j, f = at
    a = v.take(i, axis=-1)
    return a + f * (v.take(j, axis=-1) - a)


def _self_bad(v: np.ndarray, g: _Geo) -> np.ndarray:
    """Curves v [k, n + 1] that come close to themselves: parts far apart along the curve
    nearer than `c_end`, or an end nearer than `c_mark` to its curve beyond the end -> [k]."""
    d2 = _pts_segs_d2(_dense(v, g.at_self), v)  # [k, n, P'']
    return np.logical_or.reduce((d2 < g.self_d2).reshape(len(v), -1), axis=1)


def _shift(lo: np.ndarray, hi: np.ndarray, unit: np.ndarray, g: _Geo) -> np.ndarray:
    """Quantised translations (x, y) [..., 2], uniform in the range keeping every vertex `margin`
    inside; lo, hi [..., 2] are the walks' extents."""
    lo, hi = g.margin - lo, g.size - 1 - g.margin - hi
    t = lo + unit * (hi - lo)
    t /= GEOMETRY_QUANTUM  # (`quantize`, in place)
    np.rint(t, out=t)
    t *= GEOMETRY_QUANTUM
    return t


def _main_curves(rng: np.random.Generator, g: _Geo, m: int) -> tuple:
    """The main curves S1 (from A) and S2 (from E2): the batch of walks they come from (with the
    m distractor candidates drawn with them, see `_draw`), their configuration, and its
    translation (x, y).

    Four walks per configuration, [S1, P, Q, S2] (see `_draw`); P and Q are phantoms,
    never drawn. Every rule is applied alike to the pair (S1, S2) and to the pair (P, Q), so
    swapping S1 <-> P and S2 <-> Q (which swaps B1 <-> E2) leaves the law of accepted
    configurations unchanged: the "yes" marker end B1 and the "no" marker end E2 have one
    joint law with A and its stroke.
    """
    B, n = MAIN_BATCH, g.n
    room = g.size - 1 - 2 * g.margin
    for _ in range(MAX_TRIES):
        w = _draw(rng, g, B, m)
        lo = np.minimum.reduce(w.lo[: 4 * B].reshape(4, B, 2), axis=0)  # [B, 2] over the four walks
        hi = np.maximum.reduce(w.hi[: 4 * B].reshape(4, B, 2), axis=0)
        vm = w.v[:, : 4 * B].reshape(n + 1, 4, B)
        ends = vm[-1, :2].T  # B1, E2
        ok = np.logical_and.reduce(np.concatenate([hi - lo <= room, ends.real * ends.real + ends.imag * ends.imag
                                                   >= g.d_min ** 2], axis=1), axis=1)
        sel = ok.nonzero()[0]
        if not len(sel):
            continue
        c = np.ascontiguousarray(vm.take(sel, axis=2).transpose(2, 1, 0))  # [len(sel), 4, n + 1]
        good = _ends_ok(c, g).nonzero()[0]
        for i in range(0, len(good), PAIR_CHUNK):  # in order: the first that passes every rule
            part = good[i : i + PAIR_CHUNK]
            for k in sel[part[_cross_ok(c.take(part, axis=0), g)]].tolist():
                if max(w.turn[k : 4 * B : B].tolist()) > g.free_turn and _self_bad(vm[..., k].T, g).any():
                    continue
                # The translation (`_shift`, in Python floats: the same operations).
                (lx, ly), (hx, hy), (ux, uy) = lo[k].tolist(), hi[k].tolist(), w.unit[k].tolist()
                lx, ly, hx, hy = g.margin - lx, g.margin - ly, g.size - 1 - g.margin - hx, g.size - 1 - g.margin - hy
                t = (round((lx + ux * (hx - lx)) / GEOMETRY_QUANTUM) * GEOMETRY_QUANTUM,
                     round((ly + uy * (hy - ly)) / GEOMETRY_QUANTUM) * GEOMETRY_QUANTUM)
                return w, k, t
    raise RuntimeError(f"curve_tracing: no main-curve configuration fits after {MAX_TRIES * B} tries; "
                       "use shorter or straighter curves or a larger image")


def _ends_ok(w: np.ndarray, g: _Geo) -> np.ndarray:
    """Rules on the curve ends of the pairs X = [S1, P], Y = [S2, Q]; w [K, 4, n + 1] = [S1, P, Q, S2] -> ok [K].

    Both ends of X (A and B1, A and E2) and the start of Y (E2, B1) keep `c_mark` from the
    other curve of the pair; the far end of Y keeps `c_end` from X.
    """
    d2 = _pts_segs_d2(w[..., :: g.n], w[:, ::-1], points_first=True)  # [K, 4, 2, n]: both ends against the partner walk
    return ~np.logical_or.reduce((d2 < g.end_rule).reshape(len(w), -1), axis=1)


def _cross_ok(w: np.ndarray, g: _Geo) -> np.ndarray:
    """Where strokes of X and Y come closer than `close`, they cross at MIN_CROSS_DEG at least -> ok [K]."""
    d2 = _pts_segs_d2(_dense(w[:, 3:1:-1], g.at_pair), w[:, :2])  # [K, 2, n, P']: points of Y against X
    s = w[..., 1:] - w[..., :-1]
    sx, sy = s[:, :2, :, None], s[:, 3:1:-1, None, :]
    cross = sy.real * sx.imag - sy.imag * sx.real  # [K, 2, n, n]: segments of X, of Y
    flat = (cross * cross < _SIN_CROSS2 * g.seg ** 4).take(g.seg_of_pair_pt, axis=3)  # [K, 2, n, P']
    return ~np.logical_or.reduce((flat & (d2 < g.close ** 2)).reshape(len(w), -1), axis=1)


# --- distractors on an occupancy grid --------------------------------------------------------
#
# One int64 bit grid over the padded image. A placed stroke sets, on every pixel within
# `close` of its dense points, the bit of its direction bin (DIR_BINS bins over 180 degrees);
# the FORBIDDEN bit marks the no-go zones around the marker candidates and the curve ends.
# A candidate curve's dense points carry the mask of the direction bins that are too nearly
# parallel to their own direction (within MIN_CROSS_DEG), plus FORBIDDEN; its two ends carry
# every bit (an end must not touch any stroke). A point breaks a rule where its mask meets
# the grid. One more cell past the grid has every bit set: candidates that do not fit in the
# image look there only, so they clash by themselves.

DIR_BINS = 60  # 3-degree bins
FORBIDDEN = np.int64(1) << 62
_BIT = np.left_shift(np.int64(1), np.arange(DIR_BINS, dtype=np.int64))


def _parallel_masks() -> np.ndarray:
    width = 180.0 / DIR_BINS
    dist = np.abs(np.arange(DIR_BINS)[:, None] - np.arange(DIR_BINS)[None, :])
    near = np.minimum(dist, DIR_BINS - dist) * width < MIN_CROSS_DEG  # bin centres within MIN_CROSS_DEG
    return np.bitwise_or.reduce(np.where(near, _BIT[None, :], 0), axis=1) | FORBIDDEN


_PARALLEL = _parallel_masks()
_ANY = np.bitwise_or.reduce(_BIT) | FORBIDDEN  # what an end clashes with
_HALF_BITS = (HEADINGS // 2).bit_length() - 1  # HEADINGS / 2 = 2 ** _HALF_BITS
# By direction code, with code DIR_BINS for the ends: the bits a point clashes with, the bits it sets.
_CLASH = np.append(_PARALLEL, _ANY)
_SETS = np.append(_BIT, FORBIDDEN)


def _lookups(xy: np.ndarray, g: _Geo) -> np.ndarray:
    """Flat grid indices [k, L] of the pixels nearest to the lookup points (see `_Geo.look_at`)
    of k curves xy [n + 1, k, 2] (inside the image)."""
    i, j, f = g.look_at
    a = xy.take(i, axis=0)
    p = np.rint(a + f[:, None, None] * (xy.take(j, axis=0) - a))  # [L, k, 2] (as `_dense`)
    return (p @ g.grid_xy + g.look_off[:, None]).astype(np.int64).T  # (exact in float64)


class _Candidates(NamedTuple):
    """Curves placed in the image: vertices [n + 1, M], direction codes [n + 1, M], the grid
    lookups of their vertices [n + 1, M] (`_Geo.coarse_code`: a subset of their full lookups,
    `_Geo.look_at`, that candidates which clash already fail on cheaply), and per candidate its
    box as placed, grown by `close` + 1.5 (lo x, lo y, hi x, hi y) [M, 4] (see `_distractors`)
    and whether it may come close to itself [M]."""

    v: np.ndarray
    code: np.ndarray
    coarse: np.ndarray
    box: np.ndarray
    curly: np.ndarray


def _candidates(w: _Walks, B: int, g: _Geo, cells: int) -> _Candidates:
    """The distractor candidates of a batch w drawn with B configurations, placed (see `_shift`);
    those that do not fit in the image look up the last of `cells` grid cells only (the one with
    every bit)."""
    lo, hi, unit = w.lo[4 * B :], w.hi[4 * B :], w.unit[B:]
    t = _shift(lo, hi, unit, g)
    v, code = w.v[:, 4 * B :], _codes(w.h[:, 4 * B :])
    xy = v.view(np.float64).reshape(g.n + 1, -1, 2)
    xy += t  # in place (exact: vertices and translations are multiples of the quantum)
    coarse = (np.rint(xy) @ g.grid_xy + g.look_off[0]).astype(np.int64)  # [n + 1, M] (the dense points at the vertices)
    coarse[:, np.logical_or.reduce(hi - lo > g.size - 1 - 2 * g.margin, axis=1)] = cells - 1
    # Boxes of the placed curves, grown so that boxes apart hold no points of two curves within
    # `close`: the range of the placements (see `_shift`) moved by t, by the float operations of
    # the scalar formula (margin - (margin - lo) + t - grow, ...): the same numbers for every candidate.
    grow, outer = g.close + 1.5, g.size - 1 - g.margin
    box = np.concatenate([g.margin - (g.margin - lo) + t - grow, outer - (outer - hi) + t + grow], axis=1)
    return _Candidates(v, code, coarse, box, w.turn[4 * B :] > g.free_turn)


def _mark(grid: np.ndarray, look: np.ndarray, code: np.ndarray, g: _Geo) -> None:
    """Put placed curves (lookups [k, L], direction codes [n + 1, k]) into the grid."""
    cells = (look.take(g.mark_pt, axis=1) + g.mark_off).ravel()
    np.bitwise_or.at(grid, cells, _SETS.take(code.T.take(g.mark_seg, axis=1)).ravel())


def _round_size(count: int) -> int:
    """Distractor candidates per round for `count` distractors (a speed knob: the candidates are
    i.i.d. and taken first-fit, whatever their number; only the rare give-up after ROUNDS depends on it).
    15 * count + 40 (was 10 * count + 30): medium (4 distractors of 9 segments) needed a second
    round, a fresh draw, for about half its samples; A/B in CPU time medium ~+4.5%, easy and hard level."""
    return 15 * count + 40


def _distractors(rng: np.random.Generator, g: _Geo, grid: np.ndarray, count: int,
                 c: _Candidates) -> list[np.ndarray] | None:
    """`count` more curves, each the next candidate that fits among those placed; more
    candidates are drawn while needed; None if they do not fit. Each placed curve joins the
    grid: its `close` zone and no-go discs around its ends. Candidates come in rounds: c (drawn
    with the main curves), then m more after every round that does not finish.
    """
    placed = []
    m = _round_size(count)
    for _ in range(ROUNDS):
        # Candidates that clash at their vertices drop out at once (the grid only fills up); the rest get every lookup.
        alive = (~np.logical_or.reduce(_CLASH.take(c.code.take(g.coarse_code, axis=0)) & grid.take(c.coarse),
                                       axis=0)).nonzero()[0]
        if len(alive):
            v, code = c.v.take(alive, axis=1), c.code.take(alive, axis=1)
            look = _lookups(v.view(np.float64).reshape(g.n + 1, -1, 2), g)  # [M', L]
            check = _CLASH.take(code.take(g.look_code, axis=0)).T  # [M', L]
            box, curly = c.box.take(alive, axis=0).tolist(), c.curly.take(alive).tolist()
            new = []  # placed in this round and not yet in the grid (only a scan reads it; the last never goes in)
            todo = None  # the candidates a scan looks at (None: all): those that fitted at the last scan, from the first not taken
            while True:  # candidates that fit among everything placed so far
                if new:
                    _mark(grid, look.take(new, axis=0), code.take(new, axis=1), g)
                    new = []
                if todo is None:
                    fit = (~np.logical_or.reduce(check & grid.take(look), axis=1)).nonzero()[0]
                else:
                    fit = todo[~np.logical_or.reduce(check.take(todo, axis=0) & grid.take(look.take(todo, axis=0)), axis=1)]
                if not len(fit):
                    break
                fresh = []  # boxes of the curves placed since the scan
                for i, j in enumerate(fit.tolist()):
                    bj = box[j]
                    if any(bj[0] < b[2] and b[0] < bj[2] and bj[1] < b[3] and b[1] < bj[3] for b in fresh):
                        todo = fit[i:]  # it may clash with a curve placed since the scan: scan again from j
                        break
                    if curly[j] and _self_bad(v[:, j : j + 1].T, g)[0]:
                        continue
                    placed.append(v[:, j])
                    new.append(j)
                    if len(placed) == count:
                        return placed
                    fresh.append(bj)
                else:
                    break  # every later candidate clashed already before these were placed
            if new:
                _mark(grid, look.take(new, axis=0), code.take(new, axis=1), g)
        c = _candidates(_draw(rng, g, 0, m), 0, g, len(grid))
    return None


def _target_crossings(curves: np.ndarray) -> np.ndarray:
    """Crossings of curve 1 with every other curve of curves [C, n + 1] -> [C - 1]."""
    n = curves.shape[1] - 1
    a, u = curves[0, :-1, None], np.conj(curves[0, 1:] - curves[0, :-1])[:, None]  # [n, 1] (u conjugated)
    c, w = curves[1:, :-1].reshape(1, -1), np.conj(curves[1:, 1:] - curves[1:, :-1]).reshape(1, -1)  # [1, M]
    # Sides as cross products, im(conj(p) q): exact (coordinates are multiples of the quantum), whatever
    # the order of the operations: of c and c + w against segment a, of a and a + u against segment c.
    dc = c - a
    crossing = ((u * dc).imag * (u * (dc + w.conj())).imag < 0) & ((w * dc).imag * (w * (dc - u.conj())).imag < 0)
    return np.add.reduce(crossing.reshape(n, -1, n), axis=(0, 2))


# --- rendering -----------------------------------------------------------------------------


def _render(curves: np.ndarray, g: _Geo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Antialiased strokes of curves [C, n + 1]: coverage levels [H, W] (0..ALPHA_LEVELS), instance ids, curve-1 mask.

    Every segment gets a fixed window from its bounding box; per pixel the stroke coverage is
    max-composited (the exact union of round-capped segments) through integer keys that
    also carry the curve id, so the id of the most-covering curve comes for free. A pixel
    belongs to a curve (maps) where that curve's own coverage is at least MEMBER_ALPHA.
    """
    n = curves.shape[1] - 1
    S, W = g.size, g.win
    xy = curves.view(np.float64).reshape(len(curves), n + 1, 2)
    a = xy[:, :-1].reshape(-1, 2)  # [N, 2] segment starts (x, y)
    u = (xy[:, 1:] - xy[:, :-1]).reshape(-1, 2)
    reach = g.r_stroke + 0.5
    # Window origin (x, y) per segment: the first pixel centre the stroke can cover.
    o = np.ceil(np.minimum(xy[:, :-1], xy[:, 1:]).reshape(-1, 2) - reach)
    ux, uy = u[:, :1], u[:, 1:]
    oa = o - a
    qx = oa[:, :1] + g.win_x  # [N, W * W] pixel centres relative to the segment start
    qy = oa[:, 1:] + g.win_y
    t = qx * ux
    t += qy * uy
    t /= ux * ux + uy * uy
    t.clip(0.0, 1.0, out=t)  # (as min(max(t, 0), 1): t is never NaN; one pass instead of two)
    qx -= t * ux
    qy -= t * uy
    d2 = qx * qx
    d2 += qy * qy
    d2 = d2.ravel()
    P = S + 2 * W
    inside = (d2 < (g.r_stroke + 0.5) ** 2).nonzero()[0]  # coverage > 0
    oi = o.astype(np.int64) + W
    flat = ((oi[:, 1] * P + oi[:, 0])[:, None] + g.win_flat).take(inside)
    cover = np.sqrt(d2.take(inside))  # (in place from here: min(r + 0.5 - sqrt(d2), 1), scaled and rounded)
    np.subtract(g.r_stroke + 0.5, cover, out=cover)
    np.minimum(cover, 1.0, out=cover)
    cover *= ALPHA_LEVELS
    level = np.rint(cover, out=cover).astype(np.int64)
    canvas = np.zeros(P * P, np.int64)
    np.maximum.at(canvas, flat, (level << 6) + (inside // (n * W * W) + 1))  # curve id = segment // n + 1
    canvas = canvas.reshape(P, P)[W : W + S, W : W + S]
    lev = canvas >> 6
    member = int(math.ceil(MEMBER_ALPHA * ALPHA_LEVELS))
    inst = (canvas & 63).astype(np.int8)  # the curve id where its coverage is at least MEMBER_ALPHA, else 0
    inst *= lev >= member
    first = int(inside.searchsorted(n * W * W))  # curve 1 owns the first n segments
    target = np.zeros(P * P, bool)
    target[flat[:first][level[:first] >= member]] = True
    return lev, inst, target.reshape(P, P)[W : W + S, W : W + S]


def _stroke_colours() -> tuple[np.ndarray, np.ndarray]:
    """The composited colour of a pixel at each coverage level 0..ALPHA_LEVELS: float32 RGB
    and its `to_uint8`, [ALPHA_LEVELS + 1, 3] each."""
    alpha = np.arange(ALPHA_LEVELS + 1).astype(np.float32) / np.float32(ALPHA_LEVELS)
    rgb = np.empty((ALPHA_LEVELS + 1, 3), np.float32)
    for ch in range(3):
        rgb[:, ch] = _BG[ch] + alpha * _FG_MINUS_BG[ch]
    return rgb, to_uint8(rgb)


_STROKE_RGB, _STROKE_RGB8 = _stroke_colours()
_MARKER = np.array(MARKER, np.float32)


def _picture(lev: np.ndarray, dots: tuple, g: _Geo) -> np.ndarray:
    """The image [H, W, 3] uint8: strokes of coverage levels lev [H, W], then the two dots at (x, y).

    The bytes of compositing the float image, drawing the dots on it one after the other
    (`render.draw_disc`) and `render.to_uint8`, with the same float32 operations per pixel:
    stroke pixels come from a table by level, and the float image is only made over a box
    around each dot (`g.dot_span` pixels a side from the corner `disc_alpha` would use; the
    pixels it adds lie outside the disc and keep their table colour). No pixel is covered by
    both dots (they are `d_min` apart), and drawing a dot where it does not cover changes
    nothing, so both are drawn at once, each pixel by the nearer dot (where the two boxes
    overlap, both write the same bytes).
    """
    S, r = g.size, g.r_marker
    img = _STROKE_RGB8.take(lev.ravel(), axis=0)
    (ax, ay), (bx, by) = dots
    # Rows and columns [2 (y, x), 2 boxes, k] of the two boxes; dots lie `margin` inside, so a box
    # starts in the image, and may end up to 2 pixels past it (those repeat the last row or column).
    yx = np.minimum(np.array([[[math.floor(ay - r - 1)], [math.floor(by - r - 1)]],
                              [[math.floor(ax - r - 1)], [math.floor(bx - r - 1)]]]) + g.dot_span, S - 1)
    dd = yx[:, :, None, :] - np.array([[ay, by], [ax, bx]])[:, None, :, None]  # [2 (y, x), 2 boxes, 2 dots, k]
    dd *= dd
    d2 = np.minimum.reduce(dd[0][..., :, None] + dd[1][..., None, :], axis=1)  # [2, k, k]: to the nearer dot (as disc_alpha)
    a = (r + 0.5 - np.sqrt(d2)).clip(0.0, 1.0).astype(np.float32)[..., None]
    at = yx[0][:, :, None] * S + yx[1][:, None, :]  # [2, k, k] flat pixel indices
    box = _STROKE_RGB.take(lev.take(at), axis=0)
    box = box * (1.0 - a) + _MARKER * a  # (as render.paint)
    # (as to_uint8; its clip to [0, 1] changes no byte here: box is a convex combination of
    # colours in [0, 1], at most a rounding error above 1, and 255 (1 + 2 ** -22) rounds to 255)
    img[at.ravel()] = np.rint(box * 255.0).astype(np.uint8).reshape(-1, 3)
    return img.reshape(S, S, 3)


# --- the task ------------------------------------------------------------------------------


def _angle(t: complex, w: complex) -> float:
    """Unsigned angle between two vectors, in degrees (rounded to 1e-3)."""
    c = (t.real * w.real + t.imag * w.imag) / math.sqrt((t.real ** 2 + t.imag ** 2) * (w.real ** 2 + w.imag ** 2))
    return float(round(math.degrees(math.acos(max(-1.0, min(1.0, c)))), 3))


def _curves(rng: np.random.Generator, g: _Geo, distractors: int) -> np.ndarray:
    """All curves [2 + distractors, n + 1] of one picture: S1, S2, then the distractors."""
    B = MAIN_BATCH
    for _ in range(MAX_LAYOUTS):
        w, k, t = _main_curves(rng, g, _round_size(distractors) if distractors else 0)
        if not distractors:
            return np.array([w.v[:, k], w.v[:, 3 * B + k]]) + complex(*t)
        cols = [k, 3 * B + k]
        main = w.v.take(cols, axis=1)  # S1, S2
        xy = main.view(np.float64).reshape(g.n + 1, 2, 2)
        xy += t  # (exact)
        c = _candidates(w, B, g, g.grid * g.grid + 1)
        # The `close` zone of the main strokes, then no-go zones around every marker candidate
        # (A, B1, E2), whatever the answer, and around the free end of S2 (see `_Geo.main_pt`).
        grid = np.zeros(g.grid * g.grid + 1, np.int64)
        grid[-1] = -1  # the cell with every bit set
        np.bitwise_or.at(grid, _lookups(xy, g).take(g.main_pt) + g.main_off,
                         _SETS.take(_codes(w.h.take(cols, axis=1)).take(g.main_seg)))
        extra = _distractors(rng, g, grid, distractors, c)
        if extra is not None:
            return np.array([main[:, 0], main[:, 1], *extra])
    raise RuntimeError(f"curve_tracing: {distractors} distractors do not fit after {MAX_LAYOUTS} layouts; "
                       "use fewer or shorter curves")


def make(rng: np.random.Generator, condition: int, d: CurveTracingDifficulty) -> Sample:
    g = _geometry(d)
    curves = _curves(rng, g, d.distractors)  # instance ids 1 (S1), 2 (S2), 3, ...
    s1, s2 = curves[0], curves[1]
    a, b = complex(s1[0]), complex(s1[-1] if condition == 1 else s2[0])

    lev, inst, target = _render(curves, g)
    image = _picture(lev, ((a.real, a.imag), (b.real, b.imag)), g)

    crossings = _target_crossings(curves)
    ta = complex(s1[1] - s1[0])  # stroke directions at the markers, pointing into their curves
    tb = complex(s1[-2] - s1[-1]) if condition == 1 else complex(s2[1] - s2[0])
    return Sample(
        image=image,
        question=QUESTION,
        answer=CHOICES[condition],
        choices=CHOICES,
        task="curve_tracing",
        difficulty=dict(g.difficulty),
        maps={"target_curve": target, "curves": inst},
        info={
            "markers": [[a.real, a.imag], [b.real, b.imag]],
            "nuisance": {
                "marker_distance": math.sqrt((b.real - a.real) ** 2 + (b.imag - a.imag) ** 2),
                "contour_length": g.n,
                "n_curves": len(curves),
                "n_crossings_target": int(crossings.sum()),
                "n_crossings_main": int(crossings[0]),
                "marker_edge_distance": min(a.real, a.imag, b.real, b.imag,
                                            g.size - 1 - max(a.real, a.imag, b.real, b.imag)),
                "angle_at_first_marker": _angle(ta, b - a),
                "angle_at_second_marker": _angle(tb, a - b),
            },
        },
    )


TASK = Task(name="curve_tracing", difficulty=CurveTracingDifficulty, levels=LEVELS, make=make)
