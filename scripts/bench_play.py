"""Benchmark `atari-agent play --video`: milliseconds per recorded agent step, by phase, against
the game's real time.

Run from the repository root (the `agent` package must be built and installed):

    python scripts/bench_play.py                       # a fresh network on Breakout, 600 steps x 3
    python scripts/bench_play.py --checkpoint runs/x/checkpoints/best.pt --steps 2000
    python scripts/bench_play.py --quick --json play.json   # smoke run: 20 steps, once

What it runs: `agent.play.play` itself, recording MP4s at the default scale (3) into a temporary
directory, episode after episode (seeds 0, 1, ...; the last one cut by max_steps) until --steps
agent steps are recorded; a fresh network's Breakout game lasts about 180 steps. Greedy (epsilon
0) with sticky actions 0.25, as `atari-agent play`. Phases are timed by wrapping what play calls
(so nothing in the package exists for the benchmark):

- emulate: `AtariEnv.step` and `AtariEnv.reset` (frameskip 4 emulator frames, the serve);
- act: the Q-values, one forward pass a step (`LoadedAgent.q_values`, on play's one torch thread);
- draw: reading the screen (`AtariEnv.rgb`) and `Overlay.draw` (scaled screen, side panel);
- encode: `VideoSink.add` and `finish` (cv2.VideoWriter, mp4v; opening it included);
- other: the rest of the wall time: play's bookkeeping and the protocol's loop.

Setup (an env per episode: ALE loads the ROM) is reported per episode and left out of the
per-step numbers. Real time is frameskip / 60 Hz per agent step (66.7 ms at frameskip 4); the
target is >= 5x real time, i.e. <= 13.3 ms per agent step. Each repeat records --steps steps;
the table gives each phase's median over the repeats. The load average and the CPU other
processes took meanwhile show when the machine was shared.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import cv2
import torch
from benchio import (
    describe_load,
    describe_machine,
    emit,
    load_mark,
    loadavg,
    machine_info,
    other_load,
    progress_log,
    table,
    targets_table,
)

import agent.overlay as overlay_mod
import agent.play as play_mod
import agent.video as video_mod
from agent.config import Config
from agent.env import AtariEnv
from agent.network import QNetwork
from agent.policy import LoadedAgent, load_agent

TARGET_VS_REAL_TIME = 5.0
PHASES = ("emulate", "act", "draw", "encode", "other")


def fresh_agent(game: str, seed: int) -> LoadedAgent:
    """A freshly initialised network for `game` (documented actions), as play would load it."""
    config = Config().replace(env={"game": game})
    env = AtariEnv(config.env, 0)
    try:
        layout = env.actions.layout()
        n = len(env.actions)
    finally:
        env.close()
    torch.manual_seed(seed)
    return LoadedAgent(Path(f"<fresh {game} network>"), game, config, layout,
                       QNetwork(n).eval(), 0)


class Timers:
    """Seconds spent in each phase, from wrappers put around what play calls."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, phase: str, fn):
        seconds, clock = self.seconds, time.perf_counter

        def timed(*args, **kwargs):
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[phase] += clock() - t0

        return timed


@contextmanager
def instrumented(agent: LoadedAgent, timers: Timers):
    """Play's env class, the agent's Q-values, Overlay.draw and VideoSink's writes, timed."""
    wrap = timers.wrap

    class TimedEnv(AtariEnv):
        def __init__(self, *args, **kwargs):
            wrap("setup", super().__init__)(*args, **kwargs)

        step = wrap("emulate", AtariEnv.step)
        reset = wrap("emulate", AtariEnv.reset)
        rgb = wrap("draw", AtariEnv.rgb)

    saved = [(play_mod, "AtariEnv", play_mod.AtariEnv),
             (overlay_mod.Overlay, "draw", overlay_mod.Overlay.draw),
             (video_mod.VideoSink, "add", video_mod.VideoSink.add),
             (video_mod.VideoSink, "finish", video_mod.VideoSink.finish)]
    q_values = agent.q_values
    try:
        play_mod.AtariEnv = TimedEnv
        overlay_mod.Overlay.draw = wrap("draw", overlay_mod.Overlay.draw)
        video_mod.VideoSink.add = wrap("encode", video_mod.VideoSink.add)
        video_mod.VideoSink.finish = wrap("encode", video_mod.VideoSink.finish)
        agent.q_values = wrap("act", q_values)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
        agent.q_values = q_values


def record(agent: LoadedAgent, steps: int, scale: int, directory: Path) -> dict:
    """Record `steps` agent steps through play (episode after episode): phase seconds, steps,
    episodes, MP4 bytes and wall time."""
    timers = Timers()
    done, episodes, video_bytes = 0, 0, 0
    mark = load_mark()
    with instrumented(agent, timers):
        t0 = time.perf_counter()
        while done < steps:
            video = directory / f"play-{episodes}.mp4"
            (ep,) = play_mod.play(agent, seed=episodes, max_steps=steps - done, scale=scale,
                                  video=video, out=io.StringIO(), progress=io.StringIO())
            done += ep.length
            episodes += 1
            video_bytes += video.stat().st_size
            video.unlink()
        wall = time.perf_counter() - t0
    other = other_load(mark, load_mark())
    s = timers.seconds
    per_step = {p: s[p] / done * 1e3 for p in PHASES[:-1]}
    steady = wall - s["setup"]
    per_step["other"] = max(0.0, steady / done * 1e3 - sum(per_step.values()))
    per_step["total"] = steady / done * 1e3
    return {"steps": done, "episodes": episodes, "wall_s": wall,
            "setup_ms_per_episode": s["setup"] / episodes * 1e3, "ms_per_step": per_step,
            "video_bytes": video_bytes, "other_load_cpus": other}


def render(res: dict) -> str:
    ms = res["ms_per_step"]
    real = res["real_time_ms_per_step"]
    lines = [
        f"atari-agent play --video: {res['agent']} on {res['game']}, scale {res['scale']} "
        f"({res['frame_size'][0]}x{res['frame_size'][1]} frames), {res['steps']} agent steps "
        f"per repeat, median of {res['repeats']} repeat(s).",
        f"Machine: {describe_machine(res['machine'])}; {describe_load(res['machine'])}; "
        f"torch {res['machine']['torch']} (play acts on 1 thread), OpenCV "
        f"{res['machine']['opencv']}.",
        "",
    ]
    names = {"emulate": "emulate (AtariEnv.step, reset)",
             "act": "act (Q-values, one forward pass)",
             "draw": "draw overlay (screen read, scale, panel)",
             "encode": "encode (cv2.VideoWriter mp4v)",
             "other": "other (play's loop and bookkeeping)"}
    rows = [(names[p], f"{ms[p]:.2f}", f"{ms[p] / ms['total']:.0%}") for p in PHASES]
    rows.append(("total", f"{ms['total']:.2f}", "100%"))
    lines += table(("phase", "ms per agent step", "share"), rows)
    lines += ["", f"Real time: {real:.1f} ms per agent step ({res['frameskip']} emulator "
              f"frames at 60 Hz). Recording runs at {res['vs_real_time']:.1f}x real time.",
              f"Setup per episode (an env: ALE loads the ROM): "
              f"{res['setup_ms_per_episode']:.0f} ms; {res['episodes_per_repeat']} episode(s) "
              f"per repeat; MP4 {res['video_bytes_per_step'] / 1e3:.1f} kB per step.",
              f"Total per repeat: {', '.join(f'{t:.2f}' for t in res['total_ms_repeats'])} ms "
              f"per step; other processes took {res['other_load_cpus_max']:.1f} CPUs at most.",
              "", *targets_table(res["targets"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint to play (default: a "
                        "freshly initialised network on --game)")
    parser.add_argument("--game", default="breakout", help="the fresh network's game")
    parser.add_argument("--steps", type=int, help="agent steps per repeat (default 600; "
                        "--quick: 20)")
    parser.add_argument("--repeats", type=int, help="default 3; --quick: 1")
    parser.add_argument("--scale", type=int, default=3, help="play's --scale")
    parser.add_argument("--seed", type=int, default=0, help="the fresh network's torch seed")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 steps, once")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    steps = args.steps or (20 if args.quick else 600)
    repeats = args.repeats or (1 if args.quick else 3)
    if steps < 1 or repeats < 1:
        parser.error(f"--steps and --repeats must be >= 1, got {steps} and {repeats}")
    log = progress_log()
    agent = load_agent(args.checkpoint) if args.checkpoint else fresh_agent(args.game, args.seed)
    machine = machine_info(torch=torch.__version__, opencv=cv2.__version__,
                           loadavg_start=loadavg())
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_play-") as tmp:
        for i in range(repeats):
            runs.append(record(agent, steps, args.scale, Path(tmp)))
            log(f"repeat {i + 1}/{repeats}: {runs[-1]['ms_per_step']['total']:.2f} ms per "
                "agent step")
    machine["loadavg_end"] = loadavg()
    frameskip = agent.config.env.frameskip
    real = frameskip / play_mod.EMULATOR_HZ * 1e3
    ms = {p: statistics.median(r["ms_per_step"][p] for r in runs) for p in (*PHASES, "total")}
    env = AtariEnv(agent.config.env, 0)
    lay = overlay_mod.overlay_layout(env.actions.names, args.scale, env.ale.getScreenDims())
    env.close()
    vs_real = real / ms["total"]
    res = {
        "machine": machine, "agent": str(agent.path), "game": agent.game, "scale": args.scale,
        "frame_size": [lay.width, lay.height], "steps": steps, "repeats": repeats,
        "frameskip": frameskip, "real_time_ms_per_step": real, "ms_per_step": ms,
        "vs_real_time": vs_real,
        "total_ms_repeats": [r["ms_per_step"]["total"] for r in runs],
        "setup_ms_per_episode": statistics.median(r["setup_ms_per_episode"] for r in runs),
        "episodes_per_repeat": runs[0]["episodes"],
        "video_bytes_per_step": sum(r["video_bytes"] for r in runs) / (steps * repeats),
        "other_load_cpus_max": max((r["other_load_cpus"] or 0.0) for r in runs),
        "runs": runs,
    }
    res["targets"] = [{"target": f"recording >= {TARGET_VS_REAL_TIME:g}x real time "
                                 f"(<= {real / TARGET_VS_REAL_TIME:.1f} ms per agent step)",
                       "measured": f"{vs_real:.1f}x ({ms['total']:.2f} ms)",
                       "met": vs_real >= TARGET_VS_REAL_TIME}]
    emit(render(res), res, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
