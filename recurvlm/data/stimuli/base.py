"""The one sample type, task specs, seeding and class balancing shared by every stimulus task.

Every sample is a pure function of (seed, index, difficulty): `generate` derives one numpy
`Generator` per (seed, index, task) and one class label that is balanced exactly within
each block of `n_conditions` consecutive indices, then hands both to the task's `make`.
Task modules never touch global RNG state.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Geometry that went through a transcendental function (sin, cos, exp) is rounded to this
# grid before rendering: numpy picks SIMD implementations per CPU, which may differ in the
# last ulp, and a quantised coordinate makes "same bytes on any machine" hold in practice.
GEOMETRY_QUANTUM = 1.0 / 1024.0


def quantize(x: np.ndarray | float) -> np.ndarray | float:
    """Round coordinates to the `GEOMETRY_QUANTUM` grid (see the note above)."""
    return np.round(np.asarray(x, dtype=np.float64) / GEOMETRY_QUANTUM) * GEOMETRY_QUANTUM


@dataclass(frozen=True, eq=False)
class Sample:
    """One stimulus: an image, a question about it, its answer, and dense ground truth.

    `info` holds JSON-serialisable facts for analysis and shortcut tests:
    `info["markers"]` is a list of marker centres `(x, y)` in pixels (x = column, y = row,
    pixel centres at integers), and `info["nuisance"]` a dict of scalars that must have
    one distribution for every answer (path length, marker distance, figure size, ...).
    """

    image: np.ndarray  # [H, W, 3] uint8 RGB
    question: str
    answer: str
    choices: tuple[str, ...]
    task: str
    difficulty: dict[str, Any]  # the resolved knobs
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # each [H, W]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        img = self.image
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"{self.task}: image must be uint8 [H, W, 3], got {img.dtype} {img.shape}")
        if self.answer not in self.choices:
            raise ValueError(f"{self.task}: answer {self.answer!r} is not among choices {self.choices}")
        for name, m in self.maps.items():
            if m.shape != img.shape[:2]:
                raise ValueError(f"{self.task}: map {name!r} has shape {m.shape}, image is {img.shape[:2]}")

    @property
    def label(self) -> int:
        """Index of the answer among the choices."""
        return self.choices.index(self.answer)


@dataclass(frozen=True)
class Task:
    """A stimulus task: its knobs, named difficulty levels and sample maker.

    `make(rng, condition, difficulty)` builds one sample. `condition` is drawn by
    `generate`, balanced over `n_conditions(difficulty)` values; for binary tasks it is
    the answer's index in `("no", "yes")`-like choices, decided by the task.
    """

    name: str
    difficulty: type  # a frozen dataclass of typed knobs with defaults
    levels: Mapping[str, Any]  # named presets, ordered easy -> hard
    make: Callable[[np.random.Generator, int, Any], Sample]
    n_conditions: Callable[[Any], int] = lambda d: 2
    binary: bool = True

    def resolve(self, difficulty: Any = None) -> Any:
        """A difficulty instance from None (the default knobs), a level name, a mapping of
        knob overrides (may include `level`), or an instance. Unknown names fail loudly."""
        if difficulty is None:
            return self.difficulty()
        if isinstance(difficulty, self.difficulty):
            return difficulty
        if isinstance(difficulty, str):
            return self.level(difficulty)
        if isinstance(difficulty, Mapping):
            overrides = dict(difficulty)
            base = self.level(overrides.pop("level")) if "level" in overrides else self.difficulty()
            return replace_knobs(base, overrides, where=f"task {self.name!r}")
        raise TypeError(f"task {self.name!r}: difficulty must be None, a level name, a mapping or "
                        f"{self.difficulty.__name__}, got {type(difficulty).__name__}")

    def level(self, name: str) -> Any:
        if name not in self.levels:
            raise KeyError(f"task {self.name!r} has no difficulty level {name!r}; "
                           f"valid levels: {', '.join(self.levels)}")
        return self.levels[name]


def replace_knobs(base: Any, overrides: Mapping[str, Any], *, where: str) -> Any:
    """`dataclasses.replace` with a one-line error naming an unknown knob and the valid ones."""
    names = [f.name for f in dataclasses.fields(base)]
    for key in overrides:
        if key not in names:
            raise KeyError(f"{where}: unknown difficulty knob {key!r}; valid knobs: {', '.join(names)}")
    return dataclasses.replace(base, **overrides)


def _salt(task: str) -> int:
    return zlib.crc32(task.encode("utf-8"))


def _check_seed_index(seed: int, index: int) -> None:
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not (isinstance(index, (int, np.integer)) and index >= 0):
        raise ValueError(f"index must be a non-negative int, got {index!r}")


def sample_rng(seed: int, index: int, task: str) -> np.random.Generator:
    """The sample's private random stream: a pure function of (seed, index, task)."""
    _check_seed_index(seed, index)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(index), _salt(task)])))


def balanced_condition(seed: int, index: int, n: int, task: str) -> int:
    """Condition of sample `index`: every block of `n` consecutive indices holds each of
    the `n` conditions once, in an order drawn per block (so index parity carries nothing)."""
    _check_seed_index(seed, index)
    block, pos = divmod(int(index), n)
    return _block_order(int(seed), block, n, task)[pos]


@functools.lru_cache(maxsize=1024)
def _block_order(seed: int, block: int, n: int, task: str) -> tuple[int, ...]:
    """The order of the `n` conditions in one block (a pure function, cached: consecutive
    indices share a block, and seeding a generator costs more than the rest of the draw)."""
    order = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, block, _salt(task), n, 0xBA1])))
    return tuple(order.permutation(n).tolist())


def generate_sample(task: Task, seed: int, index: int, difficulty: Any = None) -> Sample:
    """Sample `index` of the set `seed` for `task` at `difficulty`."""
    d = task.resolve(difficulty)
    condition = balanced_condition(seed, index, task.n_conditions(d), task.name)
    return task.make(sample_rng(seed, index, task.name), condition, d)


def as_dict(difficulty: Any) -> dict[str, Any]:
    """A difficulty dataclass as a plain, JSON-serialisable dict."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(difficulty).items()}
