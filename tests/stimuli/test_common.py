"""Properties every stimulus task must have: determinism, balance, one nuisance distribution
for every answer, no global-statistics shortcut, valid samples, purity (no torch/Lightning/Hydra)."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import ks_2samp

from recurvlm.data.shortcuts import run_baselines
from recurvlm.data.stimuli import TASK_NAMES, generate, get_task

LEVELS = [(t, lv) for t in TASK_NAMES for lv in get_task(t).levels]
BINARY = [(t, lv) for t, lv in LEVELS if get_task(t).binary]


def _digest(s) -> str:
    h = hashlib.sha256(s.image.tobytes())
    for k in sorted(s.maps):
        h.update(k.encode() + np.ascontiguousarray(s.maps[k]).tobytes())
    h.update(json.dumps([s.question, s.answer, list(s.choices), s.info], sort_keys=True).encode())
    return h.hexdigest()


@pytest.mark.parametrize("task, level", LEVELS)
def test_same_triple_same_bytes_and_no_global_rng(task, level):
    np.random.seed(1)
    state = np.random.get_state()[1].copy()
    a = [_digest(generate(task, 5, i, level)) for i in range(6)]
    assert np.array_equal(np.random.get_state()[1], state)  # the global RNG was not touched
    np.random.seed(2)
    assert [_digest(generate(task, 5, i, level)) for i in range(6)] == a
    assert len(set(a)) == 6  # different indices, different samples
    assert _digest(generate(task, 6, 0, level)) != a[0]  # different seeds too


def test_same_bytes_in_a_fresh_process_with_another_hash_seed():
    code = ("import hashlib, sys; from recurvlm.data.stimuli import TASK_NAMES, generate\n"
            "print(' '.join(hashlib.sha256(generate(t, 9, 3, 'hard').image.tobytes()).hexdigest() for t in TASK_NAMES))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    here = [hashlib.sha256(generate(t, 9, 3, "hard").image.tobytes()).hexdigest() for t in TASK_NAMES]
    assert out == here


def test_stimuli_import_without_torch_lightning_or_hydra():
    code = ("import sys; import recurvlm.data.stimuli as st\n"
            "[st.generate(t, 0, 0) for t in st.TASK_NAMES]\n"
            "bad = [m for m in ('torch', 'lightning', 'pytorch_lightning', 'hydra', 'omegaconf') if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


@pytest.mark.parametrize("task, level", LEVELS)
def test_samples_are_well_formed(task, level):
    spec = get_task(task)
    d = spec.resolve(level)
    for i in range(8):
        s = generate(task, 0, i, d)
        assert s.task == task and s.image.shape == (d.image_size, d.image_size, 3)
        assert s.answer in s.choices and isinstance(s.question, str) and s.question.endswith("?")
        json.dumps(s.difficulty), json.dumps(s.info)  # JSON-serialisable
        assert s.difficulty == {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.__dict__.items()}
        for x, y in s.info["markers"]:
            assert 0 <= x <= d.image_size - 1 and 0 <= y <= d.image_size - 1
        assert s.maps, "every task has dense ground truth"


@pytest.mark.parametrize("task, level", LEVELS)
def test_answers_balanced_exactly(task, level):
    spec = get_task(task)
    d = spec.resolve(level)
    k = spec.n_conditions(d)
    answers = [generate(task, 11, i, d).label for i in range(10 * k)]
    counts = np.bincount(answers, minlength=len(generate(task, 11, 0, d).choices))
    present = counts[counts > 0]
    assert len(present) == (2 if spec.binary else k)
    assert present.min() == present.max()


def _groups(task, level, n):
    """Nuisance values grouped by answer (binary), or lowest vs highest answer (counting)."""
    samples = [generate(task, 21, i, level) for i in range(n)]
    labels = np.array([s.label for s in samples])
    lo, hi = (0, 1) if get_task(task).binary else (labels.min(), labels.max())
    keys = samples[0].info["nuisance"].keys()
    return {k: (np.array([s.info["nuisance"][k] for s in samples if s.label == lo], float),
                np.array([s.info["nuisance"][k] for s in samples if s.label == hi], float)) for k in keys}


@pytest.mark.parametrize("task, level", LEVELS)
def test_nuisance_variables_have_one_distribution_for_every_answer(task, level):
    n = 600 if get_task(task).binary else 120 * get_task(task).n_conditions(get_task(task).resolve(level))
    groups = _groups(task, level, n)
    assert groups, f"{task} declares no nuisance variables"
    varying = {k: v for k, v in groups.items() if np.ptp(np.concatenate(v)) > 0}
    # One test per key: Bonferroni keeps the family-wise false alarm rate at 1% per (task, level).
    alpha = 0.01 / max(len(varying), 1)
    for key, (a, b) in varying.items():
        p = ks_2samp(a, b).pvalue
        assert p > alpha, f"{task}/{level}: nuisance {key!r} differs by answer (KS p={p:.2g}, means {a.mean():.3g} vs {b.mean():.3g})"


@pytest.mark.parametrize("task, level", LEVELS)
def test_global_pixel_statistics_stay_at_chance(task, level):
    (r,) = run_baselines(task, level, baselines=("pixel_stats",), n_train=1500, n_test=1000, seed=100)
    assert r.excess <= 5.0, f"{task}/{level}: pixel statistics reach {100 * r.accuracy:.1f}% (chance {100 * r.chance:.1f}%)"


@pytest.mark.parametrize("task", TASK_NAMES)
def test_unknown_knob_and_bad_value_fail_clearly(task):
    spec = get_task(task)
    with pytest.raises(KeyError, match="unknown difficulty knob 'nonsense'; valid knobs: .*image_size"):
        spec.resolve({"nonsense": 1})
    with pytest.raises(ValueError, match="image_size"):
        spec.resolve({"image_size": 3})


@pytest.mark.slow
@pytest.mark.parametrize("task", TASK_NAMES)
def test_local_shortcuts_stay_at_chance_on_the_hardest_level(task):
    """A reduced `python -m recurvlm.bench shortcuts`: the 7-px CNN and the marker window."""
    level = list(get_task(task).levels)[-1]
    results = run_baselines(task, level, baselines=("local_cnn", "marker_window"), n_train=2000, n_test=1000,
                            seed=200, epochs=4)
    for r in results:
        if (task, r.baseline) in {("border_ownership", "local_cnn"), ("counting", "local_cnn")}:
            continue  # legitimately above chance: reported by the bench, not a leak
        assert r.excess <= 5.0, f"{task}/{level}: {r.baseline} reaches {100 * r.accuracy:.1f}% (chance {100 * r.chance:.1f}%)"
