"""Shortcut baselines that every stimulus task must defeat (DESIGN.md, "Tasks").

Three cheap classifiers, each trained on one generated set and scored on another (seed + 1):

- `pixel_stats`: logistic regression on global pixel statistics (per-channel means and
  standard deviations, ink count, a 32-bin intensity histogram). Must stay at chance on
  every task.
- `local_cnn`: three 3x3 convolutions (a 7-pixel receptive field), global max- and
  mean-pooling, a linear head. Must stay within 5 points of chance on maze, curve tracing
  and figure-ground; on border ownership global context legitimately decides the answer,
  so it is only reported; counting is exempt (local detectors plus pooling may count).
- `marker_window`: a classifier that sees only 7x7 windows bilinearly sampled exactly
  around each marker (no rounding, so no bias from the marker's sub-pixel offset); the
  better of a logistic regression and gradient-boosted trees. Must stay at chance.

A baseline that beats chance means the generator leaks the answer: find the cue, fix the
generator. `python -m recurvlm.bench shortcuts` runs all of them per task and level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .stimuli import generate, get_task

BASELINES = ("pixel_stats", "local_cnn", "marker_window")


@dataclass(frozen=True)
class Split:
    """A generated set as arrays: images [N, H, W, 3] uint8, labels [N], markers [N, M, 2]."""

    images: np.ndarray
    labels: np.ndarray
    markers: np.ndarray  # (x, y) per marker; M = 0 for tasks without markers
    n_classes: int


@dataclass(frozen=True)
class BaselineResult:
    baseline: str
    task: str
    level: str
    accuracy: float  # on the held-out set
    chance: float  # share of the most frequent answer in the held-out set
    n_test: int
    train_accuracy: float
    detail: str = ""

    @property
    def ci95(self) -> float:
        """Half-width of the normal-approximation 95% interval of `accuracy`."""
        return 1.96 * math.sqrt(max(self.accuracy * (1 - self.accuracy), 1e-12) / self.n_test)

    @property
    def excess(self) -> float:
        """Accuracy above chance, in points (percent)."""
        return 100.0 * (self.accuracy - self.chance)


def make_split(task: str, difficulty: Any, n: int, seed: int) -> Split:
    """Generate samples 0..n-1 of set `seed` as arrays."""
    spec = get_task(task)
    d = spec.resolve(difficulty)
    samples = [generate(task, seed, i, d) for i in range(n)]
    images = np.stack([s.image for s in samples])
    labels = np.array([s.label for s in samples], dtype=np.int64)
    n_markers = {len(s.info.get("markers", [])) for s in samples}
    if len(n_markers) != 1:
        raise ValueError(f"{task}: samples carry different numbers of markers {sorted(n_markers)}")
    markers = np.array([s.info.get("markers", []) for s in samples], dtype=np.float64).reshape(n, n_markers.pop(), 2)
    return Split(images, labels, markers, n_classes=len(samples[0].choices))


def _chance(labels: np.ndarray) -> float:
    return float(np.bincount(labels).max() / len(labels))


# --- pixel statistics -----------------------------------------------------------------


def pixel_statistics(images: np.ndarray) -> np.ndarray:
    """Global statistics per image: channel means and stds, ink count, intensity histogram."""
    x = images.astype(np.float32) / 255.0  # [N, H, W, 3]
    n = len(x)
    means = x.mean(axis=(1, 2))
    stds = x.std(axis=(1, 2))
    gray = x.mean(axis=3).reshape(n, -1)  # [N, H*W]
    # Ink: pixels that differ from the image's most common grey level (its background).
    q = np.rint(gray * 255).astype(np.int64)
    hist256 = np.stack([np.bincount(row, minlength=256) for row in q])
    background = hist256.argmax(axis=1)
    ink = (np.abs(q - background[:, None]) > 8).mean(axis=1, keepdims=True)
    hist32 = hist256.reshape(n, 32, 8).sum(axis=2) / q.shape[1]
    return np.concatenate([means, stds, ink, hist32], axis=1)


def _fit_logistic(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, seed: int) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    clf.fit(xtr, ytr)
    return float(clf.score(xtr, ytr)), float(clf.score(xte, yte))


def pixel_stats(train: Split, test: Split, *, seed: int = 0) -> tuple[float, float, str]:
    tr, te = _fit_logistic(pixel_statistics(train.images), train.labels, pixel_statistics(test.images), test.labels, seed)
    return tr, te, "logistic regression on 41 global statistics"


# --- local CNN ------------------------------------------------------------------------


class LocalCNN(nn.Module):
    """Three 3x3 convolutions (7-pixel receptive field), global max+mean pooling, linear head."""

    def __init__(self, n_classes: int, *, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(2 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, 3, H, W]
        f = self.features(x)  # [B, D, H, W]
        return self.head(torch.cat([f.amax(dim=(2, 3)), f.mean(dim=(2, 3))], dim=1))  # [B, classes]


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5)  # [N, 3, H, W]


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    model.eval()
    pred = torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return float((pred == y).float().mean())


def local_cnn(train: Split, test: Split, *, seed: int = 0, epochs: int = 8, width: int = 16,
              batch_size: int = 64, lr: float = 2e-3) -> tuple[float, float, str]:
    """Train a `LocalCNN` (Adam, fixed epochs, no peeking at the test set)."""
    xtr, ytr = _to_tensor(train.images), torch.from_numpy(train.labels)
    xte, yte = _to_tensor(test.images), torch.from_numpy(test.labels)
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(seed)
        model = LocalCNN(train.n_classes, width=width)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        order = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            model.train()
            perm = torch.randperm(len(xtr), generator=order)
            for i in range(0, len(xtr), batch_size):
                idx = perm[i : i + batch_size]
                loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return _accuracy(model, xtr, ytr), _accuracy(model, xte, yte), f"width {width}, {epochs} epochs"


# --- marker windows -------------------------------------------------------------------


def marker_windows(images: np.ndarray, markers: np.ndarray, *, size: int = 7) -> np.ndarray:
    """Bilinearly sampled `size` x `size` windows centred exactly on each marker.

    images [N, H, W, 3], markers [N, M, 2] as (x, y) -> features [N, M * size * size * 3].
    """
    n, h, w, _ = images.shape
    r = (size - 1) / 2.0
    offs = np.arange(size, dtype=np.float64) - r
    xs = markers[:, :, 0, None, None] + offs[None, None, None, :]  # [N, M, 1, S]
    ys = markers[:, :, 1, None, None] + offs[None, None, :, None]  # [N, M, S, 1]
    xs, ys = np.broadcast_arrays(xs, ys)  # [N, M, S, S]
    x0 = np.clip(np.floor(xs).astype(np.int64), 0, w - 2)
    y0 = np.clip(np.floor(ys).astype(np.int64), 0, h - 2)
    fx = np.clip(xs - x0, 0.0, 1.0)[..., None]
    fy = np.clip(ys - y0, 0.0, 1.0)[..., None]
    b = np.arange(n)[:, None, None, None]
    img = images.astype(np.float32) / 255.0

    def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return img[b, yy, xx]  # [N, M, S, S, 3]

    win = (at(y0, x0) * (1 - fx) * (1 - fy) + at(y0, x0 + 1) * fx * (1 - fy)
           + at(y0 + 1, x0) * (1 - fx) * fy + at(y0 + 1, x0 + 1) * fx * fy)
    return win.reshape(n, -1)


def marker_window(train: Split, test: Split, *, seed: int = 0, size: int = 7) -> tuple[float, float, str]:
    if train.markers.shape[1] == 0:
        raise ValueError("marker_window: this task draws no markers")
    from sklearn.ensemble import HistGradientBoostingClassifier

    xtr, xte = marker_windows(train.images, train.markers, size=size), marker_windows(test.images, test.markers, size=size)
    lr_tr, lr_te = _fit_logistic(xtr, train.labels, xte, test.labels, seed)
    gb = HistGradientBoostingClassifier(max_iter=200, random_state=seed).fit(xtr, train.labels)
    gb_tr, gb_te = float(gb.score(xtr, train.labels)), float(gb.score(xte, test.labels))
    # Report the stronger of the two (a leak detector should err towards finding leaks).
    if gb_te >= lr_te:
        return gb_tr, gb_te, f"gradient-boosted trees on {size}x{size} windows (logistic: {lr_te:.3f})"
    return lr_tr, lr_te, f"logistic regression on {size}x{size} windows (trees: {gb_te:.3f})"


_RUNNERS = {"pixel_stats": pixel_stats, "local_cnn": local_cnn, "marker_window": marker_window}


def run_baselines(task: str, difficulty: Any = None, *, baselines=BASELINES, n_train: int = 4000,
                  n_test: int = 2000, seed: int = 0, level: str | None = None, **cnn_kwargs: Any) -> list[BaselineResult]:
    """Run the named baselines on one (task, difficulty), generating the data once.

    Trains on set `seed` (indices 0..n_train-1), tests on set `seed + 1`. Tasks without
    markers skip `marker_window`.
    """
    for b in baselines:
        if b not in _RUNNERS:
            raise KeyError(f"unknown baseline {b!r}; valid baselines: {', '.join(BASELINES)}")
    train, test = make_split(task, difficulty, n_train, seed), make_split(task, difficulty, n_test, seed + 1)
    name = level if level is not None else (difficulty if isinstance(difficulty, str) else "custom")
    results = []
    for b in baselines:
        if b == "marker_window" and train.markers.shape[1] == 0:
            continue
        kwargs = cnn_kwargs if b == "local_cnn" else {}
        tr, te, detail = _RUNNERS[b](train, test, seed=seed, **kwargs)
        results.append(BaselineResult(b, task, name, te, _chance(test.labels), len(test.labels), tr, detail))
    return results


def pixel_stats_baseline(task: str, difficulty: Any = None, n_train: int = 4000, n_test: int = 2000, seed: int = 0) -> BaselineResult:
    return run_baselines(task, difficulty, baselines=("pixel_stats",), n_train=n_train, n_test=n_test, seed=seed)[0]


def local_cnn_baseline(task: str, difficulty: Any = None, n_train: int = 4000, n_test: int = 2000, seed: int = 0,
                       **cnn_kwargs: Any) -> BaselineResult:
    return run_baselines(task, difficulty, baselines=("local_cnn",), n_train=n_train, n_test=n_test, seed=seed, **cnn_kwargs)[0]


def marker_window_baseline(task: str, difficulty: Any = None, n_train: int = 4000, n_test: int = 2000, seed: int = 0) -> BaselineResult:
    results = run_baselines(task, difficulty, baselines=("marker_window",), n_train=n_train, n_test=n_test, seed=seed)
    if not results:
        raise ValueError(f"marker_window: task {task!r} draws no markers")
    return results[0]
