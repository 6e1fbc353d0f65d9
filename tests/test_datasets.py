"""Dataset wrappers: fixed sets, endless streams with disjoint reproducible worker/rank shards, collate."""

import itertools

import pytest
import torch
from torch.utils.data import DataLoader

from recurvlm.data.datasets import StimulusDataset, StimulusStream, collate
from recurvlm.data.stimuli import generate


def test_fixed_set_item_is_the_generated_sample():
    ds = StimulusDataset("curve_tracing", 10, seed=4, difficulty="medium")
    s = generate("curve_tracing", 4, 7, "medium")
    item = ds[7]
    assert item["image"].equal(torch.from_numpy(s.image).permute(2, 0, 1))
    assert (item["answer"], item["label"], item["choices"]) == (s.answer, s.label, list(s.choices))
    with pytest.raises(IndexError):
        ds[10]


def _ids(loader, n_batches):
    return [int(i.rsplit("-", 1)[1]) for b in itertools.islice(loader, n_batches) for i in b["id"]]


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_workers_cover_consecutive_indices_disjointly(workers):
    loader = DataLoader(StimulusStream("maze", seed=1, difficulty="easy"), batch_size=4, num_workers=workers,
                        collate_fn=collate)
    ids = _ids(loader, 6)
    assert sorted(ids) == list(range(24))  # no index twice, none skipped
    again = _ids(DataLoader(StimulusStream("maze", seed=1, difficulty="easy"), batch_size=4, num_workers=workers,
                            collate_fn=collate), 6)
    assert again == ids  # reproducible order


def test_stream_ranks_are_disjoint_and_complete():
    a = StimulusStream("maze", rank=0, world_size=2).indices(0, 2)
    b = StimulusStream("maze", rank=1, world_size=2).indices(1, 2)
    ia, ib = list(itertools.islice(a, 50)), list(itertools.islice(b, 50))
    assert not set(ia) & set(ib)
    shards = [list(itertools.islice(StimulusStream("maze", rank=r, world_size=2).indices(w, 2), 25))
              for r in range(2) for w in range(2)]
    assert sorted(sum(shards, [])) == list(range(100))


def test_collate_stacks_tensors_and_keeps_strings():
    ds = StimulusDataset("figure_ground", 3, with_maps=True)
    batch = collate([ds[i] for i in range(3)])
    assert batch["image"].shape[0] == 3 and batch["image"].dtype == torch.uint8
    assert batch["label"].tolist() == [ds[i]["label"] for i in range(3)]
    assert batch["question"] == [ds[i]["question"] for i in range(3)]
    assert all(v.shape[0] == 3 for v in batch["maps"].values())
