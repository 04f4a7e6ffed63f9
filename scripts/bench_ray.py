"""Benchmark the Ray actors: agent steps/s gathered into the learner's replay with 1 and 2 actors
(and more with --actors) against the one-machine collector at the same number of envs, in one
run, plus the Ray path's cost per transition in the learner.

Run from the repository root (the package installed with the [ray] extra):

    python scripts/bench_ray.py                    # Pong, 1 and 2 actors of 1 env, 4,000 steps
    python scripts/bench_ray.py --actors 1,2,4,8,14 --steps 20000   # a 16-core machine
    python scripts/bench_ray.py --quick --actors 1 # smoke: a few hundred steps
    python scripts/bench_ray.py --json ray.json

What is timed: collection alone, as `atari-agent train` collects before and between updates,
without the updates (which are the same learner either way). Each case builds the trainer of a
run (its config: --game, minimal actions, `--envs` envs per actor, learning from step 32 so
that the actors act with their network copies), then calls its collector's `step` until
`--steps` agent steps, timed after `--warmup` steps:

- one machine: `--actors x --envs` envs in this process and worker processes (run.envs), each
  round one batched forward pass at epsilon 0.01;
- Ray: `ray.actors` actors of `--envs` envs on a local Ray instance started for the case (not
  timed), each acting with its own Ape-X epsilon, chunks of `ray.chunk` steps per env.

The table: steps/s of each case, Ray over one machine at the same total envs (the issue's
target: >= 0.8 on this 2-core machine), each actor's own steps/s, and the learner's cost per
transition of the Ray path: the time to write the chunks into the replay over the transitions
(the rest of the transport runs in Ray's processes).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchio import (  # noqa: E402
    describe_load,
    describe_machine,
    emit,
    fmt,
    fmt_ratio,
    loadavg,
    machine_info,
    progress_log,
    ratio,
    table,
)

TARGET_RATIO = 0.8
QUICK = dict(steps=400, warmup=100)


def config_for(game: str, envs: int, actors: int, ray: bool, seed: int):
    from agent.config import Config

    c = Config().replace(
        env={"game": game, "action_set": "minimal"},
        learner={"learning_starts": 32, "threads": 1},
        explore={"eps_start": 0.01, "eps_end": 0.01, "eps_decay_steps": 0},
        replay={"capacity": 100_000},
        run={"envs": envs if ray else envs * actors, "eval_every": 0, "seed": seed,
             "report_seconds": 1e9})
    if ray:
        c = c.replace(ray={"address": "local", "actors": actors})
    return c


def measure(config, steps: int, warmup: int) -> dict:
    """Collect `steps` agent steps with the trainer's collector; steps/s after `warmup`."""
    from agent.train import Trainer

    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as out:
        trainer = Trainer(config, Path(tmp) / "run", tensorboard=False, out=out)
        try:
            collector = trainer.collector
            collector.start()
            while collector.steps < warmup:
                trainer._step()
            t0, s0 = time.perf_counter(), collector.steps
            ingest0 = getattr(collector, "ingest_seconds", 0.0)
            while collector.steps < steps:
                trainer._step()
            wall = time.perf_counter() - t0
            n = collector.steps - s0
            res = {"sps": n / wall, "steps": n, "wall_s": wall}
            if config.ray.enabled:
                res["ingest_us_per_step"] = 1e6 * (collector.ingest_seconds - ingest0) / n
                res["actor_sps"] = collector.stats()["actor_sps"]
        finally:
            trainer.close()
    return res


def render(res: dict) -> str:
    lines = [f"Ray actors vs one machine: {res['game']}, agent steps/s gathered (no updates), "
             f"{res['steps']:,} steps a case after {res['warmup']:,}",
             describe_machine(res["machine"]), describe_load(res["machine"]), ""]
    rows = []
    for case in res["cases"]:
        rows.append([case["actors"], case["total_envs"], fmt(case["one_machine"]["sps"]),
                     fmt(case["ray"]["sps"]), fmt_ratio(case["ratio"]),
                     " / ".join(fmt(s) for s in case["ray"]["actor_sps"]),
                     fmt(case["ray"]["ingest_us_per_step"], ".1f")])
    lines += table(["actors", "envs", "one machine", "Ray", "Ray / one", "per actor",
                    "ingest µs/step"], rows)
    lines.append(f"\ntarget: Ray >= {TARGET_RATIO}x one machine at equal envs")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--game", default="pong")
    p.add_argument("--actors", default="1,2", help="comma-separated actor counts (1,2)")
    p.add_argument("--envs", type=int, default=1, help="envs per actor (1)")
    p.add_argument("--steps", type=int, default=4_000, help="agent steps a case (4,000)")
    p.add_argument("--warmup", type=int, default=500, help="untimed steps first (500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--quick", action="store_true", help="smoke: 400 steps a case")
    args = p.parse_args(argv)
    try:
        actors = [int(a) for a in args.actors.split(",")]
    except ValueError:
        p.error(f"--actors: expected comma-separated counts such as 1,2, got {args.actors!r}")
    if any(a < 1 for a in actors) or args.envs < 1:
        p.error("--actors and --envs must be >= 1")
    steps, warmup = args.steps, args.warmup
    if args.quick:
        steps, warmup = QUICK["steps"], QUICK["warmup"]
    if warmup >= steps:
        p.error(f"--warmup ({warmup}) must be below --steps ({steps})")
    try:
        import ray  # noqa: F401
    except ImportError:
        p.error('Ray is not installed: pip install -e ".[ray]"')
    log = progress_log()
    res = {"game": args.game, "steps": steps - warmup, "warmup": warmup,
           "envs_per_actor": args.envs, "machine": machine_info(loadavg_start=loadavg()),
           "cases": []}
    for a in actors:
        case = {"actors": a, "total_envs": a * args.envs}
        log(f"one machine, {a * args.envs} env(s)")
        case["one_machine"] = measure(config_for(args.game, args.envs, a, False, args.seed),
                                      steps, warmup)
        log(f"Ray, {a} actor(s) of {args.envs} env(s)")
        case["ray"] = measure(config_for(args.game, args.envs, a, True, args.seed), steps,
                              warmup)
        case["ratio"] = ratio(case["ray"]["sps"], case["one_machine"]["sps"])
        res["cases"].append(case)
    res["machine"]["loadavg_end"] = loadavg()
    emit(render(res), res, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
