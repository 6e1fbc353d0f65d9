"""Linear probes (recurvlm.probes) and the probe heatmaps of analysis/probes.py."""

from __future__ import annotations

import pytest
import torch

from recurvlm.probes import IGNORE, fit_probes, patch_labels, probe_set


def test_patch_labels_follow_each_rule_row_major():
    m = torch.zeros(1, 4, 4)
    m[0, 0, 1] = 1  # one pixel in patch (0, 0)
    m[0, 2:4, 0:2] = 1  # all of patch (1, 0)
    m[0, 0:1, 2:4] = 1  # half of patch (0, 1)
    assert patch_labels(m, 2, "any").tolist() == [[1, 1, 1, 0]]
    assert patch_labels(m, 2, "majority").tolist() == [[0, 1, 1, 0]]
    signed = torch.zeros(1, 4, 4)
    signed[0, 0, 0], signed[0, 3, 3] = 1, -1
    assert patch_labels(signed, 2, "sign").tolist() == [[1, IGNORE, IGNORE, 0]]
    with pytest.raises(ValueError, match="valid: any, majority, sign"):
        patch_labels(m, 2, "all")


def test_probes_decode_a_planted_feature_and_not_shuffled_labels():
    g = torch.Generator().manual_seed(0)
    y_train, y_test = (torch.rand(2000, generator=g) < 0.2).long(), (torch.rand(1000, generator=g) < 0.2).long()

    def feats(y):  # probe 0 sees the label along one direction; probe 1 sees noise only
        x = torch.randn(2, len(y), 16, generator=g)
        x[0, :, 3] += 2.0 * y
        return x

    train_acc, test_acc = fit_probes(feats(y_train), y_train, feats(y_test), y_test)
    assert test_acc[0] > 0.8 and abs(test_acc[1] - 0.5) < 0.06
    assert train_acc.shape == (2,)
    with pytest.raises(ValueError, match="one class only"):
        fit_probes(feats(y_train), torch.zeros_like(y_train), feats(y_test), y_test)


def test_probe_sets_are_seeded_and_target_curve_is_among_curve_patches():
    a = probe_set("curve_tracing", "easy", "target_curve", 4, seed=5000, patch_size=8)
    b = probe_set("curve_tracing", "easy", "target_curve", 4, seed=5000, patch_size=8)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.labels.shape == (4, 64) and set(a.labels.unique().tolist()) == {IGNORE, 0, 1}
    with pytest.raises(KeyError, match=r"task 'maze' has no 'target_curve' map.*its maps: path, reachable"):
        probe_set("maze", "easy", "target_curve", 2, seed=0, patch_size=8)
    with pytest.raises(KeyError, match="valid: figure, boundary, ownership, path, target_curve"):
        probe_set("maze", "easy", "walls", 2, seed=0, patch_size=8)
