"""`recurvlm-stimuli`: writes a readable set and a gallery; bad keys fail with the valid ones."""

import pytest
from PIL import Image

from recurvlm.data.datasets import InterchangeDataset
from recurvlm.stimuli_cli import main


def test_writes_set_with_knob_override_and_gallery(tmp_path):
    out = tmp_path / "maze"
    main(["task=maze", "n=12", "seed=2", f"out={out}", "level=medium", "size=6", "maps=true", "gallery=true"])
    ds = InterchangeDataset(out, verify_checksums=True, with_maps=True)
    assert len(ds) == 12
    assert all(ds[i]["difficulty"]["size"] == 6 for i in range(12))
    assert "path" in ds[0]["maps"]
    with Image.open(out / "gallery.png") as g:
        assert g.size[0] > 500 and g.size[1] > 4 * 128  # one row per level plus this set


@pytest.mark.parametrize("args, message", [
    (["task=mazes", "out=x"], "unknown task 'mazes'; valid tasks: figure_ground, border_ownership, maze"),
    (["task=maze", "out=x", "colour=red"], "unknown key 'colour' for task 'maze'; valid keys: task, n, seed"),
    (["task=maze", "out=x", "level=insane"], "no difficulty level 'insane'; valid levels: easy, medium, hard"),
    (["task=maze", "n=3"], "out= is required"),
    (["maze"], "expected key=value"),
])
def test_bad_arguments_fail_with_one_clear_line(args, message, capsys):
    with pytest.raises(SystemExit, match=message):
        main(args)
