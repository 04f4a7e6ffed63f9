"""Benchmark the native kernels against OpenCV, stable-baselines3 and a plain memcpy.

Run from the repository root (the `agent` package must be built and installed):

    python scripts/bench_native.py                        # full run: ~1 min, peak RSS ~7.5 GB
    python scripts/bench_native.py --quick                # smoke run: 100k capacity only, < 60 s
    python scripts/bench_native.py --skip-sb3             # without stable-baselines3
    python scripts/bench_native.py --json bench.json      # also write the numbers as JSON
    python scripts/bench_native.py --threads 0            # torch / OpenCV default threads

What it measures, all in one process on this machine (median of several timed repeats, after
warm-up, with the garbage collector off while timing; torch and OpenCV run single-threaded like
the native kernels, see --threads):

1. Frame preprocessing, frames/s: ``agent.native.FramePreprocessor`` (max of two raw RGB frames
   -> gray -> area resize to 84x84, written into a preallocated frame), and the portable build
   separately when the AVX2 build is the one in use, against the OpenCV pipeline
   ``cv2.resize(cv2.cvtColor(np.maximum(a, b), RGB2GRAY), (84, 84), INTER_AREA)``. Input is 16
   pairs of consecutive real Phoenix frames from ALE, cycled.
2. Replay sampling, microseconds per batch of 32 (stack 4, observations and next observations):
   ``FrameReplay`` uniform and prioritized (PER) at 100k and 1M capacity, filled through
   ``add()`` past one wrap of the ring, and sampled into a preallocated ``Batch`` followed by
   zero-copy ``torch.from_numpy`` of the fields a learner uses; stable-baselines3's
   ``ReplayBuffer`` at 100k (optimize_memory_usage off and on; its arrays are filled directly
   with numpy) timed on ``sample(32)``, which returns torch tensors; and ``np.copyto`` of as
   many bytes as one Batch holds, from a hot (cached) source and from a cold one.
3. Streams: ``sample()`` (batch 32, uniform and PER) of the largest ring written by 16 streams
   (one per env, ``FrameReplay(..., streams=16)``, each with its own episodes, round robin) next
   to the same ring and fill written by one stream; and the cost of a write, microseconds per
   ``add()`` with the frame already in its slot (as the collector writes), a ``reset()`` every
   1,000 steps of each stream, for 1 stream (with and without ``stream=0``) and 16 streams.
4. Memory: bytes per transition of each replay (its arrays' bytes / capacity).
5. Targets: preprocessing >= 5x OpenCV, sampling >= 5x SB3 (optimize off, 100k), sampling
   <= 2x memcpy (hot source, 100k), <= 7,100 bytes per transition (uniform, 100k).

Only one large buffer is alive at a time (each is freed before the next is built): the 1M
frame ring alone is ~7 GB, SB3 at 100k is 5.6 GB (optimize off) or 2.8 GB (on). SB3 at 1M
(28 GB / 56 GB) is not attempted.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import resource
import statistics
import sys
import time
from collections.abc import Callable

import benchio
import cv2
import numpy as np
import torch
from benchio import describe_machine, emit, fmt_int, progress_log, table, targets_table

from agent.native import FRAME_KERNEL, Batch, FramePreprocessor, FrameReplay

BATCH = 32
STACK = 4
FRAME_SHAPE = (84, 84)
ATARI_SHAPE = (210, 160)
N_ACTIONS = 4
SEED = 0
STREAMS = 16  # the many-stream rows: one stream per env of a vectorised collector

# Targets (see module docstring).
TARGET_PREPROCESS_SPEEDUP = 5.0
TARGET_SAMPLE_SPEEDUP = 5.0
TARGET_MEMCPY_RATIO = 2.0
TARGET_BYTES_PER_TRANSITION = 7_100


# ---------------------------------------------------------------------------------- timing
def median_times(
    fns: dict[str, Callable[[], object]], number: int, repeats: int, warmup: int
) -> dict[str, dict]:
    """Median microseconds per call of each fn over `repeats` timed blocks of `number` calls.

    Each fn is warmed up `warmup` times first. The repeats of the fns are interleaved (fn A's
    block, fn B's block, A, B, ...), so a slow patch of a noisy machine hits them alike.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    per_call: dict[str, list[float]] = {name: [] for name in fns}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                for _ in range(number):
                    fn()
                per_call[name].append((time.perf_counter() - start) / number * 1e6)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {
        name: {
            "us": statistics.median(times),
            "us_min": min(times),
            "us_per_repeat": [round(t, 2) for t in times],
            "repeats": repeats,
            "calls_per_repeat": number,
        }
        for name, times in per_call.items()
    }


def median_time(fn: Callable[[], object], number: int, repeats: int, warmup: int) -> dict:
    return median_times({"fn": fn}, number, repeats, warmup)["fn"]


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


# ---------------------------------------------------------------------------- preprocessing
def ale_frame_pairs(n_pairs: int = 16, warm_steps: int = 300) -> list[tuple[np.ndarray, ...]]:
    """Pairs of consecutive raw RGB Phoenix frames, taken after `warm_steps` random actions."""
    from ale_py import ALEInterface, LoggerMode, roms

    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.setInt("random_seed", SEED)
    ale.loadROM(roms.get_rom_path("phoenix"))
    actions = ale.getMinimalActionSet()
    rng = np.random.default_rng(SEED)

    def step() -> None:
        ale.act(actions[rng.integers(len(actions))])
        if ale.game_over():
            ale.reset_game()

    for _ in range(warm_steps):
        step()
    pairs = []
    for _ in range(n_pairs):
        for _ in range(int(rng.integers(1, 8))):  # spread the pairs over the episode
            step()
        prev = ale.getScreenRGB()
        step()
        pairs.append((prev, ale.getScreenRGB()))
    return pairs


def opencv_preprocess(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(np.maximum(prev, cur), cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, FRAME_SHAPE[::-1], interpolation=cv2.INTER_AREA)


def bench_preprocess(pairs, number: int, repeats: int) -> dict:
    """Time each preprocessing implementation over the cycled frame pairs."""
    impls: dict[str, Callable] = {f"native ({FRAME_KERNEL})": FramePreprocessor()}
    if FRAME_KERNEL != "portable":
        from agent import _frames  # the portable build of the same kernel

        impls["native (portable)"] = _frames.FramePreprocessor()

    out = np.empty(FRAME_SHAPE, np.uint8)
    fns = {}
    for name, kernel in impls.items():
        cycle = itertools.cycle(pairs)

        def run_native(kernel=kernel, cycle=cycle):
            prev, cur = next(cycle)
            kernel(prev, cur, out)

        fns[name] = run_native

    cycle = itertools.cycle(pairs)
    fns["OpenCV"] = lambda: opencv_preprocess(*next(cycle))
    results = median_times(fns, number, repeats, warmup=number // 10 + 10)
    for name, kernel in impls.items():
        results[name]["max_abs_diff_vs_opencv"] = max(
            int(np.abs(kernel(a, b, out).astype(np.int16) - opencv_preprocess(a, b)).max())
            for a, b in pairs
        )
    for r in results.values():
        r["frames_per_s"] = 1e6 / r["us"]
        r["speedup_vs_opencv"] = results["OpenCV"]["us"] / r["us"]
    return results


# ---------------------------------------------------------------------------------- replay
def fill_native(rb: FrameReplay, frames: list[np.ndarray], steps: int) -> float:
    """Write `steps` transitions through reset()/add(); returns microseconds per add().

    With several streams the steps go round robin over them, each stream with its own
    episodes of the same lengths (1,000 to 3,000 steps) as one stream's."""
    rng = np.random.default_rng(SEED)
    actions = rng.integers(0, N_ACTIONS, steps).tolist()
    rewards = (rng.random(steps) < 0.05).astype(np.float64).tolist()
    n = len(frames)
    S = rb.streams
    if S == 1:
        episode_ends = set(np.cumsum(rng.integers(1_000, 3_000, steps // 1_000 + 1)).tolist())
        start = time.perf_counter()
        rb.reset(frames[0])
        for t in range(steps):
            terminated = t + 1 in episode_ends
            rb.add(actions[t], rewards[t], terminated, False, frames[t % n])
            if terminated:
                rb.reset(frames[(t + 1) % n])
        return (time.perf_counter() - start) / steps * 1e6
    per_stream = steps // S + 1
    ends = [set(np.cumsum(rng.integers(1_000, 3_000, per_stream // 1_000 + 1)).tolist())
            for _ in range(S)]
    written = [0] * S
    start = time.perf_counter()
    for s in range(S):
        rb.reset(frames[s % n], stream=s)
    for t in range(steps):
        s = t % S
        written[s] += 1
        terminated = written[s] in ends[s]
        rb.add(actions[t], rewards[t], terminated, False, frames[t % n], stream=s)
        if terminated:
            rb.reset(frames[(t + 1) % n], stream=s)
    return (time.perf_counter() - start) / steps * 1e6


def bench_native_replay(capacity: int, prioritized: bool, frames, number, repeats,
                        streams: int = 1, rows: bool = False) -> dict:
    """sample() into a reused Batch, each field viewed by torch; with rows, the stacks' ring rows
    only (`sample(..., rows=...)`, what a learner with the frames on its GPU draws)."""
    rb = FrameReplay(capacity, FRAME_SHAPE, stack=STACK, prioritized=prioritized, seed=SEED,
                     streams=streams)
    fill_us = fill_native(rb, frames, capacity + capacity // 20)  # past one wrap of the ring
    batch = Batch(BATCH, STACK, *FRAME_SHAPE)
    if prioritized:  # make priorities non-uniform before timing sample() alone
        rng = np.random.default_rng(SEED)
        for _ in range(200):
            rb.sample(BATCH, out=batch)
            rb.update_priorities(batch.index, rng.uniform(0.01, 2.0, BATCH))

    ring_rows = np.empty((BATCH, 2, STACK), np.int64) if rows else None

    def sample():
        b = rb.sample(BATCH, out=batch, rows=ring_rows)
        if rows:
            torch.from_numpy(ring_rows)
        else:
            torch.from_numpy(b.obs)
            torch.from_numpy(b.next_obs)
        torch.from_numpy(b.action)
        torch.from_numpy(b.reward)
        torch.from_numpy(b.discount)
        if prioritized:
            torch.from_numpy(b.weight)

    result = median_time(sample, number, repeats, warmup=number // 5 + 20)
    result.update(
        capacity=capacity,
        nbytes=rb.nbytes,
        bytes_per_transition=rb.bytes_per_transition,
        valid_transitions=len(rb),
        fill_us_per_add=fill_us,
        streams=streams,
        rows=rows,
    )
    return result  # the ring is freed with this frame; the caller collects


def bench_writes(number: int, repeats: int, capacity: int = 64_000) -> dict:
    """Microseconds per add() (frame already in its slot, as the collector writes), with a
    reset() after every 1,000 steps of each stream, on a ring already wrapped once.

    Rows: one stream called as before streams existed, one stream with stream=0, and STREAMS
    streams round robin; each uniform and prioritized. One call of a timed function writes
    1,000 steps to every stream, so the loop's own cost is spread over many add() calls."""
    episode = 1_000
    fns, adds = {}, {}
    rings = []
    for per in (False, True):
        kind = "per" if per else "uniform"
        for variant, streams in (("1", 1), ("1_stream_kw", 1), (str(STREAMS), STREAMS)):
            rb = FrameReplay(capacity, FRAME_SHAPE, stack=STACK, n_step=3, prioritized=per,
                             seed=SEED, streams=streams)
            rings.append(rb)
            for s in range(streams):
                rb.reset(stream=s)
            for t in range(capacity + capacity // 20):  # past one wrap: slots leave the ring
                rb.add(t % N_ACTIONS, 0.0, False, False, stream=t % streams)
            if variant == "1":

                def write(rb=rb):
                    add = rb.add
                    for t in range(episode - 1):
                        add(t & 3, 0.0, False, False)
                    add(1, 1.0, True, False)
                    rb.reset()
            else:

                def write(rb=rb, streams=streams):
                    add, reset = rb.add, rb.reset
                    for t in range((episode - 1) * streams):
                        add(t & 3, 0.0, False, False, stream=t % streams)
                    for s in range(streams):
                        add(1, 1.0, True, False, stream=s)
                        reset(stream=s)

            key = f"{kind}@{variant}"
            fns[key] = write
            adds[key] = episode * streams
    times = median_times(fns, number, repeats, warmup=2)
    out = {}
    for key, r in times.items():
        per_add = adds[key]
        out[key] = dict(
            us_per_add=r["us"] / per_add,
            us_per_add_min=r["us_min"] / per_add,
            us_per_add_per_repeat=[round(t / per_add, 4) for t in r["us_per_repeat"]],
            adds_per_call=per_add,
            repeats=r["repeats"],
            calls_per_repeat=r["calls_per_repeat"],
        )
    return out


def sb3_bytes_per_transition(buf) -> float:
    arrays = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
    total = sum(getattr(buf, name).nbytes for name in arrays if hasattr(buf, name))
    return total / buf.buffer_size


def bench_sb3(capacity: int, optimize: bool, number: int, repeats: int) -> dict:
    import gymnasium
    from stable_baselines3.common.buffers import ReplayBuffer

    buf = ReplayBuffer(
        capacity,
        observation_space=gymnasium.spaces.Box(0, 255, (STACK, *FRAME_SHAPE), np.uint8),
        action_space=gymnasium.spaces.Discrete(N_ACTIONS),
        device="cpu",
        optimize_memory_usage=optimize,
        handle_timeout_termination=False,
    )
    # Fill every row with real bytes (add() would take too long): a random chunk, repeated.
    rng = np.random.default_rng(SEED)
    chunk = rng.integers(0, 256, (1024, *buf.observations.shape[1:]), np.uint8)
    for i in range(0, capacity, len(chunk)):
        n = min(len(chunk), capacity - i)
        buf.observations[i : i + n] = chunk[:n]
        if not optimize:
            buf.next_observations[i : i + n] = chunk[::-1][:n]
    del chunk
    buf.actions[:] = rng.integers(0, N_ACTIONS, buf.actions.shape)
    buf.rewards[:] = rng.random(buf.rewards.shape) < 0.05
    buf.dones[:] = rng.random(buf.dones.shape) < 1 / 2_000
    buf.full, buf.pos = True, 0
    np.random.seed(SEED)  # SB3 draws indices from numpy's global generator

    result = median_time(lambda: buf.sample(BATCH), number, repeats, warmup=number // 5 + 5)
    result.update(
        capacity=capacity,
        nbytes=int(buf.buffer_size * sb3_bytes_per_transition(buf)),
        bytes_per_transition=sb3_bytes_per_transition(buf),
    )
    return result


def bench_memcpy(nbytes: int, number: int, repeats: int, cold_bytes: int) -> dict:
    """np.copyto of one batch's bytes: hot (same cached source) and cold (from a large array)."""
    src = np.full(nbytes, 7, np.uint8)
    dst = np.empty(nbytes, np.uint8)
    hot = median_time(lambda: np.copyto(dst, src), number, repeats, warmup=number // 5 + 5)

    # Cold: each copy reads a different window of an array far larger than the caches.
    big = np.full(cold_bytes, 7, np.uint8)
    windows = np.random.default_rng(SEED).permutation(cold_bytes // nbytes)
    views = itertools.cycle([big[w * nbytes : (w + 1) * nbytes] for w in windows])
    cold = median_time(lambda: np.copyto(dst, next(views)), number, repeats, warmup=len(windows))
    return {"bytes": nbytes, "hot": hot, "cold": {**cold, "source_bytes": cold_bytes}}


def batch_nbytes() -> int:
    b = Batch(BATCH, STACK, *FRAME_SHAPE)
    fields = (b.obs, b.next_obs, b.action, b.reward, b.discount, b.index, b.weight)
    return sum(a.nbytes for a in fields)


# ---------------------------------------------------------------------------------- report
def fmt_us(x: float) -> str:
    return f"{x:,.1f}" if x < 1_000 else f"{x:,.0f}"


def render(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"Machine: {describe_machine(m)}, frame kernel `{m['frame_kernel']}`; Python "
        f"{m['python']}, numpy {m['numpy']}, OpenCV {m['opencv']}, torch {m['torch']}"
        + (f", SB3 {m['sb3']}" if m.get("sb3") else "")
        + f"; OpenCV and torch limited to {m['opencv_threads']} / {m['torch_threads']} "
        f"thread(s). Median of {res['repeats']} repeats.",
        "",
        "Frame preprocessing (two 210x160 RGB frames -> max -> gray -> 84x84 area resize):",
        "",
    ]
    lines += table(
        ("Implementation", "µs/frame", "frames/s", "vs OpenCV", "max diff vs OpenCV"),
        ((name, f"{r['us']:.2f}", fmt_int(r["frames_per_s"]), f"{r['speedup_vs_opencv']:.2f}x",
          "-" if r.get("max_abs_diff_vs_opencv") is None else r["max_abs_diff_vs_opencv"])
         for name, r in res["preprocess"].items()),
    )

    lines += [
        "",
        f"Replay sample (batch {BATCH}, stack {STACK}, obs + next_obs, to torch tensors):",
        "",
    ]
    rows = []
    for row in res["sample_rows"]:
        if row.get("us") is None:
            time_cell, rel = row["note"], "-"
        else:
            time_cell, rel = fmt_us(row["us"]), f"{row['relative']:.2f}x"
        bpt = row.get("bytes_per_transition")
        mem = row.get("nbytes")
        rows.append((row["name"], fmt_int(row["capacity"]) if row["capacity"] else "-",
                     time_cell, rel, "-" if bpt is None else fmt_int(bpt),
                     "-" if mem is None else f"{mem / 1e9:.2f} GB"))
    lines += table(("Replay", "Capacity", "µs/batch", "time vs native uniform",
                    "bytes/transition", "memory"), rows)

    lines += [
        "",
        "Replay writes (µs per add() with the frame already in its slot, a reset() every 1,000 "
        "steps of each stream; ring of 64,000 slots, already wrapped):",
        "",
    ]
    calls = {"1": "add(a, r, term, trunc)", "1_stream_kw": "add(..., stream=0)",
             str(STREAMS): "add(..., stream=s), round robin"}
    rows = []
    for key, r in res["writes"].items():
        kind, variant = key.split("@")
        streams = STREAMS if variant == str(STREAMS) else 1
        name = "native PER" if kind == "per" else "native uniform"
        rows.append((name, streams, f"`{calls[variant]}`", f"{r['us_per_add']:.3f}"))
    lines += table(("Replay", "Streams", "Call", "µs/add"), rows, "lrlr")

    lines += ["", "Targets:", "", *targets_table(res["targets"], missing="skipped")]
    lines += [
        "",
        f"Peak RSS {res['peak_rss_bytes'] / 1e9:.2f} GB, total runtime {res['runtime_s']:.0f} s.",
    ]
    return "\n".join(lines)


def sample_rows(res: dict, capacities: list[int], skip_sb3: bool) -> list[dict]:
    """Rows of the sampling table, in display order, each with its time relative to uniform."""
    rows = []
    s = res["sample"]
    for cap in capacities:
        base = s[f"native_uniform@{cap}"]["us"]
        entries = [
            ("native uniform", f"native_uniform@{cap}"),
            ("native PER", f"native_per@{cap}"),
        ]
        if f"native_uniform_{STREAMS}streams@{cap}" in s:
            entries += [
                (f"native uniform, {STREAMS} streams", f"native_uniform_{STREAMS}streams@{cap}"),
                (f"native PER, {STREAMS} streams", f"native_per_{STREAMS}streams@{cap}"),
                (f"native uniform, {STREAMS} streams, ring rows only (`rows=`)",
                 f"native_uniform_{STREAMS}streams_rows@{cap}"),
            ]
        if not skip_sb3:
            entries += [
                ("SB3 ReplayBuffer, optimize_memory_usage=False", f"sb3@{cap}"),
                ("SB3 ReplayBuffer, optimize_memory_usage=True", f"sb3_optimized@{cap}"),
            ]
        for name, key in entries:
            r = s.get(key)
            if r is None:  # SB3 at 1M: not attempted
                per_t = res["sb3_bytes_per_transition"][key.split("@")[0]]
                rows.append(
                    dict(
                        name=name,
                        capacity=cap,
                        us=None,
                        bytes_per_transition=per_t,
                        nbytes=per_t * cap,
                        note=f"n/a (needs {per_t * cap / 1e9:.0f} GB)",
                    )
                )
            else:
                rows.append(dict(name=name, **r, relative=r["us"] / base))
    base = s[f"native_uniform@{capacities[0]}"]["us"]
    mc = res["memcpy"]
    for kind, label in (("hot", "cached source"), ("cold", "source not in cache")):
        rows.append(
            dict(
                name=f"np.copyto of one Batch's {fmt_int(mc['bytes'])} bytes, {label}",
                capacity=None,
                us=mc[kind]["us"],
                relative=mc[kind]["us"] / base,
            )
        )
    return rows


def targets(res: dict, skip_sb3: bool) -> list[dict]:
    pre = res["preprocess_speedup_vs_opencv"]
    sb3 = res["sample_speedup_vs_sb3"]
    mem = res["sample_time_vs_memcpy"]
    bpt = res["bytes_per_transition"]
    worst = max(v["bytes_per_transition"] for k, v in res["sample"].items() if k[:6] == "native")
    return [
        dict(
            target=f"preprocess >= {TARGET_PREPROCESS_SPEEDUP:g}x OpenCV",
            value=pre,
            measured=f"{pre:.2f}x",
            met=pre >= TARGET_PREPROCESS_SPEEDUP,
        ),
        dict(
            target=f"sample >= {TARGET_SAMPLE_SPEEDUP:g}x faster than SB3 (optimize off, 100k)",
            value=sb3,
            measured="-" if sb3 is None else f"{sb3:.1f}x",
            met=None if skip_sb3 else sb3 >= TARGET_SAMPLE_SPEEDUP,
        ),
        dict(
            target=f"sample <= {TARGET_MEMCPY_RATIO:g}x memcpy of the batch (uniform, 100k)",
            value=mem,
            measured=f"{mem:.2f}x",
            met=mem <= TARGET_MEMCPY_RATIO,
        ),
        dict(
            target=f"<= {fmt_int(TARGET_BYTES_PER_TRANSITION)} bytes/transition (uniform, 100k)",
            value=bpt,
            measured=f"{fmt_int(bpt)} (worst native: {fmt_int(worst)})",
            met=bpt <= TARGET_BYTES_PER_TRANSITION,
        ),
    ]


def machine_info(skip_sb3: bool) -> dict:
    info = benchio.machine_info(
        frame_kernel=FRAME_KERNEL, numpy=np.__version__, opencv=cv2.__version__,
        opencv_threads=cv2.getNumThreads(), torch=torch.__version__.split("+")[0],
        torch_threads=torch.get_num_threads(),
    )
    if not skip_sb3:
        import stable_baselines3

        info["sb3"] = stable_baselines3.__version__
    return info


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small iteration counts, 100k capacity only (smoke run)",
    )
    parser.add_argument("--skip-sb3", action="store_true", help="leave stable-baselines3 out")
    parser.add_argument("--json", metavar="PATH", help="write the results as one JSON object")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads for torch and OpenCV; 0 leaves the libraries' defaults (default 1: "
        "the native kernels are single-threaded, and on a small shared machine torch's thread "
        "pool can stall SB3's sample() by milliseconds)",
    )
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    quick = args.quick
    repeats = 5 if quick else 7
    n_pre = 300 if quick else 3_000
    n_native = 100 if quick else 500
    n_sb3 = 20 if quick else 200
    capacities = [100_000] if quick else [100_000, 1_000_000]

    log = progress_log()
    res: dict = {"machine": machine_info(args.skip_sb3), "quick": quick, "repeats": repeats}

    log("preprocessing: collecting ALE frames")
    pairs = ale_frame_pairs()
    res["preprocess"] = bench_preprocess(pairs, n_pre, repeats)
    native_key = f"native ({FRAME_KERNEL})"
    res["preprocess_speedup_vs_opencv"] = res["preprocess"][native_key]["speedup_vs_opencv"]

    # Replay frames: the preprocessed real frames, reused (the ring memory is still all written).
    kernel = FramePreprocessor()
    frames = [kernel(a, b, np.empty(FRAME_SHAPE, np.uint8)) for a, b in pairs]
    res["sample"] = {}
    for cap in capacities:
        for per in (False, True):
            key = f"native_{'per' if per else 'uniform'}@{cap}"
            log(f"replay: {key}")
            res["sample"][key] = bench_native_replay(cap, per, frames, n_native, repeats)
            gc.collect()  # never two large buffers at once
    for per in (False, True):  # the largest ring again, written by STREAMS streams
        cap = capacities[-1]
        key = f"native_{'per' if per else 'uniform'}_{STREAMS}streams@{cap}"
        log(f"replay: {key}")
        res["sample"][key] = bench_native_replay(cap, per, frames, n_native, repeats, STREAMS)
        gc.collect()
    key = f"native_uniform_{STREAMS}streams_rows@{capacities[-1]}"  # learner.device_frames
    log(f"replay: {key}")
    res["sample"][key] = bench_native_replay(capacities[-1], False, frames, n_native, repeats,
                                             STREAMS, rows=True)
    gc.collect()
    log("replay writes")
    res["writes"] = bench_writes(5 if quick else 20, repeats)
    if not args.skip_sb3:
        for optimize in (False, True):
            key = f"sb3{'_optimized' if optimize else ''}@{capacities[0]}"
            log(f"replay: {key}")
            res["sample"][key] = bench_sb3(capacities[0], optimize, n_sb3, repeats)
            gc.collect()
        res["sb3_bytes_per_transition"] = {
            "sb3": res["sample"][f"sb3@{capacities[0]}"]["bytes_per_transition"],
            "sb3_optimized": res["sample"][f"sb3_optimized@{capacities[0]}"][
                "bytes_per_transition"
            ],
        }
    log("memcpy")
    res["memcpy"] = bench_memcpy(batch_nbytes(), n_native, repeats, cold_bytes=1 << 30)

    s = res["sample"]
    uniform = s["native_uniform@100000"]["us"]
    res["sample_speedup_vs_sb3"] = None if args.skip_sb3 else s["sb3@100000"]["us"] / uniform
    res["sample_speedup_vs_sb3_optimized"] = (
        None if args.skip_sb3 else s["sb3_optimized@100000"]["us"] / uniform
    )
    res["sample_time_vs_memcpy"] = uniform / res["memcpy"]["hot"]["us"]
    res["sample_time_vs_memcpy_cold"] = uniform / res["memcpy"]["cold"]["us"]
    res["bytes_per_transition"] = s["native_uniform@100000"]["bytes_per_transition"]
    res["targets"] = targets(res, args.skip_sb3)
    res["sample_rows"] = sample_rows(res, capacities, args.skip_sb3)
    res["peak_rss_bytes"] = peak_rss_bytes()
    res["runtime_s"] = time.perf_counter() - t0

    emit(render(res), res, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
