"""Counting in clutter: how many targets among similar, equal-ink distractors (crowding)?

Follows the feed-forward-limits argument of VanRullen (2007), "The power of the feed-forward
sweep" (Adv. Cogn. Psychol. 3:167-176): counting items among similar distractors needs
serial, attentive (recurrent) processing, as in Wolfe's classic T-among-L search (e.g.
Wolfe 1998, "What can 1 million trials tell us about visual search?", Psychol. Sci.).
A fixed number `n_objects` of glyphs is placed on a jittered grid; `count` of them are
targets, the rest distractors. Every glyph of every pair has the same number of pixels
(2 * glyph_size - 1) and all glyphs share one colour, so ink, colour histograms and the
number of drawn things do not depend on the count: only the shapes do.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .base import Sample, Task, as_dict

# Glyphs: two one-pixel-wide bars each, 2 * glyph_size - 1 pixels for every shape.
GLYPHS = ("t", "l", "plus", "x")
GLYPH_NAMES = {"t": "T", "l": "L", "plus": "plus sign", "x": "X"}
PAIRS = tuple(f"{a}_{b}" for a in GLYPHS for b in GLYPHS if a != b)  # "<target>_<distractor>"

BACKGROUND = np.array([0, 0, 0], dtype=np.uint8)
INK = np.array([255, 255, 255], dtype=np.uint8)
MARGIN = 1  # empty pixels kept free along the image border


@dataclass(frozen=True)
class CountingDifficulty:
    """Knobs of the counting task (all sizes in pixels)."""

    pair: str = "t_l"  # "<target>_<distractor>", glyphs from GLYPHS; similarity: x_plus < plus_l < t_l
    count_min: int = 1  # smallest possible answer
    count_max: int = 6  # largest possible answer
    n_objects: int = 16  # targets + distractors, fixed for every count
    glyph_size: int = 5  # side of a glyph's (square, odd) bounding box
    spacing: int = 1  # minimum gap between the bounding boxes of two glyphs (crowding when small)
    jitter: int = 2  # extra random offset of each glyph inside its grid cell
    rotate: bool = True  # random 90-degree rotation per glyph (targets and distractors alike)
    image_size: int = 64

    def __post_init__(self) -> None:
        if self.pair not in PAIRS:
            raise ValueError(f"counting: pair={self.pair!r} is not valid; valid: {', '.join(PAIRS)}")
        if not (isinstance(self.glyph_size, int) and 3 <= self.glyph_size <= 15 and self.glyph_size % 2 == 1):
            raise ValueError(f"counting: glyph_size={self.glyph_size!r} is out of range; valid: odd 3..15")
        if not (isinstance(self.spacing, int) and 1 <= self.spacing <= 16):
            raise ValueError(f"counting: spacing={self.spacing!r} is out of range; valid: 1..16")
        if not (isinstance(self.jitter, int) and 0 <= self.jitter <= 16):
            raise ValueError(f"counting: jitter={self.jitter!r} is out of range; valid: 0..16")
        if not (isinstance(self.image_size, int) and 16 <= self.image_size <= 1024):
            raise ValueError(f"counting: image_size={self.image_size!r} is out of range; valid: 16..1024")
        if not isinstance(self.rotate, bool):
            raise ValueError(f"counting: rotate={self.rotate!r} is not valid; valid: True, False")
        if not (isinstance(self.count_min, int) and self.count_min >= 0):
            raise ValueError(f"counting: count_min={self.count_min!r} is out of range; valid: 0..count_max")
        if not (isinstance(self.count_max, int) and self.count_max > self.count_min):
            raise ValueError(f"counting: count_max={self.count_max!r} is out of range; valid: "
                             f"count_min+1={self.count_min + 1}..n_objects={self.n_objects}")
        cap = self.capacity
        if not (isinstance(self.n_objects, int) and 1 <= self.n_objects <= cap):
            raise ValueError(f"counting: n_objects={self.n_objects!r} is out of range; valid: 1..{cap} "
                             f"(grid cells for glyph_size={self.glyph_size}, spacing={self.spacing}, "
                             f"jitter={self.jitter}, image_size={self.image_size})")
        if self.count_max > self.n_objects:
            raise ValueError(f"counting: count_max={self.count_max} exceeds n_objects={self.n_objects}; "
                             f"valid: count_max <= n_objects")

    @property
    def cell(self) -> int:
        """Side of one grid cell: a glyph, its jitter range and the minimum gap."""
        return self.glyph_size + self.spacing + self.jitter

    @property
    def grid_side(self) -> int:
        """Grid cells per image side."""
        return max((self.image_size - 2 * MARGIN) // self.cell, 0)

    @property
    def capacity(self) -> int:
        """How many glyphs fit (one per grid cell)."""
        return self.grid_side**2


LEVELS: dict[str, CountingDifficulty] = {
    # X among plus signs: an orientation difference, nearly pop-out; large glyphs, wide gaps.
    "easy": CountingDifficulty(pair="x_plus", n_objects=8, glyph_size=7, spacing=4, jitter=2),
    # plus signs among Ls: same bars, junction type differs; denser.
    "medium": CountingDifficulty(pair="plus_l", n_objects=12, glyph_size=5, spacing=2, jitter=2),
    # Ts among Ls, randomly rotated (Wolfe's classic serial search); crowded.
    "hard": CountingDifficulty(pair="t_l", n_objects=16, glyph_size=5, spacing=1, jitter=2),
}


def glyph_bitmap(name: str, g: int) -> np.ndarray:
    """The upright glyph `name` as a bool [g, g] bitmap with 2 * g - 1 pixels."""
    b = np.zeros((g, g), dtype=bool)
    c = g // 2
    if name == "t":  # bar across the top, stem down the middle
        b[0, :] = True
        b[:, c] = True
    elif name == "l":  # bar down the left, bar along the bottom
        b[:, 0] = True
        b[g - 1, :] = True
    elif name == "plus":
        b[c, :] = True
        b[:, c] = True
    elif name == "x":
        i = np.arange(g)
        b[i, i] = True
        b[i, g - 1 - i] = True
    else:
        raise ValueError(f"counting: glyph {name!r} is not valid; valid: {', '.join(GLYPHS)}")
    return b


@lru_cache(maxsize=64)
def glyph_offsets(pair: str, g: int) -> np.ndarray:
    """Pixel offsets (row, col) of [target, distractor] x 4 rotations: int64 [2, 4, 2g-1, 2].

    Cached per (pair, glyph_size); read-only. Rotation k is `np.rot90(bitmap, k)`.
    """
    target, distractor = pair.split("_")
    out = np.zeros((2, 4, 2 * g - 1, 2), dtype=np.int64)
    for i, name in enumerate((target, distractor)):
        b = glyph_bitmap(name, g)
        for k in range(4):
            out[i, k] = np.argwhere(np.rot90(b, k))  # row-major order, deterministic
    out.setflags(write=False)
    return out


def _nearest_neighbour_mean(cy: np.ndarray, cx: np.ndarray) -> float:
    """Mean distance from each glyph centre to its nearest neighbour (0 for one glyph)."""
    if len(cy) < 2:
        return 0.0
    dy = cy[:, None] - cy[None, :]
    dx = cx[:, None] - cx[None, :]
    d2 = dy * dy + dx * dx
    np.fill_diagonal(d2, np.iinfo(np.int64).max)
    return float(np.sqrt(d2.min(axis=1)).mean())


def make(rng: np.random.Generator, condition: int, d: CountingDifficulty) -> Sample:
    """One counting sample; `condition` indexes the count in count_min..count_max."""
    n_counts = d.count_max - d.count_min + 1
    if not 0 <= condition < n_counts:
        raise ValueError(f"counting: condition={condition} is out of range; valid: 0..{n_counts - 1}")
    count = d.count_min + condition
    n, g, side, cell, h = d.n_objects, d.glyph_size, d.grid_side, d.cell, d.image_size

    # Layout first, from the rng alone: it never sees the count.
    slack = h - 2 * MARGIN - side * cell  # leftover pixels: a random shift of the whole grid
    oy, ox = (int(v) for v in rng.integers(0, slack + 1, size=2))
    cells = np.sort(rng.choice(side * side, size=n, replace=False))  # reading order -> instance ids
    jit = rng.integers(0, d.jitter + 1, size=(n, 2))
    rot = rng.integers(0, 4, size=n) if d.rotate else np.zeros(n, dtype=np.int64)
    # Which objects are targets: a uniformly random subset of size `count` of the slots.
    is_target = np.zeros(n, dtype=bool)
    is_target[rng.permutation(n)[:count]] = True

    top = MARGIN + oy + (cells // side) * cell + jit[:, 0]  # [n] glyph bounding-box corners
    left = MARGIN + ox + (cells % side) * cell + jit[:, 1]
    offs = glyph_offsets(d.pair, g)[np.where(is_target, 0, 1), rot]  # [n, P, 2]
    rows = (offs[:, :, 0] + top[:, None]).ravel()
    cols = (offs[:, :, 1] + left[:, None]).ravel()

    ids = np.arange(1, n + 1, dtype=np.int16)
    objects = np.zeros((h, h), dtype=np.int16)
    objects[rows, cols] = np.repeat(ids, offs.shape[1])
    target_ids = np.zeros(n, dtype=np.int16)
    target_ids[is_target] = np.arange(1, count + 1, dtype=np.int16)
    targets = np.concatenate([np.zeros(1, np.int16), target_ids])[objects]

    image = np.empty((h, h, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    image[objects > 0] = INK

    cy, cx = 2 * top + (g - 1), 2 * left + (g - 1)  # doubled centres: exact integers
    nuisance = {
        "ink": int(rows.size),
        "n_objects": int(n),
        "mean_nn_spacing": _nearest_neighbour_mean(cy, cx) / 2.0,
        "centroid_x": float(cx.mean()) / 2.0,
        "centroid_y": float(cy.mean()) / 2.0,
        "grid_shift_x": ox,
        "grid_shift_y": oy,
    }
    target = GLYPH_NAMES[d.pair.split("_")[0]]
    choices = tuple(str(c) for c in range(d.count_min, d.count_max + 1))
    return Sample(
        image=image,
        question=f"How many {target}s are there?",
        answer=str(count),
        choices=choices,
        task="counting",
        difficulty=as_dict(d),
        maps={"targets": targets, "objects": objects},
        info={"markers": [], "nuisance": nuisance, "count": int(count)},
    )


TASK = Task(
    name="counting",
    difficulty=CountingDifficulty,
    levels=LEVELS,
    make=make,
    n_conditions=lambda d: d.count_max - d.count_min + 1,
    binary=False,
)
