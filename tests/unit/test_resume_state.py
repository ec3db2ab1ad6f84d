"""What resuming rests on, in process: the epoch sampler carries on mid-epoch with the same
order, shards evenly, and a scaler state restores across precisions. The SIGTERM and
restart of real jobs is in functional/test_resume.py."""

from __future__ import annotations

import torch

from dogbreed.training.data import EpochSampler


def test_epoch_sampler_resumes_mid_epoch_with_the_same_remaining_order():
    whole = EpochSampler(50, shuffle=True, seed=7)
    whole.set_epoch(3)
    resumed = EpochSampler(50, shuffle=True, seed=7)
    resumed.set_epoch(3, start=20)
    assert list(resumed) == list(whole)[20:]
    whole.set_epoch(4)
    assert list(whole) != list(resumed)  # another epoch, another order


def test_epoch_sampler_shards_cover_the_data_with_equal_step_counts():
    shards = []
    for rank in range(3):
        sampler = EpochSampler(10, shuffle=True, seed=0, rank=rank, world_size=3)
        sampler.set_epoch(1)
        shards.append(list(sampler))
    assert {len(shard) for shard in shards} == {4}
    assert set().union(*shards) == set(range(10))
    evaluation = [list(EpochSampler(10, shuffle=False, rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(evaluation, [])) == list(range(10))  # no padding: exact metrics


def test_an_fp16_job_resumes_a_checkpoint_saved_without_a_loss_scaler():
    """A bf16, fp32 or CPU job saves the state of a disabled GradScaler (empty); an fp16
    job resuming it (amp=auto on a GPU without bf16) must not fail on it."""
    from dogbreed.training.checkpoint import restore_scaler
    saved = torch.amp.GradScaler("cpu", enabled=False).state_dict()
    assert saved == {}
    fp16 = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    try:
        fp16.load_state_dict(saved)
        raise AssertionError("torch accepted an empty scaler state: the guard is moot")
    except RuntimeError:
        pass
    restore_scaler(fp16, saved)
    assert fp16.get_scale() == 1024.0  # a fresh scale, as a new fp16 job starts with
    # And the other way round: a saved fp16 scale carries on.
    trained = torch.amp.GradScaler("cpu", enabled=True, init_scale=256.0)
    restore_scaler(fp16, trained.state_dict())
    assert fp16.get_scale() == 256.0
