"""The interchange folder: write any stimulus set to disk, read any such folder back.

    <folder>/annotations.jsonl   one JSON object a line: id, image, question, answer, choices,
                                 task, difficulty (+ markers, maps when written here)
    <folder>/images/<id>.png
    <folder>/maps/<id>.npz       dense ground truth, when asked for
    <folder>/manifest.sha256     `sha256sum -c` format, every file above

Folders from other tools need only `id`, `image`, `question`, `answer`, `choices`. Writing is
atomic (a temporary sibling folder renamed into place), so a failed export leaves nothing
half-written. Reading checks every line; a bad item raises an error naming the file and
line, or with `strict=False` is skipped, counted in `.skipped` and warned about.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .stimuli import Sample

REQUIRED_KEYS = ("id", "image", "question", "answer", "choices")
ANNOTATIONS = "annotations.jsonl"
MANIFEST = "manifest.sha256"


class InterchangeError(ValueError):
    """A bad interchange folder or item; the message names the file (and line)."""


def sample_id(task: str, seed: int, index: int) -> str:
    return f"{task}-s{seed}-{index:07d}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_folder(samples: Iterable[tuple[str, Sample]], out: str | os.PathLike, *, maps: bool = False,
                 overwrite: bool = False) -> Path:
    """Write `(id, sample)` pairs as an interchange folder at `out`; returns its path.

    Everything is written into a temporary sibling first and renamed into place at the end.
    An existing non-empty `out` is an error unless `overwrite=True`.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: folder is not empty (pass overwrite=true to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        if maps:
            (tmp / "maps").mkdir()
        files: list[str] = []
        with open(tmp / ANNOTATIONS, "w", encoding="utf-8") as ann:
            for sid, s in samples:
                image_rel = f"images/{sid}.png"
                Image.fromarray(s.image).save(tmp / image_rel, optimize=False, compress_level=6)
                files.append(image_rel)
                record: dict[str, Any] = {
                    "id": sid, "image": image_rel, "question": s.question, "answer": s.answer,
                    "choices": list(s.choices), "task": s.task, "difficulty": s.difficulty,
                    "markers": s.info.get("markers", []),
                }
                if maps and s.maps:
                    map_rel = f"maps/{sid}.npz"
                    np.savez_compressed(tmp / map_rel, **s.maps)
                    record["maps"] = map_rel
                    files.append(map_rel)
                ann.write(json.dumps(record, sort_keys=True) + "\n")
        files.append(ANNOTATIONS)
        (tmp / MANIFEST).write_text("".join(f"{_sha256(tmp / f)}  {f}\n" for f in sorted(files)))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def verify_manifest(folder: str | os.PathLike) -> None:
    """Check every file listed in `manifest.sha256`; raise naming the first mismatch."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise InterchangeError(f"{manifest}: no checksum manifest")
    for lineno, line in enumerate(manifest.read_text().splitlines(), 1):
        digest, _, rel = line.partition("  ")
        path = folder / rel
        if not path.is_file():
            raise InterchangeError(f"{manifest}:{lineno}: {rel} is missing")
        if _sha256(path) != digest:
            raise InterchangeError(f"{manifest}:{lineno}: checksum mismatch for {rel}")


def _check_record(rec: Any, folder: Path) -> str | None:
    """Why `rec` is not a usable item, or None if it is."""
    if not isinstance(rec, dict):
        return f"expected a JSON object, got {type(rec).__name__}"
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    if not isinstance(rec["choices"], list) or not rec["choices"] or not all(isinstance(c, str) for c in rec["choices"]):
        return "'choices' must be a non-empty list of strings"
    if rec["answer"] not in rec["choices"]:
        return f"answer {rec['answer']!r} is not among choices {rec['choices']}"
    if not isinstance(rec["image"], str):
        return "'image' must be a path relative to the folder"
    image = (folder / rec["image"]).resolve()
    if folder.resolve() not in image.parents:
        return f"image {rec['image']!r} lies outside the folder"
    if not image.is_file():
        return f"image {rec['image']} is missing"
    try:
        with Image.open(image) as im:
            im.verify()
    except Exception as e:  # PIL raises many types for corrupt files
        return f"image {rec['image']} is unreadable ({type(e).__name__}: {e})"
    return None


def read_records(folder: str | os.PathLike, *, strict: bool = True) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse and check `annotations.jsonl`: (good records, reasons for skipped lines).

    strict: the first bad line raises `InterchangeError` naming file and line.
    """
    folder = Path(folder)
    ann = folder / ANNOTATIONS
    if not ann.is_file():
        raise InterchangeError(f"{ann}: not found (an interchange folder needs {ANNOTATIONS})")
    records, skipped, seen = [], [], set()
    with open(ann, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                why = f"malformed JSON ({e.msg})"
            else:
                why = _check_record(rec, folder)
                if why is None and rec["id"] in seen:
                    why = f"duplicate id {rec['id']!r}"
            if why is not None:
                if strict:
                    raise InterchangeError(f"{ann}:{lineno}: {why}")
                skipped.append(f"{ann}:{lineno}: {why}")
                continue
            seen.add(rec["id"])
            records.append(rec)
    if skipped:
        warnings.warn(f"{ann}: skipped {len(skipped)} bad item(s); first: {skipped[0]}", stacklevel=2)
    return records, skipped


def load_image(folder: Path, rec: dict[str, Any]) -> np.ndarray:
    """An item's image as uint8 [H, W, 3]."""
    with Image.open(folder / rec["image"]) as im:
        return np.asarray(im.convert("RGB"))


def load_maps(folder: Path, rec: dict[str, Any]) -> dict[str, np.ndarray]:
    if "maps" not in rec:
        return {}
    with np.load(folder / rec["maps"], allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def iter_samples(folder: str | os.PathLike, *, strict: bool = True) -> Iterator[tuple[str, Sample]]:
    """Read a folder back as `(id, Sample)` pairs (maps included when present)."""
    folder = Path(folder)
    records, _ = read_records(folder, strict=strict)
    for rec in records:
        yield rec["id"], Sample(
            image=load_image(folder, rec), question=rec["question"], answer=rec["answer"],
            choices=tuple(rec["choices"]), task=rec.get("task", "unknown"),
            difficulty=rec.get("difficulty", {}), maps=load_maps(folder, rec),
            info={"markers": rec.get("markers", [])},
        )
