"""Torch Dataset wrappers over stimulus sets and interchange folders, and their collate.

Every dataset yields the same item: a dict with `image` (uint8 [3, H, W]), `question`,
`answer`, `choices` (list of str), `label` (index of the answer), `task`, `difficulty`,
`level` (the difficulty level's name, or its knobs), `id`, and `maps` (dict of [H, W]
tensors) when asked for. `collate` batches them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from . import interchange
from .stimuli import TASK_NAMES, Sample, as_dict, generate, get_task, level_name


def item_level(s: Sample) -> str:
    """The name of a sample's difficulty level (its knobs when no level matches)."""
    return level_name(s.task, s.difficulty) if s.task in TASK_NAMES and s.difficulty else "unknown"


def to_item(sid: str, s: Sample, *, level: str | None = None, with_maps: bool = False) -> dict[str, Any]:
    item = {
        "id": sid,
        "image": torch.from_numpy(np.ascontiguousarray(s.image.transpose(2, 0, 1))),  # [3, H, W]
        "question": s.question,
        "answer": s.answer,
        "choices": list(s.choices),
        "label": s.label,
        "task": s.task,
        "difficulty": s.difficulty,
        "level": level if level is not None else item_level(s),
    }
    if with_maps:
        item["maps"] = {k: torch.from_numpy(np.asarray(v)) for k, v in s.maps.items()}
    return item


class StimulusDataset(Dataset):
    """The fixed set (task, seed, difficulty) of `n` samples: item i is `generate(task, seed, i)`.

    Items' `level` is the level named in `difficulty` (a name, or a mapping with `level`),
    else the name of the level the knobs equal, else the knobs themselves.
    """

    def __init__(self, task: str, n: int, *, seed: int = 0, difficulty: Any = None, with_maps: bool = False) -> None:
        if n <= 0:
            raise ValueError(f"StimulusDataset: n must be positive, got {n}")
        self.task, self.n, self.seed, self.with_maps = task, int(n), int(seed), with_maps
        self.difficulty = get_task(task).resolve(difficulty)
        named = difficulty if isinstance(difficulty, str) else (difficulty or {}).get("level") if isinstance(difficulty, dict) else None
        self.level = named or level_name(task, as_dict(self.difficulty))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for a set of {self.n}")
        s = generate(self.task, self.seed, i, self.difficulty)
        return to_item(interchange.sample_id(self.task, self.seed, i), s, level=self.level, with_maps=self.with_maps)


class StimulusStream(IterableDataset):
    """An endless stream of set `seed`, from index `start` on.

    Indices are dealt round-robin over (rank, worker): with R ranks and W workers each,
    worker w of rank r yields start + r*W + w, then + R*W, ... So workers and ranks get
    disjoint index sets, and the stream is the same whatever the worker count's timing.
    """

    def __init__(self, task: str, *, seed: int = 0, difficulty: Any = None, start: int = 0, rank: int = 0,
                 world_size: int = 1, with_maps: bool = False) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"StimulusStream: rank {rank} is not in 0..{world_size - 1}")
        self.task, self.seed, self.start, self.with_maps = task, int(seed), int(start), with_maps
        self.rank, self.world_size = rank, world_size
        self.difficulty = get_task(task).resolve(difficulty)

    def indices(self, worker: int = 0, n_workers: int = 1) -> Iterator[int]:
        i, step = self.start + self.rank * n_workers + worker, self.world_size * n_workers
        while True:
            yield i
            i += step

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for i in self.indices(worker, n_workers):
            s = generate(self.task, self.seed, i, self.difficulty)
            yield to_item(interchange.sample_id(self.task, self.seed, i), s, with_maps=self.with_maps)


class InterchangeDataset(Dataset):
    """An interchange folder (ours or another tool's) as a Dataset.

    All lines are checked on construction; `strict=False` skips bad items, counts them in
    `.skipped` (the reasons, with file and line) and warns.
    """

    def __init__(self, folder: str | os.PathLike, *, strict: bool = True, with_maps: bool = False,
                 verify_checksums: bool = False) -> None:
        self.folder = Path(folder)
        if verify_checksums:
            interchange.verify_manifest(self.folder)
        self.records, self.skipped = interchange.read_records(self.folder, strict=strict)
        self.with_maps = with_maps

    def __len__(self) -> int:
        return len(self.records)

    def groups(self) -> list[tuple[str, str]]:
        """The distinct (task, level) pairs of the folder's items."""
        seen = {}
        for rec in self.records:
            task, diff = rec.get("task", "unknown"), rec.get("difficulty", {})
            seen[(task, level_name(task, diff) if task in TASK_NAMES and diff else "unknown")] = None
        return list(seen)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        s = Sample(
            image=interchange.load_image(self.folder, rec), question=rec["question"], answer=rec["answer"],
            choices=tuple(rec["choices"]), task=rec.get("task", "unknown"), difficulty=rec.get("difficulty", {}),
            maps=interchange.load_maps(self.folder, rec) if self.with_maps else {},
        )
        return to_item(rec["id"], s, with_maps=self.with_maps)


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images [B, 3, H, W] and labels [B]; keep strings, choices and difficulties as lists.

    Maps are stacked per name when every item has them.
    """
    shapes = {tuple(it["image"].shape) for it in items}
    if len(shapes) != 1:
        raise ValueError(f"collate: images of different shapes in one batch: {sorted(shapes)}")
    batch: dict[str, Any] = {
        "image": torch.stack([it["image"] for it in items]),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
    }
    for key in ("id", "question", "answer", "choices", "task", "difficulty", "level"):
        batch[key] = [it[key] for it in items]
    if all("maps" in it for it in items):
        names = set.intersection(*(set(it["maps"]) for it in items))
        batch["maps"] = {k: torch.stack([it["maps"][k] for it in items]) for k in sorted(names)}
    return batch
