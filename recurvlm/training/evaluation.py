"""Evaluation outputs: metrics.json (overall, per task, per difficulty, with n) and predictions.jsonl."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy and n overall, per task and per (task, level) from per-item records; with
    per-iteration correctness in the records (recurrent models), also `per_iteration`: the
    accuracy after every iteration t = 1..T."""
    def acc(rs: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"accuracy": sum(r["correct"] for r in rs) / len(rs) if rs else float("nan"),
                               "n": len(rs)}
        its = [r["iterations"] for r in rs if r.get("iterations")]
        if its and len(its) == len(rs) and len({len(i) for i in its}) == 1 and len(its[0]) > 1:
            out["per_iteration"] = [sum(col) / len(col) for col in zip(*its)]
        return out

    by_task, by_level = defaultdict(list), defaultdict(list)
    for r in records:
        by_task[r["task"]].append(r)
        by_level[f"{r['task']}/{r['level']}"].append(r)
    return {**acc(records), "per_task": {k: acc(v) for k, v in sorted(by_task.items())},
            "per_difficulty": {k: acc(v) for k, v in sorted(by_level.items())}}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_outputs(records: list[dict[str, Any]], out_dir: str | os.PathLike, **extra: Any) -> dict[str, Any]:
    """Write metrics.json and predictions.jsonl into `out_dir`; returns the metrics."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {**summarize(records), **extra}
    _atomic_write(out / "predictions.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    _atomic_write(out / "metrics.json", json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    return metrics


def format_table(metrics: dict[str, Any]) -> str:
    """A markdown table of per-difficulty accuracy."""
    rows = ["| task/level | accuracy | n |", "|---|---:|---:|"]
    rows += [f"| {k} | {v['accuracy']:.3f} | {v['n']} |" for k, v in metrics["per_difficulty"].items()]
    rows.append(f"| **all** | {metrics['accuracy']:.3f} | {metrics['n']} |")
    return "\n".join(rows)
