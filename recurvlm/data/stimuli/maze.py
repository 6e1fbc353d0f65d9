"""Maze connectivity: are the green start and the red goal cell of a maze connected?

Follows the easy-to-hard maze data of Schwarzschild et al. (2021), "Can you learn an
algorithm? Generalizing from easy to hard problems with recurrent networks" (NeurIPS;
the DeepThinking mazes): corridors white, walls black, start cell green, goal cell red,
the (2 * size + 1)-unit wall/cell grid scaled up by an integer factor.

Construction, the same for both answers up to one choice:

1. A spanning tree of the size x size cell grid (a perfect maze): `generator="dfs"`, the
   iterative recursive backtracker, or `"wilson"`, Wilson's loop-erased random walks (a
   uniform spanning tree). Both are symmetric under the 8 flips/rotations of the square.
2. Start and goal: random distinct cells at Manhattan distance >= size - 1, drawn before the
   answer is known, so the start-goal tree path (length and shape) carries nothing.
3. Exactly one tree edge is closed in both answers (so ink, colours and the number of
   openings are identical): "no" closes an edge ON the start-goal path, "yes" one OFF it.
   Local cues are kept out as follows. Only *eligible* edges are ever cut: the smaller of
   the two pieces the cut leaves has >= `size` cells (closing off a dead end would make a
   walled-in cell that occurs only in "yes" mazes), and the cut wall is >= `marker_gap`
   grid units from both marker cells, so that no RECEPTIVE_FIELD_PX-wide window (9 px,
   more than the 7-px shortcut CNN) holds pixels of the cut and of a marker. Every
   eligible edge has a key: (piece-size bin; its distance to the outer frame, capped
   where a local window stops seeing the frame; the orbit, under the 8 symmetries of the
   square, of the wall together with the full wall pattern of its two cells). The key is
   drawn from the path edges whose key also occurs among eligible off-path edges -- a
   draw that never looks at the answer -- and a new start/goal pair or maze is drawn (same
   rng) when there is none. Then "no" cuts a uniform path edge with that key and "yes" a
   uniform off-path edge with it. So the cell types of the final maze (dead ends, straight
   and turning corridors, junctions, in every orientation, next to the frame or not), the
   piece size (to within a bin of ~1/4) and everything about the maze and markers
   before the cut have one distribution for both answers. (The cut's distance to the markers beyond the gap is
   not matched: "no" cuts lie on the path between them. Telling that apart needs finding
   the cut, which is the task.)
4. `loops` extra walls are opened, uniformly among the walls inside one of the two pieces
   (never between them), in both answers, so the answer stays as constructed.

Maps: "path" (the start-goal route of corridor pixels, cells and openings, in "yes" mazes;
the tree path, which stays open, when there are loops; all False in "no" mazes) and
"reachable" (corridor pixels reachable from the start, both answers). `info` holds the
marker centres, start/goal cells, the cut wall and the loop walls in grid units, and the
nuisance scalars (piece size, path length, start-goal distance, the cut's cell degrees,
pattern orbit and frame distance, the number of dead ends, attempts).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .base import Sample, Task, as_dict

GENERATORS = ("dfs", "wilson")
QUESTION = "Are the green start and the red goal connected?"
CHOICES = ("no", "yes")

# Palette indexed by grid code: 0 wall, 1 corridor, 2 start, 3 goal.
PALETTE = np.array([[0, 0, 0], [255, 255, 255], [0, 200, 0], [230, 0, 0]], dtype=np.uint8)
WALL, OPEN, START, GOAL = 0, 1, 2, 3

# The local CNN shortcut baseline sees 7x7 pixels; no window this wide (a margin over 7) may
# hold a pixel of the cut wall and one of a marker or, unless the pattern is matched, the frame.
RECEPTIVE_FIELD_PX = 9
MAX_ATTEMPTS = 100_000  # valid knobs need ~1-200 on average (tiny mazes most)
PIECE_STEP = 4  # piece-size bins grow by ~1/PIECE_STEP
SG_TRIES = 4  # start/goal pairs tried on one maze before a new maze is drawn

# Cell wall bits: N, E, S, W.
_N, _E, _S, _W = 1, 2, 4, 8
_DIRS = ((-1, 0, _N), (0, 1, _E), (1, 0, _S), (0, -1, _W))


def marker_gap(scale: int) -> int:
    """Smallest Chebyshev distance, in grid units, from a marker cell to the cut wall at `scale`
    px per unit: no `RECEPTIVE_FIELD_PX`-wide window holds pixels of both, and the cut is never
    one of a marker's own walls."""
    return max(2, 1 + -(-(RECEPTIVE_FIELD_PX - 1) // scale))


@dataclass(frozen=True)
class MazeDifficulty:
    """Knobs of the maze task."""

    size: int = 10  # cells per side
    generator: str = "dfs"  # "dfs" (recursive backtracker) or "wilson" (uniform spanning tree)
    loops: int = 0  # extra openings inside either piece (0 = a perfect maze minus one wall)
    image_size: int = 64

    def __post_init__(self) -> None:
        if not (isinstance(self.size, int) and 3 <= self.size <= 30):
            raise ValueError(f"maze: size={self.size!r} is out of range; valid: 3..30")
        if self.generator not in GENERATORS:
            raise ValueError(f"maze: generator={self.generator!r} is not valid; valid: {', '.join(GENERATORS)}")
        max_loops = (self.size - 1) ** 2 // 4
        if not (isinstance(self.loops, int) and 0 <= self.loops <= max_loops):
            raise ValueError(f"maze: loops={self.loops!r} is out of range; valid: 0..{max_loops} "
                             f"((size-1)**2 // 4 for size={self.size})")
        if not (isinstance(self.image_size, int) and 16 <= self.image_size <= 1024):
            raise ValueError(f"maze: image_size={self.image_size!r} is out of range; valid: 16..1024")
        if 2 * self.size + 1 > self.image_size:
            raise ValueError(f"maze: size={self.size} needs a {2 * self.size + 1}-pixel grid, which does not "
                             f"fit image_size={self.image_size}; valid: size <= {(self.image_size - 1) // 2}")
        gap = marker_gap(self.scale)
        if self.size <= gap:  # too few cut walls far enough from both markers
            f = next(f for f in range(1, 64) if marker_gap(f) < self.size)
            raise ValueError(f"maze: size={self.size} is too small for image_size={self.image_size} (the cut wall "
                             f"must stay {gap} grid units from both markers at {self.scale} px per unit); "
                             f"valid: image_size >= {f * (2 * self.size + 1)} for size={self.size}")

    @property
    def scale(self) -> int:
        """Pixels per grid unit (cell or wall): the largest integer factor that fits."""
        return self.image_size // (2 * self.size + 1)


LEVELS: dict[str, MazeDifficulty] = {
    "easy": MazeDifficulty(size=7),  # 15-unit grid at 4 px per unit (60 px)
    "medium": MazeDifficulty(size=10),  # 21 units at 3 px (63 px)
    "hard": MazeDifficulty(size=15),  # 31 units at 2 px (62 px)
}


# --- symmetry orbits of a wall and its two cells --------------------------------------


def _orbit_table() -> tuple[np.ndarray, int]:
    """Orbit id of every (orientation, mask of left/top cell, mask of right/bottom cell)
    under the 8 symmetries of the square (orientation 0: side by side, 1: stacked)."""
    bit_of = {(dr, dc): b for dr, dc, b in _DIRS}
    # The 8 signed permutation matrices (a, b; c, d): rotations and reflections.
    mats = [(1, 0, 0, 1), (0, -1, 1, 0), (-1, 0, 0, -1), (0, 1, -1, 0),
            (1, 0, 0, -1), (-1, 0, 0, 1), (0, 1, 1, 0), (0, -1, -1, 0)]

    def apply(m, v):
        a, b, c, d = m
        return (a * v[0] + b * v[1], c * v[0] + d * v[1])

    key = np.zeros((2, 16, 16), dtype=np.int64)
    for o in range(2):
        pb = (0, 1) if o == 0 else (1, 0)
        for ma in range(16):
            for mb in range(16):
                best = None
                for m in mats:
                    cells = []
                    for pos, mask in (((0, 0), ma), (pb, mb)):
                        dirs = [apply(m, (dr, dc)) for dr, dc, b in _DIRS if mask & b]
                        cells.append((apply(m, pos), sum(bit_of[v] for v in dirs)))
                    cells.sort()
                    (p0, m0), (p1, m1) = cells
                    o2 = 0 if p0[0] == p1[0] else 1
                    k = o2 * 256 + m0 * 16 + m1
                    best = k if best is None else min(best, k)
                key[o, ma, mb] = best
    uniq, dense = np.unique(key, return_inverse=True)
    return dense.reshape(key.shape).astype(np.int64), len(uniq)


_ORBIT, _N_ORBITS = _orbit_table()


# --- per-size geometry (cached) --------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    n: int
    nb_sentinel: np.ndarray  # [N, 4] neighbours (N, E, S, W), N where there is none
    nb_lists: list  # per cell, its neighbours
    wall_id_e: np.ndarray  # [N] id of the wall east of a cell (-1 at the border)
    wall_id_s: np.ndarray  # [N] id of the wall south of a cell (-1 at the border)
    wall_a: np.ndarray  # [n_walls] left/top cell of each inner wall
    wall_b: np.ndarray  # [n_walls] right/bottom cell
    wall_gr: np.ndarray  # [n_walls] grid row of the wall unit
    wall_gc: np.ndarray  # [n_walls] grid column
    wall_cell_dist: np.ndarray  # [N, n_walls] Chebyshev distance (grid units) of wall unit to cell unit
    wall_frame_dist: np.ndarray  # [n_walls] distance (grid units) of the wall unit to the outer frame
    far: list  # per cell, the cells at Manhattan distance >= n - 1 (goal candidates)
    manhattan: np.ndarray  # [N, N]


@lru_cache(maxsize=None)
def _geometry(n: int) -> _Geometry:
    N = n * n
    idx = np.arange(N)
    r, c = idx // n, idx % n
    nb = np.full((N, 4), N, dtype=np.int64)
    nb[:, 0] = np.where(r > 0, idx - n, N)
    nb[:, 1] = np.where(c < n - 1, idx + 1, N)
    nb[:, 2] = np.where(r < n - 1, idx + n, N)
    nb[:, 3] = np.where(c > 0, idx - 1, N)
    nb_lists = [[int(v) for v in row if v < N] for row in nb]
    # Inner walls: first the n*(n-1) between side-by-side cells, then the (n-1)*n between stacked ones.
    wa_h, wa_v = idx[c < n - 1], idx[r < n - 1]
    wall_a = np.concatenate([wa_h, wa_v])
    wall_b = np.concatenate([wa_h + 1, wa_v + n])
    wall_gr = r[wall_a] + r[wall_b] + 1
    wall_gc = c[wall_a] + c[wall_b] + 1
    wall_id_e = np.full(N, -1, dtype=np.int64)
    wall_id_e[wa_h] = np.arange(len(wa_h))
    wall_id_s = np.full(N, -1, dtype=np.int64)
    wall_id_s[wa_v] = len(wa_h) + np.arange(len(wa_v))
    cheb = np.maximum(np.abs(wall_gr[None, :] - (2 * r[:, None] + 1)), np.abs(wall_gc[None, :] - (2 * c[:, None] + 1)))
    manhattan = np.abs(r[:, None] - r[None, :]) + np.abs(c[:, None] - c[None, :])
    far = [np.flatnonzero(row >= n - 1) for row in manhattan]
    frame = np.minimum(np.minimum(wall_gr, wall_gc), np.minimum(2 * n - wall_gr, 2 * n - wall_gc))
    return _Geometry(n, nb, nb_lists, wall_id_e, wall_id_s, wall_a, wall_b, wall_gr, wall_gc,
                     cheb.astype(np.int64), frame.astype(np.int64), far, manhattan)


@lru_cache(maxsize=None)
def _piece_edges(n: int, step: int) -> np.ndarray:
    """Piece-size bin edges: integer geometric steps of ~1/step from n up past n*n/2."""
    edges = [n]
    while edges[-1] <= n * n // 2:
        edges.append(edges[-1] + max(1, edges[-1] // step))
    return np.array(edges, dtype=np.int64)


# --- spanning trees -----------------------------------------------------------------------


def _dfs_tree(g: _Geometry, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Recursive backtracker (iterative): parent of every cell (-1 at the root) and the visit
    order (a preorder). Each cell tries its neighbours in its own random order, which is the
    same as picking a uniform unvisited neighbour at every step."""
    N = g.n * g.n
    keys = rng.random((N + 1, 4))
    order_nb = np.take_along_axis(g.nb_sentinel, np.argsort(keys[:N], axis=1), axis=1).tolist()
    root = int(keys[N, 0] * N)
    visited = bytearray(N + 1)
    visited[N] = 1  # the sentinel "no neighbour" counts as visited
    visited[root] = 1
    parent = [-1] * N
    order = [root]
    cells = [root]  # the DFS stack, with an iterator over each cell's untried neighbours
    its = [iter(order_nb[root])]
    while its:
        for v in its[-1]:
            if not visited[v]:
                visited[v] = 1
                parent[v] = cells[-1]
                order.append(v)
                cells.append(v)
                its.append(iter(order_nb[v]))
                break
        else:
            its.pop()
            cells.pop()
    return parent, order


def _wilson_tree(g: _Geometry, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Wilson's algorithm (loop-erased random walks; a uniform spanning tree): parent of every
    cell (-1 at the root) and a preorder."""
    N = g.n * g.n
    nbl = g.nb_lists
    rand = rng.random(4 * N + 1).tolist()
    root = int(rand[-1] * N)
    k = 0
    in_tree = bytearray(N)
    in_tree[root] = 1
    nxt = [-1] * N
    for s in range(N):
        u = s
        while not in_tree[u]:
            if k == len(rand):
                rand, k = rng.random(4 * N).tolist(), 0
            nb = nbl[u]
            v = nb[int(rand[k] * len(nb))]
            k += 1
            nxt[u] = v  # overwriting the exit erases any loop the walk made
            u = v
        u = s
        while not in_tree[u]:
            in_tree[u] = 1
            u = nxt[u]
    children: list[list[int]] = [[] for _ in range(N)]
    for v in range(N):
        if v != root:
            children[nxt[v]].append(v)
    order, stack = [], [root]
    while stack:
        u = stack.pop()
        order.append(u)
        stack.extend(children[u])
    return nxt, order


_TREES = {"dfs": _dfs_tree, "wilson": _wilson_tree}


# --- the cut ------------------------------------------------------------------------------


@dataclass
class _Tree:
    parent: list
    order: list  # a preorder; edge e joins order[e + 1] to its parent
    sz: list  # subtree sizes
    edge_of: list  # edge index of every non-root cell (its edge to its parent)
    wid: np.ndarray  # [N-1] wall id of each edge
    mask: np.ndarray  # [N] open-wall bits of every cell
    a: np.ndarray  # [N-1] left/top cell of each edge
    b: np.ndarray  # [N-1] right/bottom cell
    local: np.ndarray  # [N-1] orbit of the edge's two-cell wall pattern
    piece: np.ndarray  # [N-1] cells of the smaller piece the edge's removal leaves
    frame: np.ndarray  # [N-1] the wall's distance to the outer frame, capped at the marker gap
    key0: np.ndarray  # [N-1] (piece bin, frame distance, orbit) as one int; -1 where piece < size


def _tree(g: _Geometry, d: MazeDifficulty, rng: np.random.Generator) -> _Tree:
    """A spanning tree and the per-edge facts that do not depend on start and goal."""
    n, N = g.n, g.n * g.n
    parent, order = _TREES[d.generator](g, rng)
    sz = [1] * N  # subtree sizes in one pass over the preorder, backwards
    for v in reversed(order[1:]):
        sz[parent[v]] += sz[v]
    edge_of = [0] * N
    for e, v in enumerate(order[1:]):
        edge_of[v] = e
    child = np.array(order[1:], dtype=np.int64)
    par = np.array([parent[v] for v in order[1:]], dtype=np.int64)
    a = np.minimum(child, par)
    b = np.maximum(child, par)
    vert = (b - a) != 1
    wid = np.where(vert, g.wall_id_s[a], g.wall_id_e[a])
    mask = np.bincount(np.concatenate([a, b]), weights=np.concatenate([np.where(vert, _S, _E), np.where(vert, _N, _W)]),
                       minlength=N).astype(np.int64)
    local = _ORBIT[vert.astype(np.int64), mask[a], mask[b]]
    szc = np.array([sz[v] for v in order[1:]], dtype=np.int64)
    piece = np.minimum(szc, N - szc)
    pbin = np.searchsorted(_piece_edges(n, PIECE_STEP), piece, side="right") - 1
    # The cut's distance to the outer frame, as far as a local window can tell (see marker_gap).
    gap = marker_gap(d.scale)
    frame = np.minimum(g.wall_frame_dist[wid], gap)
    eligible = piece >= n
    if d.loops:
        # Loops open only walls inside a piece: the cut must leave >= `loops` closed walls
        # that do not cross it. A non-tree wall crosses edge e iff exactly one of its cells
        # lies in e's subtree, the preorder run [e + 1, e + 1 + size of the subtree).
        closed = np.ones(len(g.wall_a), dtype=bool)
        closed[wid] = False
        pos = np.empty(N, dtype=np.int64)
        pos[np.array(order, dtype=np.int64)] = np.arange(N)
        pa, pb = pos[g.wall_a[closed]], pos[g.wall_b[closed]]
        lo = np.arange(1, N)[:, None]
        hi = lo + szc[:, None]
        crossing = np.count_nonzero(((pa >= lo) & (pa < hi)) != ((pb >= lo) & (pb < hi)), axis=1)
        eligible &= len(pa) - crossing >= d.loops
    key0 = np.where(eligible, (pbin * (gap + 1) + frame) * _N_ORBITS + local, -1)
    return _Tree(parent, order, sz, edge_of, wid, mask, a, b, local, piece, frame, key0)


def _tree_path(parent: list, s: int, t: int) -> tuple[list, list]:
    """Cells of the tree path s -> t, and its edges named by their child cells."""
    anc = []
    u = s
    while u != -1:
        anc.append(u)
        u = parent[u]
    pos = {v: i for i, v in enumerate(anc)}
    tside = []
    u = t
    while u not in pos:
        tside.append(u)
        u = parent[u]
    i = pos[u]
    return anc[: i + 1] + tside[::-1], anc[:i] + tside


def _build(rng: np.random.Generator, condition: int, d: MazeDifficulty) -> dict:
    """Draw a maze with one cut wall (and loops) for `condition`; returns its description.

    Everything up to the choice of the key is the same function of the rng for both answers,
    so rejections (a new start/goal pair, or a new maze) never depend on the answer."""
    g = _geometry(d.size)
    n, N = d.size, d.size * d.size
    gap = marker_gap(d.scale)
    attempt = 0
    while attempt < MAX_ATTEMPTS:
        tree = _tree(g, d, rng)
        for _ in range(SG_TRIES):
            attempt += 1
            u = rng.random(4).tolist()
            # Start and goal: drawn before the answer is looked at.
            start = int(u[0] * N)
            far = g.far[start]
            goal = int(far[int(u[1] * len(far))])
            path_cells, path_children = _tree_path(tree.parent, start, goal)
            dist = np.minimum(g.wall_cell_dist[start][tree.wid], g.wall_cell_dist[goal][tree.wid])
            key = np.where(dist >= gap, tree.key0, -1)  # key0 is -1 already where the piece is small
            path_edges = [tree.edge_of[v] for v in path_children]
            keyl = key.tolist()
            kp = [keyl[e] for e in path_edges if keyl[e] >= 0]
            off = key.copy()
            off[path_edges] = -1
            koff = set(off.tolist())
            common = [k for k in kp if k in koff]
            if not common:
                continue
            # The key: that of a uniform path edge among those whose key also occurs off the path.
            k = common[int(u[2] * len(common))]
            if condition == 0:
                cands = [e for e in path_edges if keyl[e] == k]
            else:
                cands = np.flatnonzero(off == k).tolist()
            e = cands[int(u[3] * len(cands))]

            # The two pieces: the cut edge's child subtree is a contiguous run of the preorder.
            cut_child = tree.order[e + 1]
            in_b = np.zeros(N, dtype=bool)
            in_b[tree.order[e + 1 : e + 1 + tree.sz[cut_child]]] = True
            open_w = np.delete(tree.wid, e)
            loop_w = np.zeros(0, dtype=np.int64)
            if d.loops:
                closed = np.ones(len(g.wall_a), dtype=bool)
                closed[tree.wid] = False
                inside = np.flatnonzero(closed & (in_b[g.wall_a] == in_b[g.wall_b]))
                assert len(inside) >= d.loops  # by the eligibility rule in _tree
                loop_w = np.sort(rng.choice(inside, size=d.loops, replace=False))
                open_w = np.concatenate([open_w, loop_w])
            ma, mb = int(tree.mask[tree.a[e]]), int(tree.mask[tree.b[e]])
            return dict(
                start=start, goal=goal, path_cells=path_cells, in_b=in_b, open_walls=open_w,
                cut_wall=int(tree.wid[e]), loop_walls=loop_w, piece=int(tree.piece[e]), dist=int(dist[e]),
                pattern=int(tree.local[e]), frame=int(tree.frame[e]),
                degrees=sorted((bin(ma).count("1"), bin(mb).count("1"))),
                path_length=len(path_cells) - 1, attempts=attempt,
            )
    raise RuntimeError(f"maze: no valid maze in {MAX_ATTEMPTS} attempts for {d}")


# --- rendering -----------------------------------------------------------------------------


def grid_geometry(d: MazeDifficulty) -> tuple[int, int]:
    """(scale, offset): grid unit i covers pixels [offset + i*scale, offset + (i+1)*scale) on each axis."""
    return d.scale, (d.image_size - d.scale * (2 * d.size + 1)) // 2


@lru_cache(maxsize=256)
def _difficulty_dict(d: MazeDifficulty) -> dict:
    return as_dict(d)


def make(rng: np.random.Generator, condition: int, d: MazeDifficulty) -> Sample:
    """A maze whose start and goal are connected iff `condition` is 1."""
    if condition not in (0, 1):
        raise ValueError(f"maze: condition={condition!r} is not valid; valid: 0, 1")
    m = _build(rng, condition, d)
    g = _geometry(d.size)
    n, G = d.size, 2 * d.size + 1
    f, off = grid_geometry(d)
    ow = m["open_walls"]
    s, t = m["start"], m["goal"]
    sr, sc, tr, tc = s // n, s % n, t // n, t % n
    # Small grid, one unit per cell or wall: RGB, then "reachable" and "path" as channels 3 and 4.
    small = np.zeros((G, G, 5), dtype=np.uint8)
    small[1::2, 1::2, :3] = PALETTE[OPEN]
    small[g.wall_gr[ow], g.wall_gc[ow], :3] = PALETTE[OPEN]
    small[2 * sr + 1, 2 * sc + 1, :3] = PALETTE[START]
    small[2 * tr + 1, 2 * tc + 1, :3] = PALETTE[GOAL]
    in_b = m["in_b"]
    in_s = in_b if in_b[s] else ~in_b  # the start's piece: all that is reachable from it
    small[1::2, 1::2, 3] = in_s.reshape(n, n)
    rw = ow[in_s[g.wall_a[ow]]]  # open walls inside the start's piece
    small[g.wall_gr[rw], g.wall_gc[rw], 3] = 1
    connected = condition == 1
    if connected:  # the tree path (still open; with loops there may be other routes too)
        pc = np.asarray(m["path_cells"], dtype=np.int64)
        pr, pcc = 2 * (pc // n) + 1, 2 * (pc % n) + 1
        small[pr, pcc, 4] = 1
        small[(pr[1:] + pr[:-1]) // 2, (pcc[1:] + pcc[:-1]) // 2, 4] = 1
    side = f * G
    canvas = np.zeros((d.image_size, d.image_size, 5), dtype=np.uint8)
    canvas[off : off + side, off : off + side] = small.repeat(f, axis=0).repeat(f, axis=1)

    centre = lambda gi: float(off + gi * f + (f - 1) / 2)  # noqa: E731  (pixel centre of grid unit gi)
    cut = m["cut_wall"]
    ca, cb = int(g.wall_a[cut]), int(g.wall_b[cut])
    deg = np.bincount(g.wall_a[ow], minlength=n * n) + np.bincount(g.wall_b[ow], minlength=n * n)
    nuisance = {
        "piece_size": m["piece"],
        "path_length": m["path_length"],
        "start_goal_distance": int(g.manhattan[s, t]),
        "cut_degree_low": m["degrees"][0],
        "cut_degree_high": m["degrees"][1],
        "cut_pattern": m["pattern"],
        "cut_frame_distance": m["frame"],
        "n_dead_ends": int(np.count_nonzero(deg == 1)),
        "attempts": m["attempts"],
    }
    info = {
        "markers": [[centre(2 * sc + 1), centre(2 * sr + 1)], [centre(2 * tc + 1), centre(2 * tr + 1)]],
        "start": [sr, sc],
        "goal": [tr, tc],
        "cut_wall": {"cells": [[ca // n, ca % n], [cb // n, cb % n]],
                     "grid": [int(g.wall_gr[cut]), int(g.wall_gc[cut])],
                     # Chebyshev distance in grid units to the nearer marker cell: >= marker_gap in both
                     # answers, but not matched beyond (shorter in "no" mazes, whose cut is on the path).
                     "marker_distance": m["dist"]},
        "loop_walls": [[int(g.wall_gr[w]), int(g.wall_gc[w])] for w in m["loop_walls"]],
        "scale": f,
        "offset": off,
        "nuisance": nuisance,
    }
    return Sample(
        image=np.ascontiguousarray(canvas[..., :3]), question=QUESTION, answer=CHOICES[condition],
        choices=CHOICES, task="maze", difficulty=dict(_difficulty_dict(d)),
        maps={"path": canvas[..., 4].astype(bool), "reachable": canvas[..., 3].astype(bool)},
        info=info,
    )


TASK = Task(name="maze", difficulty=MazeDifficulty, levels=LEVELS, make=make, n_conditions=lambda d: 2, binary=True)
