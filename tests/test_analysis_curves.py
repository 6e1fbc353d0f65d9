"""analysis/curves.py: learning curves from the CSV logs of runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("curves", ROOT / "analysis" / "curves.py")
curves = importlib.util.module_from_spec(spec)
spec.loader.exec_module(curves)


def _run(tmp_path: Path, name: str, rows: list[str]) -> Path:
    run = tmp_path / name
    (run / "csv" / "version_0").mkdir(parents=True)
    (run / "csv" / "version_0" / "metrics.csv").write_text("\n".join(["epoch,step,train/loss,val/acc", *rows]) + "\n")
    return run


def test_series_skip_empty_cells_and_the_plot_is_written(tmp_path):
    run = _run(tmp_path, "a", ["0,9,0.69,", "0,19,0.5,", "0,19,,0.75", "1,29,0.1,"])
    series = curves.read_series(curves.find_csv(run), ["train/loss", "val/acc"])
    assert series == {"train/loss": ([9, 19, 29], [0.69, 0.5, 0.1]), "val/acc": ([19], [0.75])}
    out = curves.plot([run, _run(tmp_path, "b", ["0,9,0.7,0.5"])], ["train/loss", "val/acc"], tmp_path / "c.png")
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"


def test_unknown_metric_or_missing_log_fails_naming_it(tmp_path):
    run = _run(tmp_path, "a", ["0,9,0.69,"])
    with pytest.raises(SystemExit, match=r"no column val/ac; columns: train/loss, val/acc"):
        curves.main([str(run), "--metrics", "val/ac", "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match=r"empty: no csv/version_\*/metrics.csv"):
        (tmp_path / "empty").mkdir()
        curves.main([str(tmp_path / "empty"), "--out", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()
