"""Lightning DataModule over stimulus sets and interchange folders, with a tokenizing collate.

Sets are fixed and named by seed: the training set is the run's `seed`, validation and
test sets have their own fixed seeds, so every run of a sweep is scored on the same items
and no evaluation item is ever trained on. The training order is a pure function of
(seed, epoch) (`EpochShuffle`), so a resumed run sees the data a straight run would.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from ..models.tokenizer import Tokenizer
from .datasets import InterchangeDataset, StimulusDataset, collate
from .stimuli import TASK_NAMES, get_task


def choice_texts(question: str, choices: Sequence[str]) -> list[str]:
    """The texts a matching model scores: "<question> <answer>" for every choice."""
    return [f"{question} {c}" for c in choices]


def check_prompt(prompt: str | None) -> str | None:
    """A prompt template must hold `{question}` exactly once (model.prompt)."""
    if prompt is not None and prompt.count("{question}") != 1:
        raise ValueError(f"model.prompt={prompt!r} must contain {{question}} exactly once")
    return prompt


class ChoiceCollate:
    """`collate`, plus token ids of every choice text: choice_ids / choice_mask [B, K, L]
    and choice_valid [B, K] (K = the most choices in the batch; shorter lists are padded),
    and of the question alone (the recurrent variant's query): question_ids / question_mask [B, L].

    With `dense_maps` (task -> map name), the targets of the optional dense loss: dense_maps
    [B, H, W] (bool; all False for items of a task without one) and dense_valid [B]; other
    maps are dropped.

    `prompt`: a template the model reads every question in (model.prompt, e.g. LLaVA-1.5's
    "USER: <image>\n{question} ASSISTANT:"); the choice texts are then "<prompt> <answer>"
    and the question ids the prompt's. None: the bare question."""

    def __init__(self, tokenizer: Tokenizer, context_length: int,
                 dense_maps: Mapping[str, str] | None = None, prompt: str | None = None) -> None:
        self.tokenizer, self.context_length = tokenizer, context_length
        self.dense_maps = dict(dense_maps or {})
        self.prompt = check_prompt(prompt)

    def _dense(self, items: list[dict[str, Any]]) -> tuple[Tensor, Tensor]:
        maps, valid = [], []
        for it in items:
            name = self.dense_maps.get(it["task"]) if "maps" in it else None  # folder items carry none
            have = it.get("maps", {})
            if name is not None and name not in have:
                raise KeyError(f"data.dense_maps.{it['task']}={name!r} is not a map of that task; "
                               f"valid: {', '.join(sorted(have)) or '(the item has no maps)'}")
            maps.append(have[name].bool() if name is not None else torch.zeros(it["image"].shape[1:], dtype=torch.bool))
            valid.append(name is not None)
        return torch.stack(maps), torch.tensor(valid)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        dense = self._dense(items) if self.dense_maps else None
        batch = collate([{k: v for k, v in it.items() if k != "maps"} for it in items] if dense else items)
        if dense is not None:
            batch["dense_maps"], batch["dense_valid"] = dense
        k = max(len(c) for c in batch["choices"])
        texts, valid = [], torch.zeros(len(items), k, dtype=torch.bool)
        questions = [self.prompt.replace("{question}", q) if self.prompt else q for q in batch["question"]]
        for i, (q, choices) in enumerate(zip(questions, batch["choices"])):
            texts += choice_texts(q, choices) + [""] * (k - len(choices))
            valid[i, : len(choices)] = True
        ids, mask = self.tokenizer.encode(texts, context_length=self.context_length)
        batch["choice_ids"] = ids.view(len(items), k, -1)
        batch["choice_mask"] = mask.view(len(items), k, -1)
        batch["choice_valid"] = valid
        batch["question_ids"], batch["question_mask"] = self.tokenizer.encode(questions,
                                                                              context_length=self.context_length)
        return batch


class EpochShuffle(Sampler[int]):
    """A permutation of range(n) drawn from (seed, epoch) alone; Lightning calls set_epoch."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def _check_tasks(tasks: Sequence[str], levels: Sequence[str], where: str) -> None:
    for t in tasks:
        if t not in TASK_NAMES:
            raise KeyError(f"{where}: unknown task {t!r}; valid tasks: {', '.join(TASK_NAMES)}")
        for lv in levels:
            get_task(t).level(lv)  # raises naming the valid levels


class StimulusDataModule(L.LightningDataModule):
    """Train on generated sets of `tasks` at `train_levels`; validate and test on every
    (task, level) of `eval_levels`, and on any interchange `eval_folders`.

    `difficulty` maps a task name to knob overrides applied on top of every level (for
    instance `{maze: {image_size: 128}}`); `image_size`, when set, overrides every task's.
    """

    def __init__(self, *, tasks: Sequence[str], tokenizer: Tokenizer, context_length: int,
                 train_levels: Sequence[str] = ("easy",), eval_levels: Sequence[str] = ("easy", "medium", "hard"),
                 difficulty: Mapping[str, Mapping[str, Any]] | None = None, image_size: int | None = None,
                 n_train: int = 2000, n_val: int = 200, n_test: int = 500, seed: int = 0, val_seed: int = 1000,
                 test_seed: int = 2000, eval_folders: Sequence[str] = (), batch_size: int = 32,
                 num_workers: int = 0, dense_maps: Mapping[str, str] | None = None,
                 prompt: str | None = None) -> None:
        super().__init__()
        tasks, train_levels, eval_levels = list(tasks), list(train_levels), list(eval_levels)
        _check_tasks(tasks, train_levels + eval_levels, "data.tasks")
        if not tasks and not eval_folders:
            raise ValueError("data: give at least one task (data.tasks) or folder (data.eval_folders)")
        self.tasks, self.train_levels, self.eval_levels = tasks, train_levels, eval_levels
        self.overrides = {t: dict((difficulty or {}).get(t, {})) for t in tasks}
        if image_size is not None:
            for t in tasks:
                self.overrides[t]["image_size"] = image_size
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.seed, self.val_seed, self.test_seed = seed, val_seed, test_seed
        self.eval_folders = list(eval_folders)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.dense_maps = dict(dense_maps or {})
        for t in self.dense_maps:
            if t not in TASK_NAMES:
                raise KeyError(f"data.dense_maps: unknown task {t!r}; valid tasks: {', '.join(TASK_NAMES)}")
        self.collate = ChoiceCollate(tokenizer, context_length, self.dense_maps, prompt)

    def _set(self, task: str, level: str, n: int, seed: int) -> StimulusDataset:
        return StimulusDataset(task, n, seed=seed, difficulty={"level": level, **self.overrides[task]},
                               with_maps=task in self.dense_maps)

    def _eval_sets(self, n: int, seed: int) -> list[Dataset]:
        sets: list[Dataset] = [self._set(t, lv, n, seed) for t in self.tasks for lv in self.eval_levels]
        return sets + [InterchangeDataset(f) for f in self.eval_folders]

    def setup(self, stage: str | None = None) -> None:
        if self.tasks:
            # Each (task, level) gets its own training seed so that levels are independent sets.
            self.train_set = ConcatDataset([self._set(t, lv, self.n_train, self.seed * 100 + j)
                                            for t in self.tasks for j, lv in enumerate(self.train_levels)])
        self.val_set = ConcatDataset(self._eval_sets(self.n_val, self.val_seed))
        self.test_set = ConcatDataset(self._eval_sets(self.n_test, self.test_seed))

    def eval_groups(self) -> list[tuple[str, str]]:
        """The (task, level) groups that validation and test report accuracy for."""
        groups = [(t, lv) for t in self.tasks for lv in self.eval_levels]
        for f in self.eval_folders:
            groups += InterchangeDataset(f).groups()
        return groups

    def _loader(self, ds: Dataset, sampler: Sampler | None = None) -> DataLoader:
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          collate_fn=self.collate, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, EpochShuffle(len(self.train_set), self.seed))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)


class FolderDataModule(L.LightningDataModule):
    """Evaluation on one interchange folder (`recurvlm-eval data.path=<folder>`)."""

    def __init__(self, *, path: str, tokenizer: Tokenizer, context_length: int, strict: bool = True,
                 batch_size: int = 64, num_workers: int = 0, prompt: str | None = None) -> None:
        super().__init__()
        self.path, self.strict = path, strict
        self.batch_size, self.num_workers = batch_size, num_workers
        self.collate = ChoiceCollate(tokenizer, context_length, prompt=prompt)

    def setup(self, stage: str | None = None) -> None:
        self.test_set = InterchangeDataset(self.path, strict=self.strict)

    def eval_groups(self) -> list[tuple[str, str]]:
        return self.test_set.groups()

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.batch_size, num_workers=self.num_workers,
                          collate_fn=self.collate)
