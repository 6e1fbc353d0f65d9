"""Maze stimuli: ground truth checked on the rendered pixels, not on the generator's tree."""

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from recurvlm.data.stimuli import generate, maze
from recurvlm.data.stimuli.maze import LEVELS, MazeDifficulty

CASES = [*LEVELS.items(),
         ("wilson", MazeDifficulty(size=12, generator="wilson")),
         ("loops", MazeDifficulty(size=10, loops=8)),
         ("wilson_loops", MazeDifficulty(size=8, generator="wilson", loops=4)),
         ("hard128", dataclasses.replace(LEVELS["hard"], image_size=128)),
         ("size3", MazeDifficulty(size=3)),
         ("size30", MazeDifficulty(size=30))]
IDS = [c[0] for c in CASES]
FOUR = ndimage.generate_binary_structure(2, 1)  # 4-connectivity


def layout(d: MazeDifficulty) -> tuple[int, int, int]:
    """(units per side, pixels per unit, offset), from the knobs alone."""
    units = 2 * d.size + 1
    f = d.image_size // units
    return units, f, (d.image_size - f * units) // 2


def read_grid(s, d: MazeDifficulty) -> np.ndarray:
    """The rendered image as a grid of units [G, G, 3], after checking that it is exactly that
    grid scaled up, on black padding."""
    units, f, off = layout(d)
    side = units * f
    img = s.image
    inner = img[off : off + side, off : off + side]
    blocks = inner.reshape(units, f, units, f, 3)
    grid = blocks[:, 0, :, 0]
    assert np.array_equal(np.broadcast_to(grid[:, None, :, None], blocks.shape), blocks), "not a clean upscaled grid"
    pad = np.ones(img.shape[:2], bool)
    pad[off : off + side, off : off + side] = False
    assert not img[pad].any(), "padding is not black"
    return grid


def open_units(grid: np.ndarray) -> np.ndarray:
    return grid.any(axis=2)


def marker_pixel(s, k: int) -> tuple[int, int]:
    x, y = s.info["markers"][k]
    return int(round(y)), int(round(x))


def wall_units(units: int) -> np.ndarray:
    """Inner wall units: one odd and one even coordinate, not on the outer border."""
    i, j = np.indices((units, units))
    inner = (i > 0) & (j > 0) & (i < units - 1) & (j < units - 1)
    return inner & ((i % 2) != (j % 2))


def cell_components(grid: np.ndarray):
    lab, k = ndimage.label(open_units(grid), structure=FOUR)
    return lab, k


@pytest.mark.parametrize("name, d", CASES, ids=IDS)
def test_answer_and_reachable_map_match_a_pixel_flood_fill(name, d):
    for i in range(24):
        s = generate("maze", 3, i, d)
        read_grid(s, d)
        (sy, sx), (gy, gx) = marker_pixel(s, 0), marker_pixel(s, 1)
        assert tuple(s.image[sy, sx]) == tuple(maze.PALETTE[maze.START])
        assert tuple(s.image[gy, gx]) == tuple(maze.PALETTE[maze.GOAL])
        lab, _ = ndimage.label(s.image.any(axis=2), structure=FOUR)
        connected = lab[sy, sx] == lab[gy, gx]
        assert s.answer == ("yes" if connected else "no")
        assert np.array_equal(s.maps["reachable"], lab == lab[sy, sx])


@pytest.mark.parametrize("name, d", CASES, ids=IDS)
def test_markers_sit_at_the_centres_of_the_coloured_cells(name, d):
    for i in range(6):
        s = generate("maze", 4, i, d)
        for k, code in ((0, maze.START), (1, maze.GOAL)):
            ys, xs = np.nonzero(np.all(s.image == maze.PALETTE[code], axis=2))
            assert len(ys) == layout(d)[1] ** 2  # one cell block
            assert s.info["markers"][k] == [xs.mean(), ys.mean()]


@pytest.mark.parametrize("name, d", CASES, ids=IDS)
def test_path_map_is_a_simple_open_path_from_start_to_goal(name, d):
    units, f, off = layout(d)
    seen = set()
    for i in range(24):
        s = generate("maze", 5, i, d)
        path = s.maps["path"]
        seen.add(s.answer)
        if s.answer == "no":
            assert not path.any()
            continue
        assert not (path & ~s.image.any(axis=2)).any(), "path crosses a wall"
        lab, k = ndimage.label(path, structure=FOUR)
        assert k == 1
        assert path[marker_pixel(s, 0)] and path[marker_pixel(s, 1)]
        # On the unit grid: every path unit has two path neighbours, the two ends one.
        g = path[off : off + units * f : f, off : off + units * f : f]
        assert np.array_equal(np.kron(g, np.ones((f, f), bool)), path[off : off + units * f, off : off + units * f])
        nbrs = ndimage.convolve(g.astype(int), np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]]), mode="constant")
        ends = {(2 * r + 1, 2 * c + 1) for r, c in (s.info["start"], s.info["goal"])}
        for r, c in zip(*np.nonzero(g)):
            assert nbrs[r, c] == (1 if (r, c) in ends else 2), f"path unit {(r, c)} is not on a simple path"
    assert seen == {"yes", "no"}


@pytest.mark.parametrize("name, d", CASES, ids=IDS)
def test_one_wall_more_than_a_spanning_tree_and_big_pieces(name, d):
    """Both answers: cells - 2 + loops openings, two pieces of >= size cells each (no walled-in
    dead end), no closed-in cell, and loops only ever inside a piece."""
    units = 2 * d.size + 1
    n_cells = d.size**2
    walls = wall_units(units)
    for i in range(24):
        s = generate("maze", 6, i, d)
        grid = read_grid(s, d)
        op = open_units(grid)
        assert op[1::2, 1::2].all()  # every cell is open (start and goal coloured)
        assert not op[0::2, 0::2].any()  # wall corners never
        assert not op[0].any() and not op[-1].any() and not op[:, 0].any() and not op[:, -1].any()
        n_open = int((op & walls).sum())
        assert n_open == n_cells - 2 + d.loops
        lab, k = cell_components(grid)
        assert k == 2
        cells = lab[1::2, 1::2]
        sizes = np.bincount(cells.ravel())[1:]
        assert sizes.min() >= d.size, f"{s.answer}: a piece of {sizes.min()} cells"
        assert sizes.min() == s.info["nuisance"]["piece_size"]
        # Edges - cells + components = independent cycles = loops (0: both pieces are trees).
        assert n_open - n_cells + 2 == d.loops
        # No cell is closed on all four sides.
        deg = (op[0 : units - 1 : 2, 1::2].astype(int) + op[2::2, 1::2] + op[1::2, 0 : units - 1 : 2] + op[1::2, 2::2])
        assert deg.min() >= 1


@pytest.mark.parametrize("name, d", CASES, ids=IDS)
def test_the_cut_wall_decides_the_answer(name, d):
    """Opening the recorded cut wall joins the two pieces; in "no" mazes it lies on the
    start-goal route (opening it connects them), in "yes" mazes it does not matter for them."""
    for i in range(16):
        s = generate("maze", 7, i, d)
        grid = read_grid(s, d)
        gr, gc = s.info["cut_wall"]["grid"]
        assert not open_units(grid)[gr, gc]
        (r0, c0), (r1, c1) = s.info["cut_wall"]["cells"]
        assert abs(r0 - r1) + abs(c0 - c1) == 1 and (gr, gc) == (r0 + r1 + 1, c0 + c1 + 1)
        lab, _ = cell_components(grid)
        assert lab[2 * r0 + 1, 2 * c0 + 1] != lab[2 * r1 + 1, 2 * c1 + 1]
        op = open_units(grid)
        op[gr, gc] = True
        lab2, k2 = ndimage.label(op, structure=FOUR)
        assert k2 == 1
        (sr, sc), (tr, tc) = s.info["start"], s.info["goal"]
        before = lab[2 * sr + 1, 2 * sc + 1] == lab[2 * tr + 1, 2 * tc + 1]
        assert before == (s.answer == "yes")


@pytest.mark.parametrize("name, d", CASES, ids=IDS)
def test_cut_wall_never_shares_a_local_window_with_a_marker(name, d):
    """No RECEPTIVE_FIELD_PX x RECEPTIVE_FIELD_PX window (>= the 7-px baseline) holds pixels of
    both the cut wall and a marker, and the cut is never one of a marker's own walls."""
    units, f, off = layout(d)
    for i in range(24):
        s = generate("maze", 8, i, d)
        gr, gc = s.info["cut_wall"]["grid"]
        wall = np.zeros(s.image.shape[:2], bool)
        wall[off + gr * f : off + (gr + 1) * f, off + gc * f : off + (gc + 1) * f] = True
        wy, wx = np.nonzero(wall)
        for code in (maze.START, maze.GOAL):
            my, mx = np.nonzero(np.all(s.image == maze.PALETTE[code], axis=2))
            cheb = np.maximum(np.abs(wy[:, None] - my[None]), np.abs(wx[:, None] - mx[None]))
            assert cheb.min() >= maze.RECEPTIVE_FIELD_PX >= 7
        for r, c in (s.info["start"], s.info["goal"]):
            assert max(abs(gr - (2 * r + 1)), abs(gc - (2 * c + 1))) >= 2


@pytest.mark.parametrize("generator", maze.GENERATORS)
@pytest.mark.parametrize("size", [3, 8, 17])
def test_generators_make_spanning_trees(generator, size):
    g = maze._geometry(size)
    rng = np.random.default_rng(size)
    n_cells = size * size
    for _ in range(5):
        parent, order = maze._TREES[generator](g, rng)
        assert sorted(order) == list(range(n_cells))
        assert sum(p == -1 for p in parent) == 1 and parent[order[0]] == -1
        where = {v: i for i, v in enumerate(order)}
        edges = set()
        for v, p in enumerate(parent):
            if p == -1:
                continue
            assert abs(v // size - p // size) + abs(v % size - p % size) == 1  # grid neighbours
            assert where[p] < where[v]  # a preorder: parents first ...
            edges.add((min(v, p), max(v, p)))
        assert len(edges) == n_cells - 1
        # ... and every subtree a contiguous run of it (the cut relies on this).
        sz = [1] * n_cells
        for v in reversed(order[1:]):
            sz[parent[v]] += sz[v]
        for v in order:
            run = set(order[where[v] : where[v] + sz[v]])
            assert all(u == v or parent[u] in run for u in run)
        # Connected: n-1 edges and every cell reaches the root.
        for v in range(n_cells):
            u, steps = v, 0
            while parent[u] != -1:
                u, steps = parent[u], steps + 1
                assert steps < n_cells
            assert u == order[0]


def test_orbit_table_is_invariant_under_the_symmetries_of_the_square():
    """Draw the two-cell pattern on a small unit grid, rotate / flip it, read it back."""
    def draw(vert: int, ma: int, mb: int) -> np.ndarray:
        a = np.zeros((5, 5), bool)
        cells = [(1, 1), (3, 1) if vert else (1, 3)]
        for (r, c), m in zip(cells, (ma, mb)):
            a[r, c] = True
            for bit, (dr, dc) in ((1, (-1, 0)), (2, (0, 1)), (4, (1, 0)), (8, (0, -1))):
                if m & bit:
                    a[r + dr, c + dc] = True
        return a

    def read(a: np.ndarray) -> int:
        (r0, c0), (r1, c1) = [(r, c) for r in (1, 3) for c in (1, 3) if a[r, c]]
        vert = int(r1 != r0)
        masks = []
        for r, c in ((r0, c0), (r1, c1)):
            masks.append(sum(bit for bit, (dr, dc) in ((1, (-1, 0)), (2, (0, 1)), (4, (1, 0)), (8, (0, -1)))
                             if a[r + dr, c + dc]))
        return int(maze._ORBIT[vert, masks[0], masks[1]])

    rng = np.random.default_rng(0)
    for _ in range(200):
        vert = int(rng.integers(2))
        ma, mb = (int(x) for x in rng.integers(16, size=2))
        ma |= 4 if vert else 2  # the shared wall is open in both cells' masks
        mb |= 1 if vert else 8
        a = draw(vert, ma, mb)
        ref = read(a)
        for k in range(4):
            for flip in (False, True):
                b = np.rot90(a, k)
                assert read(np.fliplr(b) if flip else b) == ref
    # Different cell types are different orbits: two dead ends vs two straight corridors.
    assert maze._ORBIT[0, 2, 8] != maze._ORBIT[0, 2 | 8, 8 | 2]


def test_knob_validation_names_the_knob_and_the_valid_range():
    with pytest.raises(ValueError, match=r"size=2 is out of range; valid: 3\.\.30"):
        MazeDifficulty(size=2)
    with pytest.raises(ValueError, match=r"generator='prim' is not valid; valid: dfs, wilson"):
        MazeDifficulty(generator="prim")
    with pytest.raises(ValueError, match=r"loops=17 is out of range; valid: 0\.\.16"):
        MazeDifficulty(size=9, loops=17)
    with pytest.raises(ValueError, match=r"image_size=8 is out of range"):
        MazeDifficulty(image_size=8)
    with pytest.raises(ValueError, match=r"size=20 .*image_size=32"):
        MazeDifficulty(size=20, image_size=32)
    with pytest.raises(ValueError, match=r"size=4 is too small for image_size=18.*valid: image_size >= 36"):
        MazeDifficulty(size=4, image_size=18)
    MazeDifficulty(size=4, image_size=36)  # the suggested fix works


def test_levels_go_from_easy_to_hard_and_fill_the_image():
    sizes = [d.size for d in LEVELS.values()]
    assert list(LEVELS)[:3] == ["easy", "medium", "hard"] and sizes == sorted(sizes)
    for d in LEVELS.values():
        units, f, off = layout(d)
        assert d.image_size == 64 and f >= 2 and units * f >= 56  # readable: >= 2 px per corridor
    # The example from the spec: size 15 at 64 px is scaled by 2.
    assert layout(MazeDifficulty(size=15))[1] == 2


@pytest.mark.parametrize("size, generator", [(4, "dfs"), (6, "wilson"), (10, "dfs")])
def test_the_most_loops_never_join_the_two_pieces(size, generator):
    k = (size - 1) ** 2 // 4  # the most loops allowed
    d = MazeDifficulty(size=size, generator=generator, loops=k)
    walls = wall_units(2 * size + 1)
    for i in range(12):
        s = generate("maze", 9, i, d)
        grid = read_grid(s, d)
        lab, n_pieces = cell_components(grid)
        assert n_pieces == 2 and int((open_units(grid) & walls).sum()) == size**2 - 2 + k
        (sr, sc), (tr, tc) = s.info["start"], s.info["goal"]
        assert (lab[2 * sr + 1, 2 * sc + 1] == lab[2 * tr + 1, 2 * tc + 1]) == (s.answer == "yes")


@pytest.mark.parametrize("name, d", CASES, ids=IDS)
def test_the_answer_changes_only_which_wall_is_cut(name, d):
    """From one rng state, both answers get the same maze, markers, piece-size bin, cut
    pattern and frame distance (so every nuisance has one distribution), and the two images
    differ in exactly two grid units: the two cut walls (plus loops, drawn per piece)."""
    units = 2 * d.size + 1
    for i in range(12):
        s0 = maze.make(np.random.default_rng([i, 77]), 0, d)
        s1 = maze.make(np.random.default_rng([i, 77]), 1, d)
        assert (s0.answer, s1.answer) == ("no", "yes")
        n0, n1 = s0.info["nuisance"], s1.info["nuisance"]
        for key in ("path_length", "start_goal_distance", "cut_degree_low", "cut_degree_high", "cut_pattern",
                    "cut_frame_distance", "attempts"):
            assert n0[key] == n1[key], key
        edges = maze._piece_edges(d.size, maze.PIECE_STEP)
        assert np.searchsorted(edges, n0["piece_size"], "right") == np.searchsorted(edges, n1["piece_size"], "right")
        assert s0.info["start"] == s1.info["start"] and s0.info["goal"] == s1.info["goal"]
        assert s0.info["markers"] == s1.info["markers"]
        g0, g1 = open_units(read_grid(s0, d)), open_units(read_grid(s1, d))
        if d.loops == 0:
            diff = np.argwhere(g0 != g1)
            assert len(diff) == 2 and set(map(tuple, diff)) == {tuple(s0.info["cut_wall"]["grid"]),
                                                                  tuple(s1.info["cut_wall"]["grid"])}
        assert g0.sum() == g1.sum() and units == g0.shape[0]
