"""Texture-defined figure-ground: is the red dot on the figure (a region of differently oriented line segments)?

Follows the texture figure-ground stimuli of Lamme (1995, J Neurosci 15:1605) and Poort et
al. (2012, Neuron 75:143): a texture of short oriented line segments on a grey background in
which the figure differs from the ground ONLY by the orientation of its segments (same
luminance, colour, density and segment length).

Construction (the texture is built before the answer is known, so the image without the dot
is the same for both answers; only the dot's place depends on the answer):

1. A regular grid of `cell`-pixel texture cells, one antialiased segment per cell, centred on
   the cell centre plus a uniform positional jitter, kept inside its cell (so each pixel only
   looks at its own cell's segment, and no segment touches a neighbour).
2. A figure shape ("square", "rectangle", "disc", "blob" -- a smooth star-convex shape -- or
   "random", one of the four per sample) with the area of a square of side `figure_size`
   (fraction of the image side, drawn uniformly in the range), at a uniform position at
   least one cell from the image border. Cells whose centre lies inside the shape are figure
   cells; the figure mask is their union (pixel level), so it matches the orientation field.
3. Orientations: ground theta_g uniform in [0, 180) degrees, figure theta_f = theta_g + s *
   `orientation_contrast` with a random sign s. theta_g uniform makes the orientation at the
   dot carry nothing; the random sign makes "my cell is rotated clockwise from the cell across
   the edge" carry nothing (with a fixed sign it would say inside vs outside near the edge).
4. The dot (probe), placed by matched pairs: a class-independent sub-cell offset is drawn and
   every cell gets a candidate dot at that offset (at a contour distance in the
   `probe_distance` range, clear of the image border). A pair is one inside and one outside
   candidate with the same neighbourhood key -- which of the cell's 8 neighbours lie in the
   other region -- and contour distances (Euclidean, to the cell-level edge between figure and
   ground) within `_DISTANCE_TOL` px. A key is drawn uniformly among the keys that have pairs,
   then one of its pairs; "yes" takes the inside member, "no" the outside one. So the dot's
   distance to the contour, its sub-cell offset and everything a small receptive field around
   it can see of the figure's layout have one distribution for both answers. The key matters:
   with distance matching alone a 7-pixel CNN read "the dot's cell differs from three cells
   around a grid corner" (only inside a convex figure's corner) and "only the diagonal cell
   differs" (only outside one), 76% correct at the easy level. Figures that allow no pair (a
   2 x 2-cell square: all its cells are corners) are redrawn, so the realised figures of the
   smallest size ranges are somewhat larger than `figure_size` alone would give.

Orientation convention: theta in degrees, counter-clockwise on screen from the +x axis (the
segment direction is (cos theta, -sin theta) in (x = column, y = row) coordinates).

Maps: "figure" (bool), "boundary" (bool: every pixel of the figure cells 4-adjacent to a
ground cell and of the ground cells 4-adjacent to a figure cell -- a two-cell-wide band centred
on the cell-level edge), "orientation" (int16: the degrees, rounded, of each pixel's cell).

Standard-test mode (`mode="standard"`, for the figure-ground modulation index of Poort 2012):
the dot is always at the centre of texture cell (n // 2, n // 2) of the n x n grid (the cell
whose top-left corner is the image centre). Six conditions, condition = 2 * location +
assignment: location 0 "centre" (the figure centred on the dot's cell), 1 "edge" (the dot's
cell is a figure cell with exactly one ground 4-neighbour), 2 "ground" (no figure cell in the
dot's 3 x 3 cell neighbourhood); assignment a gives the dot's cell the texture
theta_a = `standard_theta` + a * `orientation_contrast` and the other region the other one,
as in Lamme's design. The 3 x 3 cells around the dot have no jitter, so in the centre and
ground conditions that neighbourhood is identical pixel for pixel for a given assignment.
The same figure (shape and size) is accepted only if it can be placed in all three locations.
The grid needs >= 12 cells per side (e.g. image_size=128, cell=8); see `STANDARD`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import render
from .base import GEOMETRY_QUANTUM, Sample, Task, as_dict, quantize

QUESTION = "Is the dot on the figure?"
CHOICES = ("no", "yes")
SHAPES = ("square", "rectangle", "disc", "blob")
SHAPE_OPTIONS = SHAPES + ("random",)
MODES = ("task", "standard")
STANDARD_LOCATIONS = ("centre", "edge", "ground")

BACKGROUND = 0.5  # grey
INK = 0.0  # segments are black
MARKER_COLOR = (0.95, 0.1, 0.1)

FIGURE_MARGIN_CELLS = 1  # the outermost ring of cells is always ground
# The dot's centre stays this many pixels from the image border, so no 7-pixel window that
# holds a dot pixel also holds the border (negatives lie further out than positives on average).
PROBE_MARGIN_PX = 6.0
_DISTANCE_TOL = 0.25  # px: the dot's contour distance is within this of the drawn target
_MIN_PROBE_DISTANCE = 1.0  # px: the dot's centre is never closer than this to the contour
_PROBE_BATCH = 4  # sub-cell offsets tried at once
_PROBE_BATCHES = 2  # batches tried per figure before drawing a new figure
# Bit b of a neighbourhood key says whether neighbour b lies in the other region; the 8
# neighbours in row-major order of the 3 x 3 block (the cell itself has weight 0).
_KEY_WEIGHTS = np.array([1, 2, 4, 8, 0, 16, 32, 64, 128], dtype=np.int64)
_MAX_FIGURES = 200

RECT_ASPECT = (1.5, 2.0)  # long side / short side of "rectangle"
BLOB_HARMONICS = (2, 3, 4)  # radius(phi) = r0 * (1 + sum_k a_k cos(k phi + p_k))
BLOB_AMPLITUDE = 0.12  # |a_k| <= this, so 0.64 r0 <= radius <= 1.36 r0
# Half-extent of each shape in units of s (the side of the equal-area square), upper bounds.
_HALF_EXTENT = {"square": 0.5, "rectangle": 0.5 * math.sqrt(RECT_ASPECT[1]), "disc": 1.0 / math.sqrt(math.pi),
                "blob": (1 + len(BLOB_HARMONICS) * BLOB_AMPLITUDE) / math.sqrt(math.pi)}
_MAX_HALF_EXTENT = max(_HALF_EXTENT.values())


@dataclass(frozen=True)
class FigureGroundDifficulty:
    """Knobs of the figure-ground task."""

    orientation_contrast: float = 90.0  # degrees between figure and ground segments (90 = easiest)
    figure_size: tuple[float, float] = (0.4, 0.5)  # side of the equal-area square, fraction of image side
    shape: str = "square"  # "square", "rectangle", "disc", "blob" or "random"
    cell: int = 8  # texture cell side in px (one segment per cell): the texture density
    segment_length: float = 5.0  # px, end to end (without the round caps)
    line_width: float = 1.0  # px
    jitter: float = 0.5  # px, uniform positional jitter of each segment in x and y
    probe_distance: tuple[float, float] = (0.125, 1.5)  # dot-to-contour distance range, in cells
    marker_radius: float = 1.5  # px
    mode: str = "task"  # "task" or "standard" (the fixed-location modulation-index test)
    standard_theta: float = 45.0  # degrees: texture A of the standard test (B = A + contrast)
    image_size: int = 64

    def __post_init__(self) -> None:
        for name in ("figure_size", "probe_distance"):  # accept lists (from JSON / Hydra)
            v = getattr(self, name)
            if isinstance(v, list):
                object.__setattr__(self, name, tuple(v))
        if not (isinstance(self.image_size, int) and 32 <= self.image_size <= 1024):
            raise ValueError(f"figure_ground: image_size={self.image_size!r} is out of range; valid: 32..1024")
        if not (isinstance(self.cell, int) and 4 <= self.cell <= 64):
            raise ValueError(f"figure_ground: cell={self.cell!r} is out of range; valid: 4..64")
        if self.image_size % self.cell != 0 or self.image_size // self.cell < 6:
            raise ValueError(f"figure_ground: cell={self.cell} does not fit image_size={self.image_size}; "
                             f"valid: a divisor of image_size giving >= 6 cells per side")
        if not 15.0 <= self.orientation_contrast <= 90.0:
            raise ValueError(f"figure_ground: orientation_contrast={self.orientation_contrast!r} is out of range; "
                             f"valid: 15..90 (degrees)")
        if self.shape not in SHAPE_OPTIONS:
            raise ValueError(f"figure_ground: shape={self.shape!r} is not valid; valid: {', '.join(SHAPE_OPTIONS)}")
        if self.mode not in MODES:
            raise ValueError(f"figure_ground: mode={self.mode!r} is not valid; valid: {', '.join(MODES)}")
        if not 0.0 < self.line_width <= self.cell / 4:
            raise ValueError(f"figure_ground: line_width={self.line_width!r} is out of range; valid: (0, cell/4]")
        if self.jitter < 0:
            raise ValueError(f"figure_ground: jitter={self.jitter!r} is out of range; valid: >= 0")
        # The antialiased segment reaches half its length + half its width + 0.5 px from its
        # centre; with the jitter it must stay inside its cell (pixel centres 0..cell-1).
        reach = self.segment_length / 2 + self.line_width / 2 + 0.5 + self.jitter
        max_len = self.cell - self.line_width - 1.0 - 2 * self.jitter
        if not (self.segment_length >= 1.0 and reach <= self.cell / 2):
            raise ValueError(f"figure_ground: segment_length={self.segment_length!r} is out of range; valid: "
                             f"1..{max_len:g} (cell - line_width - 1 - 2 * jitter, so segments stay in their cell)")
        lo, hi = self.figure_size
        extent = _MAX_HALF_EXTENT if self.shape == "random" else _HALF_EXTENT[self.shape]
        max_fig = (self.image_size - 2 * FIGURE_MARGIN_CELLS * self.cell) / (2 * extent * self.image_size)
        min_fig = 1.5 * self.cell / self.image_size
        if not (min_fig <= lo <= hi <= max_fig):
            raise ValueError(f"figure_ground: figure_size={self.figure_size!r} is out of range; valid: "
                             f"{min_fig:.3g} <= min <= max <= {max_fig:.3g} (for shape={self.shape!r}, "
                             f"cell={self.cell}, image_size={self.image_size})")
        plo, phi = self.probe_distance
        if not (_MIN_PROBE_DISTANCE / self.cell <= plo < phi <= 4.0):
            raise ValueError(f"figure_ground: probe_distance={self.probe_distance!r} is out of range; valid: "
                             f"{_MIN_PROBE_DISTANCE / self.cell:g} <= min < max <= 4 (cells)")
        if not 0.5 <= self.marker_radius <= self.cell / 2:
            raise ValueError(f"figure_ground: marker_radius={self.marker_radius!r} is out of range; "
                             f"valid: 0.5..cell/2")
        if not 0.0 <= self.standard_theta < 180.0:
            raise ValueError(f"figure_ground: standard_theta={self.standard_theta!r} is out of range; valid: [0, 180)")
        if self.mode == "standard":
            n = self.image_size // self.cell
            if n < 12:
                raise ValueError(f"figure_ground: mode='standard' needs >= 12 cells per side, got "
                                 f"image_size={self.image_size} // cell={self.cell} = {n}; valid: e.g. "
                                 f"image_size=128 with cell=8")
            if hi * self.image_size < 2 * self.cell:
                raise ValueError(f"figure_ground: figure_size={self.figure_size!r} is too small for "
                                 f"mode='standard'; valid: max >= {2 * self.cell / self.image_size:.3g} "
                                 f"(the figure must cover the dot's 3 x 3 cells)")

    @property
    def n_cells(self) -> int:
        return self.image_size // self.cell


LEVELS: dict[str, FigureGroundDifficulty] = {
    "easy": FigureGroundDifficulty(orientation_contrast=90.0, figure_size=(0.4, 0.5), shape="square"),
    "medium": FigureGroundDifficulty(orientation_contrast=45.0, figure_size=(0.32, 0.45), shape="random"),
    "hard": FigureGroundDifficulty(orientation_contrast=30.0, figure_size=(0.25, 0.4), shape="random"),
}

# The standard test of Poort et al. (2012) at a grid large enough for all three locations.
STANDARD = FigureGroundDifficulty(mode="standard", image_size=128, figure_size=(0.3, 0.4))


# --- geometry -------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _grid(image_size: int, cell: int) -> dict[str, np.ndarray]:
    """Cached coordinate arrays: pixel offsets inside a cell in the [n, c, n, c] layout
    (rows of cells, rows in cell, columns of cells, columns in cell) and cell centres."""
    n = image_size // cell
    local = np.arange(cell, dtype=np.float64)
    centres = np.arange(n, dtype=np.float64) * cell + (cell - 1) / 2.0
    return {
        "xl": local.reshape(1, 1, 1, cell),
        "yl": local.reshape(1, cell, 1, 1),
        "centres": centres,
        "cu": np.arange(n, dtype=np.float64)[None, :],  # cell column index, [1, n]
        "cv": np.arange(n, dtype=np.float64)[:, None],  # cell row index, [n, 1]
    }


def _q(x: float) -> float:
    """`base.quantize` for one Python float (the same round-half-to-even on the same grid)."""
    return round(float(x) / GEOMETRY_QUANTUM) * GEOMETRY_QUANTUM


@lru_cache(maxsize=64)
def _knobs(d: FigureGroundDifficulty) -> dict:
    return as_dict(d)


def _difficulty_dict(d: FigureGroundDifficulty) -> dict:
    """`as_dict(d)`, cached (dataclasses.asdict is slow) and copied (lists are mutable)."""
    return {k: (list(v) if isinstance(v, list) else v) for k, v in _knobs(d).items()}


def _unit(theta_deg: float) -> tuple[float, float]:
    """Quantised direction (dx, dy) of a segment at `theta_deg` (y points down)."""
    t = math.radians(theta_deg)
    return _q(math.cos(t)), _q(-math.sin(t))


def _figure_cells(rng: np.random.Generator, d: FigureGroundDifficulty, shape: str, centre: tuple[float, float] | None):
    """Draw one figure; returns (cell mask [n, n] bool, size fraction, centre (x, y) px).

    `centre=None` draws a uniform centre keeping the shape's bounding box off the outer
    ring of cells; otherwise the shape is centred there.
    """
    S, c, n = d.image_size, d.cell, d.n_cells
    f = float(rng.uniform(*d.figure_size))
    s = f * S
    if shape == "rectangle":
        aspect = float(rng.uniform(*RECT_ASPECT))
        long_, short = s * math.sqrt(aspect), s / math.sqrt(aspect)
        hx, hy = (long_ / 2, short / 2) if rng.random() < 0.5 else (short / 2, long_ / 2)
    elif shape == "square":
        hx = hy = s / 2
    else:
        hx = hy = _HALF_EXTENT[shape] * s
    if shape == "blob":
        amps = rng.uniform(-BLOB_AMPLITUDE, BLOB_AMPLITUDE, len(BLOB_HARMONICS))
        phases = rng.uniform(0.0, 2 * math.pi, len(BLOB_HARMONICS))
    if centre is None:
        lo = FIGURE_MARGIN_CELLS * c - 0.5
        hi = S - FIGURE_MARGIN_CELLS * c - 0.5
        fx = float(rng.uniform(lo + hx, max(hi - hx, lo + hx)))
        fy = float(rng.uniform(lo + hy, max(hi - hy, lo + hy)))
        fx, fy = _q(fx), _q(fy)
    else:
        fx, fy = centre
    g = _grid(S, c)
    rx = g["centres"][None, :] - fx  # [1, n]
    ry = g["centres"][:, None] - fy  # [n, 1]
    if shape in ("square", "rectangle"):
        mask = (np.abs(rx) <= _q(hx)) & (np.abs(ry) <= _q(hy))
    elif shape == "disc":
        radius = _q(hx)  # s / sqrt(pi): the disc has the square's area
        mask = rx * rx + ry * ry <= radius * radius
    else:  # blob: star-convex, radius(phi) = r0 * (1 + sum a_k cos(k phi + p_k)), area ~ s^2
        r0 = s / math.sqrt(math.pi * (1 + 0.5 * sum(float(a) * float(a) for a in amps)))
        rx, ry = np.broadcast_arrays(rx, ry)
        phi = quantize(np.arctan2(-ry, rx))
        wave = np.zeros_like(phi)
        for k, a, p in zip(BLOB_HARMONICS, amps, phases):
            wave = wave + a * np.cos(k * phi + p)
        radius = quantize(r0 * (1.0 + wave))
        mask = rx * rx + ry * ry <= radius * radius
    return np.ascontiguousarray(mask), f, (fx, fy)


def _contour_edges(F: np.ndarray) -> np.ndarray:
    """The cell-level contour of the figure mask F [n, n] as unit edges [4, E]: midpoint
    (u, v) and half-extents (hu, hv), in cell coordinates (cell (i, j) spans [j, j+1) x [i, i+1))."""
    vi, vk = np.nonzero(F[:, 1:] != F[:, :-1])  # vertical edges at u = vk + 1, v in [vi, vi + 1]
    hk, hj = np.nonzero(F[1:, :] != F[:-1, :])  # horizontal edges at v = hk + 1, u in [hj, hj + 1]
    nv, nh = len(vi), len(hk)
    edges = np.empty((4, nv + nh), dtype=np.float64)
    edges[0, :nv], edges[1, :nv], edges[2, :nv], edges[3, :nv] = vk + 1.0, vi + 0.5, 0.0, 0.5
    edges[0, nv:], edges[1, nv:], edges[2, nv:], edges[3, nv:] = hj + 0.5, hk + 1.0, 0.5, 0.0
    return edges


def _contour_distance(edges: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Euclidean distance (in cells) from points (u, v) (broadcast together) to the nearest
    contour edge."""
    du = np.maximum(np.abs(u[..., None] - edges[0]) - edges[2], 0.0)
    dv = np.maximum(np.abs(v[..., None] - edges[1]) - edges[3], 0.0)
    return np.sqrt((du * du + dv * dv).min(axis=-1))


def _neighbour_mismatch(F: np.ndarray) -> np.ndarray:
    """Cells with a 4-neighbour of the other class (outside the grid counts as the same)."""
    out = np.zeros_like(F)
    diff_v = F[1:, :] != F[:-1, :]
    diff_h = F[:, 1:] != F[:, :-1]
    out[1:, :] |= diff_v
    out[:-1, :] |= diff_v
    out[:, 1:] |= diff_h
    out[:, :-1] |= diff_h
    return out


# --- rendering ------------------------------------------------------------------------


def _render_texture(d: FigureGroundDifficulty, F: np.ndarray, theta_f: float, theta_g: float,
                    jx: np.ndarray, jy: np.ndarray) -> np.ndarray:
    """Segment coverage [H, W] in [0, 1]: each pixel against its own cell's segment only."""
    n, c = d.n_cells, d.cell
    g = _grid(d.image_size, c)
    cf, sf = _unit(theta_f)
    cg, sg = _unit(theta_g)
    ux = np.where(F, cf, cg)[:, None, :, None]  # [n, 1, n, 1]
    uy = np.where(F, sf, sg)[:, None, :, None]
    centre = (c - 1) / 2.0
    dx = g["xl"] - (centre + jx)[:, None, :, None]  # [n, 1, n, c]
    dy = g["yl"] - (centre + jy)[:, None, :, None]  # [n, c, n, 1]
    half = d.segment_length / 2.0
    along = np.clip(dx * ux + dy * uy, -half, half)  # [n, c, n, c]
    ex = dx - along * ux
    ey = dy - along * uy
    dist = np.sqrt(ex * ex + ey * ey)
    alpha = np.clip(d.line_width / 2.0 + 0.5 - dist, 0.0, 1.0)
    return alpha.reshape(d.image_size, d.image_size)


def _compose(d: FigureGroundDifficulty, alpha: np.ndarray, px: float, py: float) -> np.ndarray:
    grey = (BACKGROUND + (INK - BACKGROUND) * alpha).astype(np.float32)
    img = np.repeat(grey[:, :, None], 3, axis=2)
    render.draw_disc(img, px, py, d.marker_radius, MARKER_COLOR)
    return render.to_uint8(img)


def _maps(d: FigureGroundDifficulty, F: np.ndarray, theta_f: float, theta_g: float) -> dict[str, np.ndarray]:
    c = d.cell
    boundary = _neighbour_mismatch(F)
    orient = np.where(F, np.int16(round(theta_f) % 180), np.int16(round(theta_g) % 180)).astype(np.int16)
    return {"figure": _upsample(F, c), "boundary": _upsample(boundary, c), "orientation": _upsample(orient, c)}


def _upsample(cells: np.ndarray, c: int) -> np.ndarray:
    """A per-cell array [n, n] as a per-pixel one [n * c, n * c]."""
    n = cells.shape[0]
    return np.ascontiguousarray(np.broadcast_to(cells[:, None, :, None], (n, c, n, c))).reshape(n * c, n * c)


def _jitter(rng: np.random.Generator, d: FigureGroundDifficulty) -> tuple[np.ndarray, np.ndarray]:
    n = d.n_cells
    j = quantize(rng.uniform(-d.jitter, d.jitter, (2, n, n))) if d.jitter > 0 else np.zeros((2, n, n))
    return j[0], j[1]


# --- task mode --------------------------------------------------------------------------


def _neighbourhood_keys(F: np.ndarray) -> np.ndarray:
    """Per cell, an 8-bit key: which of its 8 neighbours lie in the other region (cells
    outside the grid count as ground). With the dot's sub-cell offset it fixes everything a
    small receptive field around the dot can see of the figure's layout."""
    n = F.shape[0]
    p = np.zeros((n + 2, n + 2), dtype=bool)
    p[1:-1, 1:-1] = F
    windows = np.lib.stride_tricks.sliding_window_view(p, (3, 3))  # [n, n, 3, 3]
    foreign = (windows != F[:, :, None, None]).reshape(n, n, 9)
    return foreign.astype(np.int64) @ _KEY_WEIGHTS


def _place_probe(rng: np.random.Generator, d: FigureGroundDifficulty, F: np.ndarray):
    """Draw a sub-cell offset, then a matched pair of candidate dots, one inside and one
    outside the figure, with the same neighbourhood key and contour distances within
    `_DISTANCE_TOL` of each other; the answer later takes one member of the pair.

    Every candidate is a cell's top-left corner plus the shared offset, at a contour distance
    in the `probe_distance` range and clear of the image border. Of the keys that have pairs,
    one is drawn uniformly, then one of its pairs. Nothing here depends on the answer.
    Returns None if this figure allows no pair, else
    ((row, col) inside, (row, col) outside, distances [n, n] px, offset (ox, oy) px, key)."""
    S, c, n = d.image_size, d.cell, d.n_cells
    g = _grid(S, c)
    keys = _neighbourhood_keys(F)
    fi, fj = np.nonzero(F)
    gi, gj = np.nonzero(~F)
    same_key = keys[fi, fj][:, None] == keys[gi, gj][None, :]  # [Nf, Ng]
    if not same_key.any():
        return None
    edges = _contour_edges(F)
    K = _PROBE_BATCH
    lo, hi = PROBE_MARGIN_PX, S - 1 - PROBE_MARGIN_PX
    d_lo, d_hi = d.probe_distance[0] * c, d.probe_distance[1] * c
    for _ in range(_PROBE_BATCHES):
        off = quantize(rng.uniform(0.0, c, (K, 2)))  # px from the cell's top-left edge
        u = g["cu"][None] + off[:, 0, None, None] / c  # [K, 1, n]
        v = g["cv"][None] + off[:, 1, None, None] / c  # [K, n, 1]
        dist = _contour_distance(edges, u, v) * c  # [K, n, n] px
        x, y = u * c - 0.5, v * c - 0.5
        ok = (dist >= d_lo) & (dist <= d_hi) & ((x >= lo) & (x <= hi)) & ((y >= lo) & (y <= hi))
        df, dg = dist[:, fi, fj], dist[:, gi, gj]  # [K, Nf], [K, Ng]
        pairs = (same_key[None] & ok[:, fi, fj][:, :, None] & ok[:, gi, gj][:, None, :]
                 & (np.abs(df[:, :, None] - dg[:, None, :]) <= _DISTANCE_TOL))  # [K, Nf, Ng]
        good = pairs.any(axis=(1, 2))
        if good.any():
            k = int(np.argmax(good))
            a, b = np.nonzero(pairs[k])
            pair_keys = keys[fi[a], fj[a]]
            options = np.unique(pair_keys)
            key = int(options[int(rng.integers(len(options)))])
            a, b = a[pair_keys == key], b[pair_keys == key]
            p = int(rng.integers(len(a)))
            inside = (int(fi[a[p]]), int(fj[a[p]]))
            outside = (int(gi[b[p]]), int(gj[b[p]]))
            return inside, outside, dist[k], (float(off[k, 0]), float(off[k, 1])), key
    return None


def _make_task(rng: np.random.Generator, condition: int, d: FigureGroundDifficulty) -> Sample:
    c = d.cell
    for _ in range(_MAX_FIGURES):
        shape = SHAPES[int(rng.integers(len(SHAPES)))] if d.shape == "random" else d.shape
        F, f, (fx, fy) = _figure_cells(rng, d, shape, None)
        if F.sum() < 2:
            continue
        placed = _place_probe(rng, d, F)
        if placed is not None:
            break
    else:  # pragma: no cover - the knob validation keeps this reachable only by bad luck
        raise RuntimeError(f"figure_ground: no figure with a valid dot placement in {_MAX_FIGURES} draws ({d})")
    inside, outside, dist, (ox, oy), key = placed
    theta_g = _q(rng.uniform(0.0, 180.0))
    sign = 1 if rng.random() < 0.5 else -1
    theta_f = _q((theta_g + sign * d.orientation_contrast) % 180.0)
    jx, jy = _jitter(rng, d)
    # Only now does the answer matter: which side the dot goes to.
    i, j = inside if condition == 1 else outside
    px, py = j * c - 0.5 + ox, i * c - 0.5 + oy
    alpha = _render_texture(d, F, theta_f, theta_g, jx, jy)
    # Scalars whose one distribution for both answers rests on the dot's placement (plus the
    # figure's size and the ground orientation). Everything drawn before the answer is used
    # -- figure position, theta_figure, the contrast sign -- is identical for both answers
    # given the rng (tested directly), so it is reported outside "nuisance".
    nuisance = {
        "probe_boundary_distance": float(dist[i, j]),
        "probe_offset_x": ox,
        "probe_offset_y": oy,
        "probe_neighbourhood": key,
        "figure_size": f,
        "figure_cells": int(F.sum()),
        "theta_ground": theta_g,
    }
    S = d.image_size
    figure = {"shape": shape, "centre": [fx / S, fy / S], "theta_figure": theta_f, "theta_ground": theta_g,
              "contrast_sign": sign}
    return Sample(
        image=_compose(d, alpha, px, py),
        question=QUESTION,
        answer=CHOICES[condition],
        choices=CHOICES,
        task="figure_ground",
        difficulty=_difficulty_dict(d),
        maps=_maps(d, F, theta_f, theta_g),
        info={"markers": [[px, py]], "nuisance": nuisance, "figure": figure, "mode": "task",
              "probe_cell": [i, j]},
    )


# --- standard-test mode -------------------------------------------------------------------


def _shifts(F0: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """All integer shifts (dr, dc) that keep the figure cells of F0 off the outer ring.
    Returns the ranges of valid row and column shifts."""
    rows, cols = np.nonzero(F0)
    m = FIGURE_MARGIN_CELLS
    dr = np.arange(m - rows.min(), n - 1 - m - rows.max() + 1)
    dc = np.arange(m - cols.min(), n - 1 - m - cols.max() + 1)
    return dr, dc


def _make_standard(rng: np.random.Generator, condition: int, d: FigureGroundDifficulty) -> Sample:
    S, c, n = d.image_size, d.cell, d.n_cells
    pc = n // 2  # the dot's cell (row and column)
    centre_px = pc * c + (c - 1) / 2.0
    location, assignment = divmod(int(condition), 2)
    for _ in range(_MAX_FIGURES):
        shape = SHAPES[int(rng.integers(len(SHAPES)))] if d.shape == "random" else d.shape
        F0, f, _ = _figure_cells(rng, d, shape, (centre_px, centre_px))  # centred on the dot
        if not F0[pc - 1:pc + 2, pc - 1:pc + 2].all():
            continue
        dr, dc = _shifts(F0, n)
        if not ((dr == 0).any() and (dc == 0).any()):
            continue
        rows, cols = np.nonzero(F0)
        # Edge: figure cells with exactly one ground 4-neighbour, shifted onto the dot.
        Fp = np.pad(F0, 1)
        n_ground = (4 - Fp[:-2, 1:-1].astype(int) - Fp[2:, 1:-1] - Fp[1:-1, :-2] - Fp[1:-1, 2:])
        er, ec = np.nonzero(F0 & (n_ground == 1))
        edge_ok = np.isin(pc - er, dr) & np.isin(pc - ec, dc)
        # Ground: shifts that keep every figure cell out of the dot's 3 x 3 neighbourhood.
        DR, DC = np.meshgrid(dr, dc, indexing="ij")
        far = np.ones(DR.shape, dtype=bool)
        for r, cc in zip(rows, cols):
            far &= (np.abs(r + DR - pc) >= 2) | (np.abs(cc + DC - pc) >= 2)
        if edge_ok.any() and far.any():
            break
    else:
        raise RuntimeError(f"figure_ground: no figure fits all three standard locations in {_MAX_FIGURES} draws; "
                           f"use a larger image_size or smaller figure_size ({d})")
    # Draw both placements in every condition so the rng stream does not depend on it.
    k_edge = int(rng.integers(int(edge_ok.sum())))
    k_far = int(rng.integers(int(far.sum())))
    jx, jy = _jitter(rng, d)
    jx[pc - 1:pc + 2, pc - 1:pc + 2] = 0.0
    jy[pc - 1:pc + 2, pc - 1:pc + 2] = 0.0
    if location == 0:
        shift = (0, 0)
    elif location == 1:
        shift = (pc - int(er[edge_ok][k_edge]), pc - int(ec[edge_ok][k_edge]))
    else:
        shift = (int(DR[far][k_far]), int(DC[far][k_far]))
    F = np.zeros_like(F0)
    F[rows + shift[0], cols + shift[1]] = True
    theta_a = _q(d.standard_theta % 180.0)
    theta_b = _q((d.standard_theta + d.orientation_contrast) % 180.0)
    probe_theta, other = (theta_a, theta_b) if assignment == 0 else (theta_b, theta_a)
    theta_f, theta_g = (probe_theta, other) if location in (0, 1) else (other, probe_theta)
    alpha = _render_texture(d, F, theta_f, theta_g, jx, jy)
    answer = CHOICES[1] if location in (0, 1) else CHOICES[0]
    fi, fj = np.nonzero(F)
    # The same figure (size and shape) in all three locations; its place and the two
    # orientations differ by condition on purpose, so they are reported outside "nuisance".
    nuisance = {"figure_size": f, "figure_cells": int(F.sum())}
    figure = {"shape": shape, "centre": [float((fj.mean() + 0.5) * c / S), float((fi.mean() + 0.5) * c / S)],
              "theta_figure": theta_f, "theta_ground": theta_g}
    return Sample(
        image=_compose(d, alpha, centre_px, centre_px),
        question=QUESTION,
        answer=answer,
        choices=CHOICES,
        task="figure_ground",
        difficulty=_difficulty_dict(d),
        maps=_maps(d, F, theta_f, theta_g),
        info={"markers": [[centre_px, centre_px]], "nuisance": nuisance, "figure": figure, "mode": "standard",
              "condition": STANDARD_LOCATIONS[location], "texture_assignment": assignment,
              "probe_cell": [pc, pc]},
    )


def make(rng: np.random.Generator, condition: int, d: FigureGroundDifficulty) -> Sample:
    """One figure-ground sample: condition 1 puts the dot on the figure ("yes"), 0 on the
    ground ("no"); in the standard mode, condition = 2 * location + texture assignment."""
    if d.mode == "standard":
        return _make_standard(rng, condition, d)
    return _make_task(rng, condition, d)


TASK = Task(name="figure_ground", difficulty=FigureGroundDifficulty, levels=LEVELS, make=make,
            n_conditions=lambda d: 6 if d.mode == "standard" else 2, binary=True)
