"""Rows balanced across processes by tokens before the update (issue 15): every process keeps its row count,
every optimizer step its rows, and the update is the one of the unbalanced run (2 processes, gloo)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from mm_gmpo.algorithms import get_policy_loss
from mm_gmpo.models import load_model, load_processor
from mm_gmpo.rollout.batching import pad_token_id
from mm_gmpo.testing.batches import assert_same_update, run_update_round, sample_train_batch
from mm_gmpo.trainer.actor import Actor
from mm_gmpo.trainer.balance import balance_rows, row_tokens, swap_plan
from mm_gmpo.trainer.batch import TrainBatch
from mm_gmpo.trainer.dist import DistContext, free_port
from mm_gmpo.trainer.engine import TorchUpdater
from mm_gmpo.trainer.policy import PolicyLogprobs
from mm_gmpo.trainer.update import UpdateSettings


def test_swap_plan_by_hand():
    # loads 100 against 10: swapping 60 for 5 leaves 45 / 65, swapping 40 for 5 leaves 65 / 45; 50 for 5: 55 / 55
    slots = swap_plan([[50, 40, 10], [5, 3, 2]])
    assert sorted(slots[0]) == [(0, 1), (0, 2), (1, 0)] and sorted(slots[1]) == [(0, 0), (1, 1), (1, 2)]
    assert swap_plan([[4, 4], [4, 4]]) == [[(0, 0), (0, 1)], [(1, 0), (1, 1)]]  # balanced: nothing moves


def test_swap_plan_evens_a_long_tail_over_8_processes():
    rng = random.Random(0)
    lengths = [[min(4000, round(500 * math.exp(rng.gauss(0, 0.85)))) for _ in range(16)] for _ in range(8)]
    slots = swap_plan(lengths)
    assert [len(s) for s in slots] == [16] * 8  # row counts kept
    assert sorted(x for s in slots for x in s) == sorted((p, i) for p in range(8) for i in range(16))
    loads = [sum(lengths[p][i] for p, i in s) for s in slots]
    mean = sum(loads) / 8
    before = max(sum(x) for x in lengths) / mean
    after = max(loads) / mean
    assert before > 1.2 and after < 1.02, (before, after)
    moved = sum(p != dest for dest, s in enumerate(slots) for p, _ in s)
    assert moved < 0.5 * 8 * 16  # most rows stay home


def _worker(rank: int, world: int, port: int, folder: str, out: str, balance: bool) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch_dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    ctx = DistContext(rank=rank, world_size=world)
    try:
        model, processor, batch, settings = _setup(folder)
        share = batch.num_rows // world
        mine = batch.select(list(range(rank * share, (rank + 1) * share)))
        rows, advantages, metrics = mine.rollout, mine.advantages, {}
        if balance:
            rows, advantages, metrics = balance_rows(ctx, rows, advantages, 2, pad_token_id(processor))
        updater = TorchUpdater(
            ctx, PolicyLogprobs(model), lr=1e-3, betas=[0.9, 0.95], weight_decay=0.0, grad_clip=0.0, warmup=0
        )
        actor = Actor(updater, get_policy_loss("gmpo"), settings, ctx=ctx)
        old = actor.logprobs(rows)
        steps = actor.update(TrainBatch(rows, advantages, old, None))
        groups = sorted(int(g) for g in rows.group_index)
        result = {"steps": steps, "metrics": metrics, "tokens": sum(row_tokens(rows)), "groups": groups}
        if rank == 0:
            result["params"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


def _setup(folder: str):
    processor = load_processor(folder, min_pixels=3136, max_pixels=12544)
    batch = sample_train_batch(processor, with_images=True)
    # 12 rows: rank 0's six hold the long responses, rank 1's the short ones (a long tail on one process)
    batch = batch.select([2, 5, 2, 5, 1, 4, 0, 3, 0, 3, 1, 4])
    settings = UpdateSettings(
        temperature=1.0, chunk_size=512, micro_batch_size=2, updates_per_round=2, sequences_per_step=6
    )
    return load_model(folder, "float32"), processor, batch, settings


def _run(tmp: Path, folder: Path, balance: bool) -> list[dict]:
    out = tmp / ("balanced" if balance else "plain")
    out.mkdir()
    mp.spawn(_worker, args=(2, free_port(), str(folder), str(out), balance), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_balanced_update_equals_unbalanced_and_one_process(tiny_vl_dir, tmp_path):
    plain = _run(tmp_path, tiny_vl_dir, balance=False)
    balanced = _run(tmp_path, tiny_vl_dir, balance=True)
    before = [r["tokens"] for r in plain]
    after = [r["tokens"] for r in balanced]
    assert sum(before) == sum(after) and abs(after[0] - after[1]) < abs(before[0] - before[1]) / 2, (before, after)
    assert balanced[0]["metrics"]["perf/token_imbalance_after"] < balanced[0]["metrics"]["perf/token_imbalance_before"]
    assert balanced[0]["groups"] != plain[0]["groups"]  # rows (with their images) did move

    model, _, batch, settings = _setup(str(tiny_vl_dir))  # the same round on one process
    _, params, one = run_update_round(model, batch, settings)
    assert_same_update(plain[0]["params"], params)
    assert_same_update(balanced[0]["params"], params)
    for step in range(2):  # the gradients themselves, step by step
        for key in ("actor/pg_loss", "actor/grad_norm"):
            assert balanced[0]["steps"][step][key] == pytest.approx(one[step][key], rel=1e-5, abs=1e-6), key
