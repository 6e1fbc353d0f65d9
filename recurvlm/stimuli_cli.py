"""`recurvlm-stimuli`: write a stimulus set as an interchange folder, and a gallery to look at.

    recurvlm-stimuli task=maze n=1000 seed=0 out=data/maze_hard level=hard
    recurvlm-stimuli task=curve_tracing n=500 seed=1 out=data/ct contour_length=14 distractors=4 maps=true
    recurvlm-stimuli task=figure_ground n=0 out=data/fg gallery=true

Arguments are `key=value`. Besides the options below, any difficulty knob of the task is
accepted (`level=` picks a named preset, knobs override it). An unknown key fails with the
list of valid ones.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import yaml
from PIL import Image, ImageDraw, ImageFont

from .data import interchange
from .data.stimuli import TASK_NAMES, generate, get_task

OPTIONS = {
    "task": "task name",
    "n": "number of samples (0: gallery only)",
    "seed": "set seed (default 0)",
    "out": "output folder",
    "level": "named difficulty preset",
    "start": "first index (default 0)",
    "maps": "also write dense maps (default false)",
    "gallery": "also write gallery.png (default false)",
    "overwrite": "replace a non-empty out folder (default false)",
}


def parse_args(argv: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split `key=value` tokens into CLI options and difficulty knob overrides."""
    opts: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    for tok in argv:
        key, sep, value = tok.partition("=")
        if not sep or not key:
            raise SystemExit(f"recurvlm-stimuli: expected key=value, got {tok!r}")
        raw[key] = yaml.safe_load(value) if value else ""
    if "task" not in raw:
        raise SystemExit(f"recurvlm-stimuli: task= is required; valid tasks: {', '.join(TASK_NAMES)}")
    try:
        task = get_task(str(raw["task"]))
    except KeyError as e:
        raise SystemExit(f"recurvlm-stimuli: {e.args[0]}") from None
    knobs = {f.name: f for f in dataclasses.fields(task.difficulty)}
    overrides: dict[str, Any] = {}
    for key, value in raw.items():
        if key in OPTIONS:
            opts[key] = value
        elif key in knobs:
            default = knobs[key].default
            overrides[key] = tuple(value) if isinstance(value, list) and isinstance(default, tuple) else value
        else:
            valid = ", ".join(list(OPTIONS) + list(knobs))
            raise SystemExit(f"recurvlm-stimuli: unknown key {key!r} for task {task.name!r}; valid keys: {valid}")
    return opts, overrides


def gallery(task_name: str, difficulties: dict[str, Any], path: Path, *, seed: int = 0, per_row: int = 8,
            tile: int = 128) -> Path:
    """A contact sheet: one row per difficulty (its question above it), every tile captioned
    with its index and answer."""
    task = get_task(task_name)
    pad, head_h, cap_h = 6, 18, 16
    rows = []
    for name, d in difficulties.items():
        rows.append((name, [generate(task_name, seed, i, task.resolve(d)) for i in range(per_row)]))
    width = per_row * (tile + pad) + pad
    row_h = head_h + tile + cap_h + pad
    sheet = Image.new("RGB", (width, 28 + len(rows) * row_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font, small = ImageFont.load_default(size=14), ImageFont.load_default(size=12)
    draw.text((pad, 6), f"{task_name} (seed {seed})", fill=(0, 0, 0), font=font)
    for r, (name, samples) in enumerate(rows):
        y = 28 + r * row_h
        draw.text((pad, y), f"{name}: {samples[0].question}", fill=(0, 0, 160), font=small)
        for c, s in enumerate(samples):
            x = pad + c * (tile + pad)
            sheet.paste(Image.fromarray(s.image).resize((tile, tile), Image.NEAREST), (x, y + head_h))
            draw.text((x + 2, y + head_h + tile + 1), f"#{c}: {s.answer}", fill=(0, 0, 0), font=small)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def main(argv: list[str] | None = None) -> None:
    opts, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    task = get_task(str(opts.pop("task")))
    if "out" not in opts:
        raise SystemExit("recurvlm-stimuli: out= is required (the folder to write)")
    out = Path(str(opts["out"]))
    n, seed, start = int(opts.get("n", 1000)), int(opts.get("seed", 0)), int(opts.get("start", 0))
    if n < 0 or seed < 0 or start < 0:
        raise SystemExit(f"recurvlm-stimuli: n, seed and start must be >= 0 (got n={n}, seed={seed}, start={start})")
    spec = dict(overrides)
    if "level" in opts:
        spec["level"] = str(opts["level"])
    try:
        d = task.resolve(spec)
    except (KeyError, ValueError, TypeError) as e:
        raise SystemExit(f"recurvlm-stimuli: {e.args[0] if e.args else e}") from None
    if n > 0:
        samples = ((interchange.sample_id(task.name, seed, i), generate(task.name, seed, i, d)) for i in range(start, start + n))
        try:
            interchange.write_folder(samples, out, maps=bool(opts.get("maps", False)), overwrite=bool(opts.get("overwrite", False)))
        except FileExistsError as e:
            raise SystemExit(f"recurvlm-stimuli: {e}") from None
        print(f"wrote {n} {task.name} samples to {out}")
    if opts.get("gallery", False):
        rows: dict[str, Any] = dict(task.levels)
        if spec:
            rows["this set"] = d
        path = gallery(task.name, rows, out / "gallery.png", seed=seed)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

