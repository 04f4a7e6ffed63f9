"""Benchmark the learner update alone: fp32 against bf16 autocast + channels_last, on this CPU.

    python scripts/bench_learner.py            # batch 32, 18 actions, torch's default threads
    python scripts/bench_learner.py --threads 1 --updates 100 --json learner.json

One `Learner.update` = target forward, online forward (and the double-DQN forward), backward,
gradient clip, fused Adam, on batches sampled from a replay filled with random frames (the
sample is timed with it). Each case is timed in turn, `--repeats` times, interleaved; the table
gives the median ms per update and the ratio fp32 / bf16 (what `learner.precision = "auto"`
buys on CPU). bf16 runs twice: on (B, stack, H, W) batches, which the network permutes to
channels_last on every forward pass, and on channels_last batches (the replay gathers them
that way, `sample(..., channels_last=True)`: what training does when `Learner.channels_last`).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from benchio import emit

from agent.config import LearnerConfig
from agent.learner import Learner
from agent.native import FrameReplay


def filled_replay(n: int, seed: int = 0) -> FrameReplay:
    rng = np.random.default_rng(seed)
    replay = FrameReplay(n + 10, n_step=3, seed=seed)
    replay.reset(rng.integers(0, 256, (84, 84), dtype=np.uint8))
    for i in range(n):
        replay.add(int(rng.integers(18)), float(rng.integers(-1, 2)), i % 500 == 499, False,
                   rng.integers(0, 256, (84, 84), dtype=np.uint8))
        if i % 500 == 499:
            replay.reset(rng.integers(0, 256, (84, 84), dtype=np.uint8))
    return replay


def time_updates(learner: Learner, replay: FrameReplay, batch: int, n: int,
                 channels_last: bool = False) -> float:
    out = None
    for _ in range(3):  # warm-up: oneDNN primitives, allocator
        out = replay.sample(batch, out=out, channels_last=channels_last)
        learner.update(out)
    start = time.perf_counter()
    for _ in range(n):
        out = replay.sample(batch, out=out)
        learner.update(out)
    return (time.perf_counter() - start) / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--actions", type=int, default=18)
    parser.add_argument("--updates", type=int, default=40, help="updates per timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--quick", action="store_true", help="smoke run (5 updates, 1 repeat)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    if args.quick:
        args.updates, args.repeats = 5, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    replay = filled_replay(2_000)
    learners = {p: Learner(LearnerConfig(precision=p, device="cpu"), args.actions)
                for p in ("fp32", "bf16")}
    # case: (learner, channels_last batches)
    cases = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16_nhwc": ("bf16", True)}
    times: dict[str, list[float]] = {c: [] for c in cases}
    for _ in range(args.repeats):
        for c, (p, channels_last) in cases.items():
            times[c].append(time_updates(learners[p], replay, args.batch, args.updates,
                                         channels_last))
    ms = {c: statistics.median(v) for c, v in times.items()}
    ratio = ms["fp32"] / ms["bf16"]
    nhwc_ratio = ms["bf16"] / ms["bf16_nhwc"]
    lines = [f"Learner update, batch {args.batch}, {args.actions} actions, double DQN, "
             f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; median of "
             f"{args.repeats} x {args.updates} updates", "",
             "| precision | ms/update | updates/s |", "|---|---:|---:|"]
    names = {"fp32": "fp32", "bf16": "bf16 autocast + channels_last",
             "bf16_nhwc": "bf16 autocast + channels_last, channels_last batches"}
    for c, name in names.items():
        lines.append(f"| {name} | {ms[c]:.2f} | {1e3 / ms[c]:.1f} |")
    lines += ["", f"bf16 / fp32 updates/s: {ratio:.2f}x",
              f"channels_last batches / (B, stack, H, W) batches, bf16 updates/s: "
              f"{nhwc_ratio:.2f}x"]
    emit("\n".join(lines), {"batch": args.batch, "actions": args.actions,
                            "threads": torch.get_num_threads(), "ms_per_update": ms,
                            "ms_repeats": times, "bf16_speedup": ratio,
                            "nhwc_batch_speedup": nhwc_ratio}, args.json)

if __name__ == "__main__":
    main()
