"""Procedural stimuli: one module per task, each a pure function of (seed, index, difficulty).

    >>> from recurvlm.data.stimuli import generate
    >>> s = generate("maze", seed=0, index=3, difficulty="hard")
    >>> s.image.shape, s.question, s.answer, s.choices

Pure numpy; importing this package never imports torch, Lightning or Hydra.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Sample, Task, as_dict, generate_sample

TASK_NAMES = ("figure_ground", "border_ownership", "maze", "curve_tracing", "counting")
_TASKS: dict[str, Task] = {}


def get_task(name: str) -> Task:
    """The task spec registered under `name` (one module of this package per task)."""
    if name not in TASK_NAMES:
        raise KeyError(f"unknown task {name!r}; valid tasks: {', '.join(TASK_NAMES)}")
    if name not in _TASKS:
        _TASKS[name] = importlib.import_module(f"{__name__}.{name}").TASK
    return _TASKS[name]


def generate(task: str, seed: int, index: int, difficulty: Any = None) -> Sample:
    """Sample `index` of the set `seed` of `task`; `difficulty` is None (defaults), a level
    name (`"easy"`, ...), a mapping of knob overrides, or the task's difficulty dataclass."""
    return generate_sample(get_task(task), seed, index, difficulty)


def level_name(task: str, difficulty: dict[str, Any]) -> str:
    """The name of the level whose knobs equal `difficulty` (a sample's dict), else a
    compact `knob=value,...` string of the knobs that differ from the task's defaults."""
    key = (task, tuple(sorted((k, repr(v)) for k, v in difficulty.items())))
    if key not in _LEVEL_NAMES:
        spec = get_task(task)
        name = next((n for n, d in spec.levels.items() if as_dict(d) == difficulty), None)
        if name is None:
            default = as_dict(spec.difficulty())
            name = ",".join(f"{k}={v}" for k, v in sorted(difficulty.items()) if default.get(k) != v) or "default"
        _LEVEL_NAMES[key] = name
    return _LEVEL_NAMES[key]


_LEVEL_NAMES: dict[tuple, str] = {}

__all__ = ["TASK_NAMES", "Sample", "Task", "as_dict", "generate", "get_task", "level_name"]
