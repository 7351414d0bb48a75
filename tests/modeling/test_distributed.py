"""The global-batch sampler: N ranks together see exactly the batches of one process."""

from __future__ import annotations

from chestxr.modeling import GlobalBatchSampler


def test_ranks_partition_each_global_batch():
    single = list(GlobalBatchSampler(23, global_batch=8, seed=3))
    r0 = list(GlobalBatchSampler(23, global_batch=8, rank=0, world=2, seed=3))
    r1 = list(GlobalBatchSampler(23, global_batch=8, rank=1, world=2, seed=3))
    assert len(single) == 3
    for b, a0, a1 in zip(single, r0, r1):
        assert a0 + a1 == b
    assert sorted(i for b in single for i in b) == list(range(23))


def test_epochs_reshuffle_deterministically():
    s = GlobalBatchSampler(10, global_batch=4, seed=1)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(0)
    assert list(s) == e0 and e0 != e1


def test_no_shuffle_is_in_order():
    assert list(GlobalBatchSampler(5, global_batch=2, shuffle=False)) == [[0, 1], [2, 3], [4]]
