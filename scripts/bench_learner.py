"""Benchmark the learner alone: its update and its batched acting, on this CPU or a CUDA GPU.

    python scripts/bench_learner.py                  # the learner's default device ("auto")
    python scripts/bench_learner.py --threads 1 --updates 100 --json learner.json
    python scripts/bench_learner.py --device cuda --compile --json learner.json

Update paths (one `Learner.update` = target forward, online forward and the double-DQN forward,
backward, gradient clip, fused Adam; the batch is sampled once into the learner's
`batch_buffers`, pinned on CUDA, and copied to the device on every update, as in training):
"eager" runs it op by op (on CUDA: `learner.cuda_graph = false`), "graph" replays the update
captured in one CUDA graph (CUDA only; the default there), and with --compile "compile" runs the
eager update's `train_step` under `torch.compile(mode="reduce-overhead")` (a failure to compile
is reported in its row and the JSON, and the other rows still run), and with --device-frames
"<default>_frames" runs the default path on stacks gathered on the device from a copy of the
replay's frames (`learner.device_frames`: only the batch's ring rows are copied each update, and
the gather is part of the update, inside the graph on CUDA). Each is timed at batch 32
and 256 with the default precision ("auto": bf16 on CPUs with native bf16 kernels and on GPUs
that support it), and `act_batch` on 1 and 64 stacks (fp32 inference). On CUDA every timed
region starts and ends with `torch.cuda.synchronize()`. Cases are timed in turn, `--repeats`
times, interleaved, after warm-up updates; the tables give medians.

On CPU the precision table of earlier runs comes first: fp32 against bf16 autocast +
channels_last, at --batch, each update timed with its `replay.sample`; bf16 runs twice, on
(B, stack, H, W) batches (permuted to channels_last on every forward pass) and on channels_last
batches (what training does when `Learner.channels_last`).

JSON: update_ms_b32, update_ms_b256, act_ms_b1, act_ms_b64 of the default path ("graph" on
CUDA, "eager" on CPU), `paths` (each path's update_ms_b32, update_ms_b256, or its error),
act_ms_single (`Learner.act` on one stack), sync_target_ms, on CUDA act_graph_ms_b1 and
act_graph_ms_b64 (`act_batch` captured in a CUDA graph, learner.act_graph); on CPU also the
precision table's ms_per_update, ms_repeats, bf16_speedup and nhwc_batch_speedup.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from benchio import emit, table

from agent.config import LearnerConfig
from agent.device_frames import DeviceFrames
from agent.learner import Learner, cpu_has_fast_bf16, resolve_device, use_bf16
from agent.native import Batch, FrameReplay

STACK, FRAME = 4, (84, 84)
SIZES = (32, 256)
ACT_SIZES = (1, 64)


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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(fn, n: int, device: torch.device) -> float:
    """Milliseconds per call of fn, over n calls, the device idle before and after."""
    sync(device)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - start) / n * 1e3


def time_updates(learner: Learner, replay: FrameReplay, batch: int, n: int,
                 channels_last: bool = False) -> float:
    """The precision table's timing: each update with its sample (as in earlier runs)."""
    out = None
    for _ in range(3):  # warm-up: oneDNN primitives, allocator
        out = replay.sample(batch, out=out, channels_last=channels_last)
        learner.update(out)
    start = time.perf_counter()
    for _ in range(n):
        out = replay.sample(batch, out=out)
        learner.update(out)
    return (time.perf_counter() - start) / n * 1e3


def compile_updates(learner: Learner) -> None:
    """Run `learner`'s eager update through torch.compile(mode="reduce-overhead")."""
    step = torch.compile(learner.train_step, mode="reduce-overhead")

    def train_step(*args, **kwargs):
        torch.compiler.cudagraph_mark_step_begin()  # a new iteration: earlier outputs are dead
        return step(*args, **kwargs)

    learner.train_step = train_step


def precision_table(args, replay: FrameReplay) -> tuple[list[str], dict]:
    # (precision, channels_last weights): the default on this CPU and the alternatives
    learners = {(p, cl): Learner(LearnerConfig(precision=p, device="cpu", channels_last=cl),
                                 args.actions)
                for p in ("fp32", "bf16") for cl in (False, True)}
    # case: (learner, channels_last batches)
    cases = {"fp32_nchw": (("fp32", False), False), "fp32": (("fp32", True), True),
             "bf16": (("bf16", True), False), "bf16_nhwc": (("bf16", True), True)}
    times: dict[str, list[float]] = {c: [] for c in cases}
    for _ in range(args.repeats):
        for c, (key, channels_last) in cases.items():
            times[c].append(time_updates(learners[key], replay, args.batch, args.updates,
                                         channels_last))
    ms = {c: statistics.median(v) for c, v in times.items()}
    ratio = ms["fp32"] / ms["bf16_nhwc"]
    nhwc_ratio = ms["bf16"] / ms["bf16_nhwc"]
    cl_ratio = ms["fp32_nchw"] / ms["fp32"]
    auto = "bf16" if use_bf16("auto", torch.device("cpu")) else "fp32"
    lines = [f"Learner update on CPU, batch {args.batch}, {args.actions} actions, double DQN, "
             f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; median of "
             f"{args.repeats} x {args.updates} updates, each with its sample; precision "
             f"\"auto\" is {auto} here (native bf16: {cpu_has_fast_bf16()})", ""]
    names = {"fp32_nchw": "fp32, NCHW weights and batches",
             "fp32": "fp32, channels_last weights and batches",
             "bf16": "bf16 autocast + channels_last weights, NCHW batches",
             "bf16_nhwc": "bf16 autocast + channels_last weights and batches"}
    lines += table(("precision", "ms/update", "updates/s"),
                   ((name, f"{ms[c]:.2f}", f"{1e3 / ms[c]:.1f}") for c, name in names.items()))
    lines += ["", f"bf16 / fp32 updates/s (both channels_last): {ratio:.2f}x",
              f"fp32 channels_last / NCHW updates/s: {cl_ratio:.2f}x",
              f"channels_last batches / (B, stack, H, W) batches, bf16 updates/s: "
              f"{nhwc_ratio:.2f}x", ""]
    return lines, {"batch": args.batch, "ms_per_update": ms, "ms_repeats": times,
                   "bf16_speedup": ratio, "nhwc_batch_speedup": nhwc_ratio,
                   "channels_last_speedup_fp32": cl_ratio, "auto_precision": auto}


def path_table(args, device: torch.device, replay: FrameReplay) -> tuple[list[str], dict]:
    paths = ["eager", "graph"] if device.type == "cuda" else ["eager"]
    if args.compile:
        paths.append("compile")
    default = "graph" if device.type == "cuda" and LearnerConfig().cuda_graph else "eager"
    frames = None
    if args.device_frames:
        paths.append(f"{default}_frames")
        frames = DeviceFrames(replay, device)
        frames.sync()
    n = {32: args.updates, 256: args.updates if device.type == "cuda" else
         max(1, args.updates // 8)}  # a CPU update at 256 takes about 8x one at 32
    runs, errors, learners = {}, {}, {}
    for path in paths:
        for size in SIZES:
            # One learner per batch size: a graph is captured for one size.
            on_device = path.endswith("_frames")
            cfg = LearnerConfig(device=str(device), precision=args.precision,
                                cuda_graph=path.startswith("graph"))
            torch.manual_seed(0)
            learner = Learner(cfg, args.actions, STACK, FRAME, device=device)
            if path == "compile":
                compile_updates(learner)
            batch = Batch(size, STACK, *FRAME, learner.channels_last,
                          buffers=learner.batch_buffers(size, frames=not on_device))
            rows = None
            if on_device:
                learner.use_frames(frames.ring)
                rows = learner.rows_buffer(size)
            replay.sample(size, out=batch, rows=rows)
            learners[path, size] = (learner, batch, rows)
            runs[path, size] = []
    warmup = {"eager": 3, "graph": 3, "compile": 6}  # graph: the capture; compile: compiling
    for _ in range(args.repeats):
        for (path, size), (learner, batch, rows) in learners.items():
            if path in errors:
                continue
            try:
                if not runs[path, size]:
                    for _ in range(warmup[path.removesuffix("_frames")]):
                        learner.update(batch, rows=rows)
                runs[path, size].append(timed_ms(
                    lambda lb=learner, b=batch, r=rows: lb.update(b, rows=r), n[size], device))
            except Exception as exc:  # only the experimental path: report it, time the rest
                if path != "compile":
                    raise
                errors[path] = f"{type(exc).__name__}: {exc}"[:2000]
    ms = {path: ({f"update_ms_b{size}": statistics.median(runs[path, size]) for size in SIZES}
                 if path not in errors else {"error": errors[path]}) for path in paths}
    # acting and the target sync, on the default path's learner (acting never graphs)
    learner = learners[default, 32][0]
    rng = np.random.default_rng(1)
    obs = rng.integers(0, 256, (max(ACT_SIZES), STACK, *FRAME), dtype=np.uint8)
    act_n = max(10, args.updates)
    act: dict[str, list[float]] = {f"act_ms_b{k}": [] for k in ACT_SIZES}
    act["act_ms_single"], act["sync_target_ms"] = [], []
    for k in ACT_SIZES:
        for _ in range(3):
            learner.act_batch(obs[:k])
    for _ in range(args.repeats):
        for k in ACT_SIZES:
            act[f"act_ms_b{k}"].append(timed_ms(lambda k=k: learner.act_batch(obs[:k]), act_n,
                                                device))
        act["act_ms_single"].append(timed_ms(lambda: learner.act(obs[0]), act_n, device))
        act["sync_target_ms"].append(timed_ms(learner.sync_target, 10, device))
    if device.type == "cuda":  # learner.act_graph: acting captured in a CUDA graph
        graphed = Learner(LearnerConfig(device=str(device), precision=args.precision,
                                        act_graph=True), args.actions, STACK, FRAME,
                          device=device)
        graphed.load_state_dict(learner.state_dict())
        for k in ACT_SIZES:
            act[f"act_graph_ms_b{k}"] = []
            for _ in range(3):
                graphed.act_batch(obs[:k])  # (each new k captures again)
        for _ in range(args.repeats):
            for k in ACT_SIZES:
                graphed.act_batch(obs[:k])  # the capture for this k, outside the timing
                act[f"act_graph_ms_b{k}"].append(timed_ms(
                    lambda k=k: graphed.act_batch(obs[:k]), act_n, device))
    act_ms = {k: statistics.median(v) for k, v in act.items()}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [f"Learner on {device} ({name}), {args.actions} actions, double DQN, precision "
             f"{args.precision} ({'bf16' if learner.bf16 else 'fp32'} here), torch "
             f"{torch.__version__}; median of {args.repeats} x {n[32]} updates at batch 32, "
             f"{n[256]} at 256 (update only, the batch copied to the device each time)", ""]
    rows = []
    for path in paths:
        label = path + (" (default)" if path == default else "")
        if path in errors:
            rows.append((label, f"failed: {errors[path].splitlines()[0][:200]}", "", ""))
            continue
        b32, b256 = ms[path]["update_ms_b32"], ms[path]["update_ms_b256"]
        rows.append((label, f"{b32:.3f}", f"{b256:.3f}", f"{1e3 / b32:.0f}"))
    lines += table(("path", "ms/update, batch 32", "ms/update, batch 256", "updates/s, batch 32"),
                   rows)
    if device.type == "cuda" and "graph" not in errors:
        lines.append("")
        for other in (p for p in paths if p != "graph" and p not in errors):
            lines.append(f"graph / {other} updates/s, batch 32: "
                         f"{ms[other]['update_ms_b32'] / ms['graph']['update_ms_b32']:.2f}x, "
                         f"batch 256: "
                         f"{ms[other]['update_ms_b256'] / ms['graph']['update_ms_b256']:.2f}x")
    rows = [(f"act_batch, {k} stack{'s' if k > 1 else ''}", f"{act_ms[f'act_ms_b{k}']:.3f}")
            for k in ACT_SIZES]
    rows += [(f"act_batch captured (learner.act_graph), {k} stack{'s' if k > 1 else ''}",
              f"{act_ms[f'act_graph_ms_b{k}']:.3f}") for k in ACT_SIZES
             if f"act_graph_ms_b{k}" in act_ms]
    rows.append(("act, 1 stack", f"{act_ms['act_ms_single']:.3f}"))
    lines += ["", *table(("acting (fp32)", "ms/call"), rows), "",
              f"target sync: {act_ms['sync_target_ms']:.3f} ms"]
    result = {"device": str(device), "device_name": name, "precision": args.precision,
              "bf16": learner.bf16, "default_path": default, "paths": ms,
              "path_repeats": {f"{p}_b{s}": v for (p, s), v in runs.items()},
              "update_ms_b32": ms[default]["update_ms_b32"],
              "update_ms_b256": ms[default]["update_ms_b256"], **act_ms}
    return lines, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: CUDA when present, else CPU")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="the update paths' learner.precision")
    parser.add_argument("--batch", type=int, default=32, help="the CPU precision table's batch")
    parser.add_argument("--actions", type=int, default=18)
    parser.add_argument("--updates", type=int, help="updates per timing (40 on CPU, 200 on CUDA)")
    parser.add_argument("--repeats", type=int, help="timings per case (3 on CPU, 5 on CUDA)")
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--compile", action="store_true",
                        help='also time torch.compile(mode="reduce-overhead") of the eager update')
    parser.add_argument("--device-frames", action="store_true",
                        help="also time the default path gathering its batches on the device")
    parser.add_argument("--quick", action="store_true", help="smoke run (5 updates, 1 repeat)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    args.updates = args.updates or (200 if cuda else 40)
    args.repeats = args.repeats or (5 if cuda else 3)
    if args.quick:
        args.updates, args.repeats = 5, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    replay = filled_replay(2_000)
    lines, result = [], {"actions": args.actions, "threads": torch.get_num_threads(),
                         "torch": torch.__version__}
    if not cuda:
        more, values = precision_table(args, replay)
        lines += more
        result.update(values)
    more, values = path_table(args, device, replay)
    emit("\n".join(lines + more), {**result, **values}, args.json)


if __name__ == "__main__":
    main()
