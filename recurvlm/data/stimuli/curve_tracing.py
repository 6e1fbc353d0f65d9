"""Curve tracing: are the two dots on the same curve? A Pathfinder-like long-range grouping task.

Follows the Pathfinder challenge of Linsley et al. (2018), "Learning long-range spatial
dependencies with horizontal gated recurrent units" (NeurIPS): smooth curves made of
`contour_length` short straight segments with a bounded turn between consecutive
segments, white-ish antialiased strokes on a dark background, two disc markers on curve
ends; the question is whether both markers sit on one curve.

Lengths (`segment_length`, `stroke_width`) are in pixels of a 64-pixel image and scale
with `image_size`. Every curve is a random walk: a random start and heading, then
`contour_length` steps of `segment_length`, each turning by a uniform angle in
[-max_turn, max_turn].

Construction (one picture for both answers; the answer only picks which end is marked):

1. Marker A sits on the start of main curve 1 (S1), which leaves A with heading h.
2. A *phantom* curve P, an independent walk of the same length, also leaves A with
   heading h; it is never drawn. Its far end E2 is where main curve 2 (S2) starts, and S2
   leaves E2 the way P arrives there (reversed), then turns on its own.
3. The second marker goes on the far end B1 of S1 ("yes") or on E2 ("no"). Since S1 and P
   are independent walks of one law from (A, h), the second marker's distance to A, the
   direction to it seen from A's stroke and the stroke direction at the marker relative
   to A have one distribution for both answers; so do the candidate ends' surroundings.
   S2 heads back towards A and passes S1 nearby, so neither "the marked curve points at
   the other marker" nor "there is a second curve end near a marker" tells the answer:
   the curves must be followed.
4. `distractors` more walks of the same length are scattered at random.

All geometric rules are checked on the unmarked picture with all three candidate
marker places (A, B1, E2), before the answer is used, so the drawn curves have one
distribution for both answers: no curve passes within `marker clearance` of A, B1 or E2
(a marker never touches a second curve, or its own curve twice), no curve end lies on
another curve, curves cross only at an angle of at least 30 degrees (no parallel runs),
curves do not come close to themselves, markers are at least two clearances apart, and
everything stays inside the image. The markers are drawn after the curves, at the exact
(sub-pixel) curve ends, with one radius and colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .base import Sample, Task, as_dict, quantize
from .render import draw_disc, to_uint8

QUESTION = "Are the two dots on the same curve?"
CHOICES = ("no", "yes")

BACKGROUND = (0.0, 0.0, 0.0)
STROKE = (0.9, 0.9, 0.9)
MARKER = (1.0, 0.25, 0.25)

MARKER_RADIUS = 1.5  # in stroke widths
MARKER_GAP = 2.0  # px at 64: free space between a marker disc and the stroke of any other curve
END_GAP = 1.5  # px at 64: free space between a curve end and any other curve
CLOSE = 1.0  # px at 64 (plus a stroke width): strokes this close must cross at an angle
MIN_CROSS_DEG = 30.0  # smallest angle at which two curves may cross
MAIN_BATCH = 8  # main-curve configurations drawn (and checked) at once
MAX_TRIES = 400  # batches before giving up (a knob combination that does not fit)

_SIN_CROSS2 = math.sin(math.radians(MIN_CROSS_DEG)) ** 2


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
    "easy": CurveTracingDifficulty(contour_length=6, distractors=8),
    "medium": CurveTracingDifficulty(contour_length=9, distractors=5),
    "hard": CurveTracingDifficulty(contour_length=14, distractors=3),
}


# --- geometry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geo:
    """Pixel-unit constants of one difficulty."""

    size: int
    n: int  # segments per curve
    seg: float  # segment length
    turn: float  # max turn (radians)
    r_stroke: float  # half stroke width
    r_marker: float
    c_mark: float  # marker centre to any other curve (and own curve away from the end)
    c_end: float  # curve end to any other curve
    close: float  # stroke distance below which an angle is required
    d_min: float  # smallest marker distance
    margin: float  # curve vertices stay this far inside the image
    margin_mark: float  # marker centres stay this far inside
    sub: int  # dense samples per segment (spacing <= 1 px)
    pad: int  # padding of the occupancy grids
    grid: int  # side of the occupancy grids
    off_close: np.ndarray  # flat offsets of a disc of radius `close`
    off_end: np.ndarray  # flat offsets of a disc of radius `c_end`
    win: int  # render window side per segment
    far_pairs: tuple[np.ndarray, np.ndarray]  # segment pairs (i, j >= i + 2) of one curve


_GEO_CACHE: dict[CurveTracingDifficulty, _Geo] = {}


def _disc_offsets(radius: float, grid: int) -> np.ndarray:
    k = int(math.ceil(radius))
    dy, dx = np.mgrid[-k : k + 1, -k : k + 1]
    keep = dx * dx + dy * dy <= radius * radius
    return (dy[keep] * grid + dx[keep]).astype(np.int64)


def _geometry(d: CurveTracingDifficulty) -> _Geo:
    g = _GEO_CACHE.get(d)
    if g is not None:
        return g
    s = d.image_size / 64.0
    r_stroke = 0.5 * d.stroke_width * s
    r_marker = MARKER_RADIUS * d.stroke_width * s
    c_mark = r_marker + r_stroke + MARKER_GAP * s
    c_end = 2 * r_stroke + END_GAP * s
    close = 2 * r_stroke + CLOSE * s
    seg = d.segment_length * s
    pad = int(math.ceil(c_mark)) + 4
    grid = d.image_size + 2 * pad
    n = d.contour_length
    i, j = np.triu_indices(n, k=2)
    g = _Geo(
        size=d.image_size, n=n, seg=seg, turn=math.radians(d.max_turn), r_stroke=r_stroke, r_marker=r_marker,
        c_mark=c_mark, c_end=c_end, close=close, d_min=2 * c_mark, margin=r_stroke + 1.0,
        margin_mark=r_marker + 1.0, sub=int(math.ceil(seg)), pad=pad, grid=grid,
        off_close=_disc_offsets(close, grid), off_end=_disc_offsets(c_end, grid),
        win=2 * int(math.ceil(0.5 * seg + r_stroke + 1.0)) + 1, far_pairs=(i, j),
    )
    _GEO_CACHE[d] = g
    return g


def _steps(h: np.ndarray, seg: float) -> np.ndarray:
    """Quantised step vectors [..., n, 2] of a walk with headings h [..., n]."""
    return np.stack([quantize(seg * np.cos(h)), quantize(seg * np.sin(h))], axis=-1)


def _vertices(steps: np.ndarray) -> np.ndarray:
    """Vertices [..., n + 1, 2] of a walk from the origin (exact: dyadic coordinates)."""
    v = np.zeros(steps.shape[:-2] + (steps.shape[-2] + 1, 2))
    np.cumsum(steps, axis=-2, out=v[..., 1:, :])
    return v


def _headings(h0: np.ndarray, turns: np.ndarray) -> np.ndarray:
    """Headings [..., n] from initial headings [...] and turns [..., n - 1]."""
    h = np.empty(turns.shape[:-1] + (turns.shape[-1] + 1,))
    h[..., 0] = 0.0
    np.cumsum(turns, axis=-1, out=h[..., 1:])
    return h + h0[..., None]


def _pt_seg_d2(px, py, ax, ay, ux, uy, uu):
    """Squared distance of points (px, py) to segments a -> a + u (|u|^2 = uu); broadcasting."""
    qx, qy = px - ax, py - ay
    t = np.clip((qx * ux + qy * uy) / uu, 0.0, 1.0)
    ex, ey = qx - t * ux, qy - t * uy
    return ex * ex + ey * ey


def _seg_seg(a, b):
    """Squared distance and crossing flag of segment pairs; a, b [..., 2 (ends), 2 (xy)] broadcast."""
    ax, ay, bx, by = a[..., 0, 0], a[..., 0, 1], a[..., 1, 0], a[..., 1, 1]
    cx, cy, dx, dy = b[..., 0, 0], b[..., 0, 1], b[..., 1, 0], b[..., 1, 1]
    ux, uy, vx, vy = bx - ax, by - ay, dx - cx, dy - cy
    uu, vv = ux * ux + uy * uy, vx * vx + vy * vy
    d2 = np.minimum(np.minimum(_pt_seg_d2(ax, ay, cx, cy, vx, vy, vv), _pt_seg_d2(bx, by, cx, cy, vx, vy, vv)),
                    np.minimum(_pt_seg_d2(cx, cy, ax, ay, ux, uy, uu), _pt_seg_d2(dx, dy, ax, ay, ux, uy, uu)))
    o1 = ux * (cy - ay) - uy * (cx - ax)
    o2 = ux * (dy - ay) - uy * (dx - ax)
    o3 = vx * (ay - cy) - vy * (ax - cx)
    o4 = vx * (by - cy) - vy * (bx - cx)
    crossing = (o1 * o2 < 0) & (o3 * o4 < 0)
    sin2 = (ux * vy - uy * vx) ** 2 / (uu * vv)
    return np.where(crossing, 0.0, d2), crossing, sin2


def _segments(v: np.ndarray) -> np.ndarray:
    """Segments [..., n, 2, 2] of polylines v [..., n + 1, 2]."""
    return np.stack([v[..., :-1, :], v[..., 1:, :]], axis=-2)


def _self_ok(v: np.ndarray, g: _Geo) -> np.ndarray:
    """Per curve [...]: non-adjacent segments keep apart, the ends keep clear of their own curve."""
    n = g.n
    segs = _segments(v)
    i, j = g.far_pairs
    ok = np.ones(v.shape[:-2], bool)
    if len(i):
        d2, _, _ = _seg_seg(segs[..., i, :, :], segs[..., j, :, :])
        ok &= (d2 >= g.c_end * g.c_end).all(axis=-1)
    if n >= 3:  # ends against their own curve beyond the adjacent segment
        a, u = segs[..., :, 0, :], segs[..., :, 1, :] - segs[..., :, 0, :]
        uu = (u * u).sum(-1)
        d_start = _pt_seg_d2(v[..., 0, 0, None], v[..., 0, 1, None], a[..., 2:, 0], a[..., 2:, 1],
                             u[..., 2:, 0], u[..., 2:, 1], uu[..., 2:])
        d_end = _pt_seg_d2(v[..., -1, 0, None], v[..., -1, 1, None], a[..., : n - 2, 0], a[..., : n - 2, 1],
                           u[..., : n - 2, 0], u[..., : n - 2, 1], uu[..., : n - 2])
        c2 = g.c_mark * g.c_mark
        ok &= (d_start >= c2).all(-1) & (d_end >= c2).all(-1)
    return ok


def _points_to_curve_d2(p: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Squared distance of points p [..., k, 2] to polylines v [..., n + 1, 2] -> [..., k]."""
    a, b = v[..., None, :-1, :], v[..., None, 1:, :]
    u = b - a
    uu = (u * u).sum(-1)
    d2 = _pt_seg_d2(p[..., :, None, 0], p[..., :, None, 1], a[..., 0], a[..., 1], u[..., 0], u[..., 1], uu)
    return d2.min(-1)


def _main_curves(rng: np.random.Generator, g: _Geo):
    """S1 (from A), S2 (from E2) and the translation, for one accepted configuration."""
    n, B = g.n, MAIN_BATCH
    for _ in range(MAX_TRIES):
        h0 = rng.uniform(0.0, 2.0 * math.pi, B)
        turns = rng.uniform(-g.turn, g.turn, (B, 3, n - 1))
        unit = rng.uniform(0.0, 1.0, (B, 2))  # placement inside the feasible range
        h = _headings(np.repeat(h0[:, None], 2, axis=1), turns[:, :2])  # S1 and phantom P from A
        h2 = _headings(h[:, 1, -1] + math.pi, turns[:, 2])  # S2 leaves E2 as P arrives, reversed
        s1 = _vertices(_steps(h[:, 0], g.seg))  # [B, n + 1, 2], A at the origin
        e2 = _vertices(_steps(h[:, 1], g.seg))[:, -1]  # [B, 2]
        s2 = _vertices(_steps(h2, g.seg)) + e2[:, None, :]
        b1 = s1[:, -1]
        ok = ((b1 * b1).sum(-1) >= g.d_min ** 2) & ((e2 * e2).sum(-1) >= g.d_min ** 2)
        ok &= _self_ok(s1, g) & _self_ok(s2, g)
        # S1 against S2: crossings at an angle only, marker candidates and ends clear.
        d2, _, sin2 = _seg_seg(_segments(s1)[:, :, None], _segments(s2)[:, None, :])
        ok &= ~((d2 < g.close ** 2) & (sin2 < _SIN_CROSS2)).any(axis=(1, 2))
        cand1 = np.stack([s1[:, 0], b1], axis=1)  # A, B1 against S2
        ok &= (_points_to_curve_d2(cand1, s2) >= g.c_mark ** 2).all(-1)
        ok &= _points_to_curve_d2(e2[:, None], s1)[:, 0] >= g.c_mark ** 2
        ok &= _points_to_curve_d2(s2[:, -1:], s1)[:, 0] >= g.c_end ** 2
        # Translation keeping every vertex (and marker candidate) inside.
        pts = np.concatenate([s1, s2], axis=1)
        lo = np.maximum((g.margin - pts).max(1), (g.margin_mark - np.stack([s1[:, 0], b1, e2], 1)).max(1))
        hi = np.minimum((g.size - 1 - g.margin - pts).min(1), (g.size - 1 - g.margin_mark - np.stack([s1[:, 0], b1, e2], 1)).min(1))
        ok &= (lo <= hi).all(-1)
        good = np.flatnonzero(ok)
        if len(good):
            k = good[0]
            t = quantize(lo[k] + unit[k] * (hi[k] - lo[k]))
            return s1[k] + t, s2[k] + t
    raise RuntimeError(f"curve_tracing: no main-curve configuration fits after {MAX_TRIES * B} tries; "
                       "use shorter curves or a larger image")


def _dense(v: np.ndarray, sub: int) -> np.ndarray:
    """Points every 1/sub of a segment along polylines v [..., n + 1, 2] -> [..., n * sub + 1, 2]."""
    a, u = v[..., :-1, None, :], (v[..., 1:, None, :] - v[..., :-1, None, :])
    t = (np.arange(sub, dtype=np.float64) / sub)[:, None]
    p = (a + t * u).reshape(v.shape[:-2] + (-1, 2))
    return np.concatenate([p, v[..., -1:, :]], axis=-2)


class _Occupancy:
    """Pixel grids of what is already placed: which segment passes near, and no-go zones."""

    def __init__(self, g: _Geo) -> None:
        self.g = g
        self.near = np.zeros(g.grid * g.grid, np.int32)  # 1 + id of a segment within `close`, 0 = none
        self.forbid = np.zeros(g.grid * g.grid, bool)  # zones no other curve may enter
        self.dirs: list[np.ndarray] = []  # unit-free directions of the segments, by id

    def flat(self, p: np.ndarray) -> np.ndarray:
        g = self.g
        q = np.rint(p).astype(np.int64) + g.pad
        return q[..., 1] * g.grid + q[..., 0]

    def add_curve(self, v: np.ndarray, ends_forbid: bool = True) -> None:
        g = self.g
        base = sum(len(x) for x in self.dirs)
        self.dirs.append(v[1:] - v[:-1])
        pts = _dense(v, g.sub)
        ids = base + 1 + np.minimum(np.arange(len(pts)) // g.sub, g.n - 1)
        idx = self.flat(pts)
        self.near[(idx[:, None] + g.off_close[None, :]).ravel()] = np.repeat(ids, len(g.off_close))
        if ends_forbid:
            self.forbid[(idx[[0, -1], None] + g.off_end[None, :]).ravel()] = True

    def forbid_disc(self, c: np.ndarray, radius: float) -> None:
        """Forbid every grid pixel within `radius` of the exact point c (x, y)."""
        g = self.g
        k = int(math.ceil(radius)) + 1
        x0, y0 = int(math.floor(c[0])) - k, int(math.floor(c[1])) - k
        ys, xs = np.mgrid[y0 : y0 + 2 * k + 2, x0 : x0 + 2 * k + 2]
        keep = (xs - c[0]) ** 2 + (ys - c[1]) ** 2 <= radius * radius
        self.forbid[((ys[keep] + g.pad) * g.grid + xs[keep] + g.pad)] = True


def _distractors(rng: np.random.Generator, g: _Geo, occ: _Occupancy, count: int) -> list[np.ndarray] | None:
    """`count` more curves placed one by one among random candidates; None if they do not fit."""
    n, placed = g.n, []
    batch = max(2 * count, 4)
    for _ in range(8):
        if len(placed) == count:
            break
        h0 = rng.uniform(0.0, 2.0 * math.pi, batch)
        turns = rng.uniform(-g.turn, g.turn, (batch, n - 1))
        unit = rng.uniform(0.0, 1.0, (batch, 2))
        v = _vertices(_steps(_headings(h0, turns), g.seg))
        lo, hi = g.margin - v.min(1), g.size - 1 - g.margin - v.max(1)
        ok = (lo <= hi).all(-1) & _self_ok(v, g)
        v = v + quantize(lo + unit * (hi - lo))[:, None, :]
        pts = _dense(v, g.sub)  # [batch, P, 2]
        idx = occ.flat(pts)
        steps = v[:, 1:] - v[:, :-1]
        seg_of_pt = np.minimum(np.arange(pts.shape[1]) // g.sub, n - 1)
        ok &= ~occ.forbid[idx].any(-1)
        for k in np.flatnonzero(ok):
            if occ.forbid[idx[k]].any():
                continue
            near = occ.near[idx[k]]
            if near[0] or near[-1]:  # an end on (or right next to) another curve
                continue
            hit = np.flatnonzero(near)
            if len(hit):
                dirs = np.concatenate(occ.dirs)[near[hit] - 1]
                mine = steps[k][seg_of_pt[hit]]
                cr = mine[:, 0] * dirs[:, 1] - mine[:, 1] * dirs[:, 0]
                if (cr * cr < _SIN_CROSS2 * (mine * mine).sum(-1) * (dirs * dirs).sum(-1)).any():
                    continue
            occ.add_curve(v[k])
            placed.append(v[k])
            if len(placed) == count:
                break
    return placed if len(placed) == count else None


def _count_crossings(curves: np.ndarray) -> np.ndarray:
    """Crossings between different curves [C, n + 1, 2] -> per-curve crossing counts [C]."""
    c, n = curves.shape[0], curves.shape[1] - 1
    segs = _segments(curves).reshape(c * n, 2, 2)
    owner = np.repeat(np.arange(c), n)
    lo, hi = segs.min(1), segs.max(1)
    over = ((lo[:, None, 0] <= hi[None, :, 0]) & (lo[None, :, 0] <= hi[:, None, 0])
            & (lo[:, None, 1] <= hi[None, :, 1]) & (lo[None, :, 1] <= hi[:, None, 1]))
    i, j = np.nonzero(np.triu(over, 1) & (owner[:, None] != owner[None, :]))
    _, crossing, _ = _seg_seg(segs[i], segs[j])
    counts = np.zeros(c, np.int64)
    np.add.at(counts, owner[i[crossing]], 1)
    np.add.at(counts, owner[j[crossing]], 1)
    return counts


# --- rendering -----------------------------------------------------------------------------


def _render(curves: np.ndarray, g: _Geo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Antialiased strokes of curves [C, n + 1, 2]: alpha [H, W], instance ids [H, W], curve-1 mask.

    Every segment gets a fixed window around its midpoint; per pixel the stroke alpha is
    max-composited (exact union of round-capped segments) via integer keys that also carry
    the curve id, so the id of the most-covering curve comes for free.
    """
    c, n = curves.shape[0], curves.shape[1] - 1
    S, W, half = g.size, g.win, g.win // 2
    a = curves[:, :-1].reshape(-1, 2)
    u = (curves[:, 1:] - curves[:, :-1]).reshape(-1, 2)
    ids = np.repeat(np.arange(1, c + 1), n)
    mid = a + 0.5 * u
    ox = np.floor(mid[:, 0]).astype(np.int64) - half
    oy = np.floor(mid[:, 1]).astype(np.int64) - half
    ar = np.arange(W)
    px = (ox[:, None] + ar[None, :])[:, None, :]  # [N, 1, W]
    py = (oy[:, None] + ar[None, :])[:, :, None]  # [N, W, 1]
    uu = (u * u).sum(-1)
    d2 = _pt_seg_d2(px, py, a[:, 0, None, None], a[:, 1, None, None], u[:, 0, None, None], u[:, 1, None, None],
                    uu[:, None, None])
    dist = np.sqrt(d2)
    alpha = np.clip(g.r_stroke + 0.5 - dist, 0.0, 1.0)
    member = dist < max(g.r_stroke + 0.25, 0.75)  # pixels that belong to the curve (maps)
    P = S + 2 * W
    flat = ((py + W) * P + (px + W)).ravel()
    key = (np.rint(alpha * 4095.0).astype(np.int64) * 64 + ids[:, None, None]).ravel()
    canvas = np.zeros(P * P, np.int64)
    np.maximum.at(canvas, flat, key)
    canvas = canvas.reshape(P, P)[W : W + S, W : W + S]
    alpha_img = (canvas // 64).astype(np.float32) / np.float32(4095.0)
    mem = np.zeros(P * P, np.int64)
    np.maximum.at(mem, flat, np.where(member.ravel(), (np.rint(alpha * 4095.0).astype(np.int64) * 64
                                                        + ids[:, None, None]).ravel(), 0))
    mem = mem.reshape(P, P)[W : W + S, W : W + S]
    inst = (mem % 64).astype(np.int8)
    target = np.zeros(P * P, bool)
    target[flat[(member & (ids[:, None, None] == 1)).ravel()]] = True
    return alpha_img, inst, target.reshape(P, P)[W : W + S, W : W + S]


# --- the task ------------------------------------------------------------------------------


def make(rng: np.random.Generator, condition: int, d: CurveTracingDifficulty) -> Sample:
    g = _geometry(d)
    for _ in range(MAX_TRIES):
        s1, s2 = _main_curves(rng, g)
        occ = _Occupancy(g)
        occ.add_curve(s1, ends_forbid=False)
        occ.add_curve(s2, ends_forbid=False)
        for p in (s1[0], s1[-1], s2[0]):  # marker candidates: exact clearance
            occ.forbid_disc(p, g.c_mark + 0.5 + math.sqrt(0.5))
        occ.forbid_disc(s2[-1], g.c_end + 0.5 + math.sqrt(0.5))
        extra = _distractors(rng, g, occ, d.distractors)
        if extra is not None:
            break
    else:
        raise RuntimeError(f"curve_tracing: {d.distractors} distractors do not fit after {MAX_TRIES} tries")
    curves = np.stack([s1, s2, *extra])  # ids 1, 2, 3, ...
    a, b = s1[0], (s1[-1] if condition == 1 else s2[0])

    alpha, inst, target = _render(curves, g)
    img = np.empty((g.size, g.size, 3), np.float32)
    for ch in range(3):
        img[..., ch] = np.float32(BACKGROUND[ch]) + alpha * np.float32(STROKE[ch] - BACKGROUND[ch])
    for p in (a, b):
        draw_disc(img, float(p[0]), float(p[1]), g.r_marker, MARKER)

    crossings = _count_crossings(curves)
    # Stroke directions at the markers (pointing into the curve) against the marker-to-marker line.
    ta = s1[1] - s1[0]
    tb = (s1[-2] - s1[-1]) if condition == 1 else (s2[1] - s2[0])
    ab = b - a

    def angle(t: np.ndarray, w: np.ndarray) -> float:
        c = (t[0] * w[0] + t[1] * w[1]) / math.sqrt((t[0] ** 2 + t[1] ** 2) * (w[0] ** 2 + w[1] ** 2))
        return float(round(math.degrees(math.acos(max(-1.0, min(1.0, c)))), 3))

    dist = float(math.sqrt(ab[0] ** 2 + ab[1] ** 2))
    edge = float(min(a.min(), b.min(), g.size - 1 - a.max(), g.size - 1 - b.max()))
    return Sample(
        image=to_uint8(img),
        question=QUESTION,
        answer=CHOICES[condition],
        choices=CHOICES,
        task="curve_tracing",
        difficulty=as_dict(d),
        maps={"target_curve": target, "curves": inst},
        info={
            "markers": [[float(a[0]), float(a[1])], [float(b[0]), float(b[1])]],
            "nuisance": {
                "marker_distance": dist,
                "contour_length": int(g.n),
                "n_curves": int(len(curves)),
                "n_crossings": int(crossings.sum() // 2),
                "n_crossings_target": int(crossings[0]),
                "marker_edge_distance": edge,
                "angle_at_first_marker": angle(ta, ab),
                "angle_at_second_marker": angle(tb, -ab),
            },
        },
    )


TASK = Task(name="curve_tracing", difficulty=CurveTracingDifficulty, levels=LEVELS, make=make)
