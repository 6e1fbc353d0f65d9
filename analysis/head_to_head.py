"""Redraw the head-to-head figures and table from a finished comparison's results.csv.

    python analysis/head_to_head.py outputs/head_to_head/cpu/results.csv --out redrawn/

`python -m recurvlm.experiments.head_to_head` (or `recurvlm-figures fig=head_to_head`) runs
the comparison and writes results.csv (one row per task, model, seed, level and test-time
iteration), table.md and these same figures; this script draws them again from the CSV
alone: accuracy_vs_difficulty.{png,pdf} and accuracy_vs_iterations.{png,pdf} (mean and 95%
t-interval over seeds) and the markdown table.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

INTS = ("seed", "iteration", "train_iterations", "n", "params", "flops")


def read_results(path: Path) -> list[dict]:
    if not path.is_file():
        raise SystemExit(f"head_to_head: {path} not found (run python -m recurvlm.experiments.head_to_head first)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [k for k in (*INTS, "task", "model", "level", "accuracy") if rows and k not in rows[0]]
    if not rows or missing:
        raise SystemExit(f"head_to_head: {path}: no rows or missing columns {', '.join(missing)}")
    for r in rows:
        for k in INTS:
            r[k] = int(r[k])
        r["accuracy"] = float(r["accuracy"])
    return rows


def main(argv: list[str] | None = None) -> None:
    from recurvlm.data.stimuli import get_task
    from recurvlm.experiments.head_to_head import figures, table

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, help="results.csv of a head-to-head run")
    p.add_argument("--out", type=Path, default=Path("head_to_head"))
    a = p.parse_args(argv)
    rows = read_results(a.results)
    order = list(get_task(rows[0]["task"]).levels)
    levels = sorted({r["level"] for r in rows}, key=order.index)
    a.out.mkdir(parents=True, exist_ok=True)
    text = table(rows, levels)
    (a.out / "table.md").write_text(text + "\n")
    print(text)
    for path in figures(rows, levels, a.out):
        print(path)


if __name__ == "__main__":
    main()
