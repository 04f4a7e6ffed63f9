"""Benchmark training: our DQN trainer against stable-baselines3's DQN, same settings, one run.

Run from the repository root (the `agent` package built and installed; stable-baselines3 too):

    python scripts/bench_train.py                      # full run: 25,000 steps a side, ~5-8 min
    python scripts/bench_train.py --quick              # smoke run: 3,000 steps a side
    python scripts/bench_train.py --json bench.json    # also write the numbers as JSON
    python scripts/bench_train.py --steps 50000 --learning-starts 10000 --seed 1
    python scripts/bench_train.py --threads 1          # one torch thread a side (see below)
    python scripts/bench_train.py --envs 1,2,4         # ours and SB3 with 1, 2 and 4 envs
    python scripts/bench_train.py --device cuda --envs 15 --sb3-envs none   # a GPU machine
    python scripts/bench_train.py --envs 2 --sb3-envs none --vector-envs 2  # vs ale-py's vector env
    python scripts/bench_train.py --device cuda --envs 15 --sb3-envs none --device-frames on

Both sides train vanilla DQN on Breakout (ALE's minimal action set, 4 actions) for the same
budget of agent steps with the same hyper-parameters: replay buffer 100,000; batch 32; one
update every 4 agent steps once `--learning-starts` steps are collected; Adam, lr 1e-4 and
epsilon 1e-8 (SB3's default; ours is set to it); gamma 0.99; 1-step targets with the target
network's max (no double DQN) and no TD-target clip; Huber loss; gradient-norm clip 10; a hard
target sync every 10,000 agent steps (ours: 2,500 updates); uniformly random actions until
learning starts, then SB3's epsilon schedule: 1.0 -> 0.05 over the first 10% of the budget,
counted from step 0 (ours counts its decay from learning_starts, so it is given the rest of that
line: explore.eps_start = SB3's epsilon at learning_starts, explore.eps_decay_steps = what is
left of the 10%; at the default 5,000 of 25,000 steps, 0.05 from the first update).
Environment: frameskip 4 with the max of the last two frames, 84x84 gray, 4-frame stack,
sticky actions 0.25 per emulator frame, up to 30 no-ops at reset, FIRE on reset, rewards
clipped to their sign, a lost life a terminal for learning (the game goes on).

- ours: `agent.train.Trainer` with that `Config` (env.action_set "minimal",
  env.terminal_on_life_loss, learner.double_dqn False, learner.td_clip 0, ...), no evaluation,
  one checkpoint at the end, no TensorBoard, its table sent to /dev/null, in a temporary run
  directory.
- sb3: `DQN("CnnPolicy", optimize_memory_usage=False)` on
  `make_atari_env("ALE/Breakout-v5", n_envs=1, env_kwargs={"frameskip": 1,
  "repeat_action_probability": 0.25})` (gymnasium env in SB3's AtariWrapper, Monitor inside)
  + `VecFrameStack(4)`.

Envs. `--envs` lists the numbers of environments our trainer runs with (one run each; default
1,2), `--sb3-envs` SB3's (default: the same; `none` skips SB3). The replay ratio stays the same
whatever N: ours counts `train_freq` over all envs' steps (one update per 4 agent steps);
SB3's counts vector steps, so it is given train_freq 4/N vector steps (N = 1, 2, 4) or, for N a
multiple of 4, one vector step with N/4 gradient steps. SB3's envs run in `SubprocVecEnv`
processes when N > 1 (what SB3 offers for parallel envs; `DummyVecEnv` steps them one after the
other in one process). The headline (`envs`, `sps`, `sps_ratio_vs_sb3`) is the largest N of
`--envs`; `sps_envs2_vs_envs1` is ours with 2 envs over ours with 1, from the same run.

Each side keeps its own defaults for what this script does not set: ours runs its learner
updates in bf16 autocast on CPU (learner.precision "auto"), SB3 in fp32; both use torch's default
thread count. These are what a user gets; the table says which were used.

Each side runs in its own process (this script again, with a hidden `--side` flag that prints
one JSON line), one after the other, so that torch's thread pools, allocator and memory of one
do not disturb the other. Per side:

- learning-phase SPS: the agent steps after `learning_starts` divided by the wall time from the
  moment step `learning_starts` is done (ours: the first learner update begins; SB3: a callback
  sees num_timesteps reach learning_starts) to the last step (ours: the start of the end-of-run
  checkpoint; SB3: the end of training). This is the number the target is about.
- overall SPS: the whole budget over the wall time of `Trainer.run()` / `DQN.learn()`, warm-up
  and our final checkpoint included (building the trainer / model is timed apart, "setup").
  During the warm-up both act uniformly at random (no forward passes) and do not learn.
- updates/s in training: learner updates done during the learning phase over its wall time.
- pure updates/s: after training, on the filled replay, `--pure-updates` (50) updates in a loop
  (ours: `replay.sample` + `learner.update`; SB3: `model.train(gradient_steps=50,
  batch_size=32)`, which samples its buffer itself), median of 3 repeats after 3 warm-up updates.
- score: the mean raw (unclipped) score of the last 20 complete games of training (ours:
  `Trainer.scores`; SB3: the Monitor's `ep_info_buffer`, which sits under the life-loss wrapper
  and so records whole games: the JSON counts SB3's learning terminals (lost lives) beside the
  games), and the number of games. After 25,000 steps both are near random play; the score
  shows that both learn the same task, not which learns better.

ale-py's vector env. `--vector-envs LIST` also steps ale-py's C++ `AtariVectorEnv` with those
numbers of envs on the same game and env settings (synchronous, one thread per env, seeded random
actions, no learning: `bench_env.py`'s row (d)) for `--vector-seconds` (10) after a 2-second
warm-up, each in its own process after the training sides. It is the emulation ceiling a
learning run is held against: `sps_vs_vector_env` is ours (the largest N of `--envs`) over
`AtariVectorEnv` with the largest N of `--vector-envs`, and the target "ours >= 0.5x
AtariVectorEnv" (issue 15's 8,000 agent steps/s while learning with 15 envs, half of
`AtariVectorEnv`'s 16,054 with 16 envs on the GPU machine) is judged on that ratio.

The targets: ours >= 2x SB3's learning-phase SPS with one env each; ours >= 2.5x SB3's with two
envs each; ours with 2 envs >= 1.3x ours with one; with `--vector-envs`, ours >= 0.5x
`AtariVectorEnv`. CPU seconds per wall second of the learning
phase, the other load (CPU seconds per wall second that other processes used, from /proc/stat)
and the load average show how many cores each side used and whether other load shared them.
Other load matters far more than its share: torch's OpenMP threads wait for each other at every
operation, so with torch's default of one thread per core, a single busy core elsewhere slows
both sides' updates about tenfold (measured here: 2 threads 4 updates/s against 50 with one).
Compare such runs with `--threads 1` (what the table's note suggests), or rerun when quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchio import (
    describe_load,
    describe_machine,
    emit,
    fmt,
    fmt_ratio,
    load_mark,
    loadavg,
    machine_info,
    other_load,
    progress_log,
    ratio,
    table,
)

GAME = "breakout"
SB3_ENV_ID = "ALE/Breakout-v5"
REPLAY_CAPACITY = 100_000
BATCH = 32
TRAIN_FREQ = 4
DEVICE_FRAMES = "off"
ACT_GRAPH = False
LR = 1e-4
ADAM_EPS = 1e-8  # torch.optim.Adam's default, which SB3 uses
GAMMA = 0.99
TARGET_UPDATE_STEPS = 10_000  # agent steps between hard target syncs
MAX_GRAD_NORM = 10.0
EXPLORATION_FRACTION = 0.1
EPS_START = 1.0
EPS_END = 0.05
STICKY = 0.25
FRAMESKIP = 4
NOOP_MAX = 30
STACK = 4
SCORE_WINDOW = 20
PURE_REPEATS = 3
PURE_WARMUP = 3

TARGET_SPS_RATIO = 2.0  # ours / SB3, one env each
TARGET_SPS_RATIO_ENVS2 = 2.5  # ours / SB3, two envs each
TARGET_ENVS2_VS_ENVS1 = 1.3  # ours with two envs / ours with one
TARGET_VS_VECTOR_ENV = 0.5  # ours while learning / AtariVectorEnv stepping without learning
OTHER_LOAD_WARN = 0.25  # cores of other load during a learning phase that the table warns about
VECTOR_WARMUP_S = 2.0
LIBRARIES = ("ours", "sb3", "vector")


def side_key(library: str, envs: int) -> str:
    return f"{library}_envs{envs}"


def sb3_train_freq(envs: int) -> tuple[int, int]:
    """SB3's (train_freq in vector steps, gradient_steps) for one update per TRAIN_FREQ agent
    steps with `envs` envs (SB3 counts train_freq in steps of the whole vector env)."""
    if TRAIN_FREQ % envs == 0:
        return TRAIN_FREQ // envs, 1
    if envs % TRAIN_FREQ == 0:
        return 1, envs // TRAIN_FREQ
    raise ValueError(f"SB3 cannot keep one update per {TRAIN_FREQ} agent steps with {envs} envs: "
                     f"use 1, 2, 4 or a multiple of 4")


def settings(steps: int, learning_starts: int, seed: int) -> dict:
    return dict(
        game=GAME, sb3_env_id=SB3_ENV_ID, action_set="minimal", steps=steps,
        learning_starts=learning_starts, seed=seed, replay_capacity=REPLAY_CAPACITY,
        batch_size=BATCH, train_freq=TRAIN_FREQ, gradient_steps=1, lr=LR, adam_eps=ADAM_EPS,
        gamma=GAMMA, n_step=1, double_dqn=False, td_clip=None, loss="huber (delta 1)",
        max_grad_norm=MAX_GRAD_NORM, target_update_steps=TARGET_UPDATE_STEPS,
        target_update_updates_ours=TARGET_UPDATE_STEPS // TRAIN_FREQ,
        eps_start=EPS_START, eps_end=EPS_END, eps_decay_steps=eps_decay_steps(steps),
        ours_explore=ours_explore(steps, learning_starts),
        exploration_fraction=EXPLORATION_FRACTION, frameskip=FRAMESKIP, max_pool_last_two=True,
        screen="84x84 gray", stack=STACK, repeat_action_probability=STICKY, noop_max=NOOP_MAX,
        fire_on_reset=True, clip_rewards=True, terminal_on_life_loss=True,
        score_window=SCORE_WINDOW,
    )


def eps_decay_steps(steps: int, fraction: float = EXPLORATION_FRACTION) -> int:
    """SB3's decay: over the first exploration_fraction of the budget, counted from step 0."""
    return round(fraction * steps)


def ours_explore(steps: int, learning_starts: int, *, eps_end: float = EPS_END,
                 fraction: float = EXPLORATION_FRACTION) -> dict:
    """Our explore section that follows SB3's schedule after learning_starts.

    Ours is uniformly random before learning_starts and decays linearly from eps_start over
    eps_decay_steps counted from there; SB3's line runs from step 0 (and SB3 too acts at random
    until learning_starts). So ours starts where SB3's line is at learning_starts and decays over
    what is left of it (0 steps: eps_end at once). `eps_end` and `fraction` (SB3's
    exploration_final_eps and exploration_fraction) default to this benchmark's; the learning
    benchmark (bench_learning.py) passes its own.
    """
    decay = eps_decay_steps(steps, fraction)
    at_start = EPS_START + (eps_end - EPS_START) * min(learning_starts / max(decay, 1), 1.0)
    return dict(eps_start=round(at_start, 12), eps_end=eps_end,
                eps_decay_steps=max(decay - learning_starts, 0))


def mean_last(scores: list[float]) -> float | None:
    last = scores[-SCORE_WINDOW:]
    return float(statistics.fmean(last)) if last else None


def max_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # not Unix
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def time_pure(update, n: int) -> list[float]:
    """Updates/s of `update(k)` (k updates), PURE_REPEATS times, after a warm-up."""
    update(PURE_WARMUP)
    rates = []
    for _ in range(PURE_REPEATS):
        t = time.perf_counter()
        update(n)
        rates.append(n / (time.perf_counter() - t))
    return rates


def phases(res: dict, start: tuple, learn: tuple | None, end: tuple, done: tuple) -> None:
    """Fill the timing fields of a side's result from its `load_mark()`.

    `start` and `done`: when `run()` / `learn()` begins and returns; `learn` and `end`: when step
    learning_starts and the last step are done. Besides SPS: this process's CPU seconds per wall
    second of the learning phase (how many cores it kept busy), and the CPU seconds per wall
    second that the rest of the machine used meanwhile, in the learning phase and over the whole
    run (other load; None where /proc/stat is not readable).
    """
    steps, ls = res["steps"], res["learning_starts"]
    res["total_s"] = done[0] - start[0]
    res["overall_sps"] = steps / res["total_s"]
    res["other_load_cpu_per_wall_run"] = other_load(start, done)
    if learn is None:  # never reached learning_starts (cannot happen with validated args)
        res.update(warmup_s=None, warmup_sps=None, learning_s=None, learning_sps=None,
                   updates_per_s=None, learning_cpu_per_wall=None, other_load_cpu_per_wall=None)
        return
    res["warmup_s"] = learn[0] - start[0]
    res["warmup_sps"] = ls / res["warmup_s"]
    res["learning_s"] = wall = end[0] - learn[0]
    res["learning_steps"] = steps - ls
    res["learning_sps"] = res["learning_steps"] / wall
    res["updates_per_s"] = res["updates"] / wall
    res["learning_cpu_per_wall"] = (end[1] - learn[1]) / wall
    res["other_load_cpu_per_wall"] = other_load(learn, end)


# ------------------------------------------------------------------------------ the sides
class _SampleTimer:
    """The trainer's replay with its `sample` timed (everything else passed through)."""

    def __init__(self, replay, sample):
        self._replay, self.sample = replay, sample

    def __getattr__(self, name):
        return getattr(self._replay, name)

    def __len__(self) -> int:
        return len(self._replay)


def run_ours(steps: int, learning_starts: int, seed: int, pure_n: int, threads: int,
             envs: int, device: str, overlap: str = "auto") -> dict:
    import torch

    from agent.config import Config
    from agent.train import Trainer

    config = Config().replace(
        env=dict(game=GAME, action_set="minimal", frameskip=FRAMESKIP,
                 repeat_action_probability=STICKY, noop_max=NOOP_MAX,
                 terminal_on_life_loss=True, clip_rewards=True, stack=STACK),
        learner=dict(lr=LR, adam_eps=ADAM_EPS, gamma=GAMMA, n_step=1, batch_size=BATCH,
                     huber_delta=1.0, max_grad_norm=MAX_GRAD_NORM, td_clip=0.0,
                     double_dqn=False, dueling=False,
                     target_update=TARGET_UPDATE_STEPS // TRAIN_FREQ, train_freq=TRAIN_FREQ,
                     learning_starts=learning_starts, threads=threads, device=device,
                     device_frames=DEVICE_FRAMES, act_graph=ACT_GRAPH),
        explore=ours_explore(steps, learning_starts),
        replay=dict(capacity=REPLAY_CAPACITY, prioritized=False),
        run=dict(total_steps=steps, seed=seed, eval_every=0, checkpoint_every=steps,
                 report_seconds=1e9, save_replay=False, envs=envs, overlap=overlap),
    )
    clock = time.perf_counter
    with tempfile.TemporaryDirectory(prefix="bench_train_") as run_dir, \
            open(os.devnull, "w") as devnull:
        t0 = clock()
        trainer = Trainer(config, run_dir, out=devnull, tensorboard=False)
        setup_s = clock() - t0
        marks: dict = {}
        update, save = trainer._update, trainer.save

        def first_update() -> None:  # the first call marks the start of the learning phase
            marks["learn"] = load_mark()
            phase_s.clear()  # from here on: the learning phase
            trainer._update = timed("update", update)
            trainer._update()

        def timed_save():
            if "end" not in marks:  # the first save: the last step is done
                marks["end"] = load_mark()
            t = clock()
            try:
                return save()
            finally:
                marks["save_s"] = marks.get("save_s", 0.0) + clock() - t

        # Where the learning phase's wall time goes: each of these calls timed (a call inside
        # another counts in both: the updates of an overlapped round run between its begin and
        # finish, not inside them).
        phase_s: dict[str, float] = {}

        def timed(name: str, fn):
            def call(*a, **kw):
                t = clock()
                try:
                    return fn(*a, **kw)
                finally:
                    phase_s[name] = phase_s.get(name, 0.0) + clock() - t
            return call

        collector, learner = trainer.collector, trainer.learner
        if collector.num_envs > 1:
            collector.begin = timed("act_and_send", collector.begin)
            collector.finish = timed("env_wait_and_record", collector.finish)
            collector.step = timed("round", collector.step)
        learner.act_batch = timed("act", learner.act_batch)
        learner.act = timed("act", learner.act)
        replay_sample = trainer.replay.sample
        trainer.replay = _SampleTimer(trainer.replay, timed("sample", replay_sample))
        trainer._update, trainer.save = first_update, timed_save
        start = load_mark()
        try:
            result = trainer.run()
        finally:
            trainer.close()
        done = load_mark()
        res = dict(
            side=side_key("ours", envs), library_key="ours", envs=envs,
            overlap=trainer.collector.overlap, phase_s=dict(phase_s),
            device_frames=trainer.frames is not None, act_graph=trainer.learner.act_graphed,
            steps=trainer.steps, learning_starts=learning_starts,
            updates=trainer.learner.updates, setup_s=setup_s, final_checkpoint_s=marks["save_s"],
            state=result.state, incidents=trainer.incidents,
        )
        phases(res, start, marks.get("learn"), marks["end"], done)

        replay, learner = trainer.collector.replay, trainer.learner
        batch = trainer.batch

        def updates(k: int) -> None:
            for _ in range(k):
                replay.sample(BATCH, 1.0, out=batch, rows=trainer.rows)
                learner.update(batch, rows=trainer.rows)
            if learner.device.type == "cuda":
                torch.cuda.synchronize()

        rates = time_pure(updates, pure_n)
        scores = list(trainer.scores)
        res.update(
            pure_updates_n=pure_n, pure_updates_per_s=statistics.median(rates),
            pure_updates_per_s_repeats=rates, episodes=trainer.episodes,
            scores_last=scores[-SCORE_WINDOW:], score=mean_last(scores),
            n_actions=len(trainer.actions),
            precision="bf16 autocast" if learner.bf16 else "fp32",
            precision_setting=config.learner.precision, device=str(learner.device),
            torch_threads=torch.get_num_threads(), torch_version=torch.__version__,
            library="agent (this repository)", max_rss_mb=max_rss_mb(),
        )
    return res


def run_sb3(steps: int, learning_starts: int, seed: int, pure_n: int, threads: int,
            envs: int, device: str) -> dict:
    import ale_py
    import gymnasium
    import stable_baselines3
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import SubprocVecEnv, VecFrameStack

    gymnasium.register_envs(ale_py)
    if threads:
        torch.set_num_threads(threads)
    clock = time.perf_counter

    class Timer(BaseCallback):
        """Marks when step learning_starts is done and when training ends; counts games."""

        def __init__(self) -> None:
            super().__init__()
            self.learn: tuple | None = None
            self.end: tuple = ()
            self.games = 0
            self.learn_terminals = 0
            self.game_end_lives: list[int | None] = []

        def _on_step(self) -> bool:
            if self.learn is None and self.num_timesteps >= learning_starts:
                self.learn = load_mark()
            self.learn_terminals += int(self.locals["dones"].sum())
            for info in self.locals["infos"]:
                if "episode" in info:  # the Monitor closed a whole game
                    self.games += 1
                    self.game_end_lives.append(info.get("lives"))
            return True

        def _on_training_end(self) -> None:
            self.end = load_mark()

    t0 = clock()
    train_freq, gradient_steps = sb3_train_freq(envs)
    env = make_atari_env(SB3_ENV_ID, n_envs=envs, seed=seed,
                         env_kwargs={"frameskip": 1, "repeat_action_probability": STICKY},
                         vec_env_cls=SubprocVecEnv if envs > 1 else None,
                         # fork: the workers inherit ale_py's registration of the ALE/ ids
                         vec_env_kwargs={"start_method": "fork"} if envs > 1 else None)
    env = VecFrameStack(env, STACK)
    model = DQN(
        "CnnPolicy", env, learning_rate=LR, buffer_size=REPLAY_CAPACITY,
        learning_starts=learning_starts, batch_size=BATCH, tau=1.0, gamma=GAMMA,
        train_freq=train_freq, gradient_steps=gradient_steps,
        target_update_interval=TARGET_UPDATE_STEPS, device=device,
        exploration_fraction=EXPLORATION_FRACTION, exploration_initial_eps=EPS_START,
        exploration_final_eps=EPS_END, max_grad_norm=MAX_GRAD_NORM,
        optimize_memory_usage=False, seed=seed, verbose=0,
    )
    setup_s = clock() - t0
    timer = Timer()
    start = load_mark()
    model.learn(total_timesteps=steps, callback=timer, progress_bar=False)
    done = load_mark()
    res = dict(side=side_key("sb3", envs), library_key="sb3", envs=envs,
               steps=model.num_timesteps, learning_starts=learning_starts,
               updates=model._n_updates, setup_s=setup_s, sb3_train_freq=train_freq,
               sb3_gradient_steps=gradient_steps,
               vec_env="SubprocVecEnv" if envs > 1 else "DummyVecEnv")
    phases(res, start, timer.learn, timer.end, done)

    def updates(k: int) -> None:
        model.train(gradient_steps=k, batch_size=BATCH)
        if model.device.type == "cuda":
            torch.cuda.synchronize()

    rates = time_pure(updates, pure_n)
    scores = [float(info["r"]) for info in model.ep_info_buffer]
    optimizer = model.policy.optimizer
    env.close()
    res.update(
        pure_updates_n=pure_n, pure_updates_per_s=statistics.median(rates),
        pure_updates_per_s_repeats=rates, episodes=timer.games,
        learn_terminals=timer.learn_terminals,
        games_ended_with_lives=sorted(set(timer.game_end_lives), key=str),
        scores_last=scores[-SCORE_WINDOW:], score=mean_last(scores),
        n_actions=int(env.action_space.n),
        precision=f"fp32 ({str(next(model.policy.parameters()).dtype).removeprefix('torch.')})",
        device=str(model.device), adam_eps=optimizer.defaults["eps"],
        torch_threads=torch.get_num_threads(), torch_version=torch.__version__,
        library=f"stable-baselines3 {stable_baselines3.__version__}", max_rss_mb=max_rss_mb(),
    )
    return res


def run_vector(envs: int, seconds: float) -> dict:
    """ale-py's AtariVectorEnv with `envs` envs stepping random actions for `seconds` after a
    warm-up (bench_env.py's row (d), our env settings): its agent steps/s."""
    from bench_env import Row, close_quietly, make_atarivectorenv, run_for

    row = Row(side_key("vector", envs), f"ale_py AtariVectorEnv, {envs} env{'s' * (envs > 1)}",
              num_envs=envs)
    make_atarivectorenv(row, GAME)
    try:
        run_for(row.step, VECTOR_WARMUP_S)
        cpu = time.process_time()
        calls, wall = run_for(row.step, seconds)
        cpu = time.process_time() - cpu
    finally:
        close_quietly(row)
    return {"side": row.key, "library_key": "vector", "library": row.name, "envs": envs,
            "n_actions": row.actions, "seconds": wall, "agent_steps": calls * envs,
            "sps": calls * envs / wall, "cpu_per_wall": cpu / wall}


def side_main(side: str, envs: int, device: str, steps: int, learning_starts: int, seed: int,
              pure_n: int, threads: int, overlap: str, seconds: float) -> int:
    """`--side`: train one side, print its result as one JSON line on stdout."""
    stdout, sys.stdout = sys.stdout, sys.stderr  # whatever the libraries print goes to stderr
    if side == "vector":
        res = run_vector(envs, seconds)
    elif side == "ours":
        res = run_ours(steps, learning_starts, seed, pure_n, threads, envs, device, overlap)
    else:
        res = run_sb3(steps, learning_starts, seed, pure_n, threads, envs, device)
    print(json.dumps(res), file=stdout, flush=True)
    return 0


def run_side(library: str, envs: int, args, log) -> dict:
    """This script in a fresh process for one side; its result, or {"error": ...}."""
    key = side_key(library, envs)
    cmd = [sys.executable, os.path.abspath(__file__), "--side", library, "--side-envs",
           str(envs), "--vector-seconds", str(args.vector_seconds), "--device", args.device,
           "--steps", str(args.steps),
           "--learning-starts", str(args.learning_starts), "--seed", str(args.seed),
           "--pure-updates", str(args.pure_updates), "--threads", str(args.threads),
           "--overlap", args.overlap, "--device-frames", args.device_frames, "--batch",
           str(args.batch), *(["--act-graph"] if args.act_graph else []), "--train-freq",
           str(args.train_freq)]
    log(f"stepping {key} for {args.vector_seconds:g} s" if library == "vector" else
        f"training {key}: {args.steps:,} steps (learning from {args.learning_starts:,})")
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # stderr: passed through
    wall = time.perf_counter() - t
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        log(f"{key} failed (exit status {proc.returncode}; see stderr above)")
        return {"side": key, "library_key": library, "envs": envs,
                "error": f"exit status {proc.returncode}", "process_s": wall}
    res = json.loads(lines[-1])
    res["process_s"] = wall
    log(f"{key} done in {wall:.0f} s: " + (f"{res['sps']:.0f} SPS" if library == "vector" else
                                            f"learning-phase {res['learning_sps']:.0f} SPS"))
    return res


# ---------------------------------------------------------------------------------- report
def render(res: dict) -> str:
    m, s = res["machine"], res["settings"]
    sides = res["sides"]
    lines = [
        f"Machine: {describe_machine(m)}; Python {m['python']}; {describe_load(m)}.",
        f"Breakout (minimal action set), {s['steps']:,} agent steps a side, learning from step "
        f"{s['learning_starts']:,}, seed {s['seed']}; vanilla DQN, replay "
        f"{s['replay_capacity']:,}, batch {s['batch_size']}, an update every {s['train_freq']} "
        f"agent steps (over all envs), target sync every {s['target_update_steps']:,} steps, "
        f"epsilon {s['eps_start']:g} -> {s['eps_end']:g} over {s['eps_decay_steps']:,} steps; "
        f"torch threads: {s['torch_threads']}; device {s['device']}.",
        "",
    ]
    for key, d in sides.items():
        if "error" in d:
            lines.append(f"- {key}: failed ({d['error']})")
            continue
        extra = (f", {d['vec_env']}, train_freq {d['sb3_train_freq']} vector steps x "
                 f"{d['sb3_gradient_steps']} gradient steps" if d["library_key"] == "sb3" else
                 f", updates {'while the envs emulate' if d['overlap'] else 'after each round'}"
                 + (", batches gathered on the device" if d.get("device_frames") else "")
                 + (", acting captured in a CUDA graph" if d.get("act_graph") else ""))
        lines.append(
            f"- {key}: {d['library']}, torch {d['torch_version']}, {d['precision']}, "
            f"{d['torch_threads']} torch threads, device {d['device']}, {d['n_actions']} actions"
            f"{extra}; setup {d['setup_s']:.1f} s, warm-up {fmt(d['warmup_s'], '.1f')} s, "
            f"learning {fmt(d['learning_s'], '.1f')} s ({fmt(d['learning_cpu_per_wall'], '.2f')} "
            f"CPU s per wall s; other load {fmt(d['other_load_cpu_per_wall'], '.2f')} cores, "
            f"{fmt(d['other_load_cpu_per_wall_run'], '.2f')} over the whole run), "
            f"{d['updates']:,} updates; peak RSS {fmt(d['max_rss_mb'], ',.0f')} MB."
            + ("" if not d.get("phase_s") else " Learning phase, seconds in: " + ", ".join(
                f"{k} {v:.1f}" for k, v in sorted(d["phase_s"].items())) + ".")
        )
    busy = [d[k] for d in sides.values()
            for k in ("other_load_cpu_per_wall", "other_load_cpu_per_wall_run")
            if d.get(k) is not None]
    if busy and max(busy) > OTHER_LOAD_WARN:
        lines.append(
            f"- note: other processes kept up to {max(busy):.2f} cores busy during a side's run; "
            "torch's OpenMP threads slow down many times over when one of their cores is taken "
            "(rerun on a quiet machine, or compare with --threads 1)."
        )
    rows = []
    for d in sides.values():
        if "error" in d:
            rows.append([d["library_key"], d["envs"], *["n/a"] * 6, "", ""])
            continue
        vs1 = vs_sb3 = ""
        if d["library_key"] == "ours":
            r1 = res["sps_vs_envs1"].get(str(d["envs"]))
            rs = res["sps_vs_sb3"].get(str(d["envs"]))
            vs1 = fmt_ratio(r1, missing="")
            vs_sb3 = "" if rs is None else f"**{rs:.2f}x**"
        rows.append([d["library_key"], d["envs"], fmt(d["learning_sps"]), fmt(d["overall_sps"]),
                     fmt(d["updates_per_s"], ",.1f"), fmt(d["pure_updates_per_s"], ",.1f"),
                     d["episodes"], fmt(d["score"], ".1f"), vs1, vs_sb3])
    vector = res.get("vector_env", {})
    if vector:
        lines.append("")
    for d in vector.values():
        lines.append(f"- {d['side']}: failed ({d['error']})" if "error" in d else
                     f"- {d['library']} (no learning: the emulation ceiling), {d['n_actions']} "
                     f"actions: **{d['sps']:,.0f}** agent steps/s over {d['seconds']:.1f} s "
                     f"({d['cpu_per_wall']:.2f} CPU s per wall s in its process).")
    if res.get("sps_vs_vector_env") is not None:
        lines.append(f"- ours with {res['envs']} envs while learning / AtariVectorEnv with "
                     f"{res['vector_env_envs']} envs: **{res['sps_vs_vector_env']:.2f}x**.")
    lines += ["", *table(("Side", "envs", "learning-phase SPS", "overall SPS",
                          "updates/s (in training)", "pure updates/s", "episodes",
                          f"score (last {SCORE_WINDOW})", "vs ours, 1 env", "vs SB3, same envs"),
                         rows), ""]
    for t in res["targets"]:
        status = {True: "met", False: "not met", None: "n/a"}[t["met"]]
        lines.append(f"target: {t['target']} -> {status} ({fmt(t['value'], '.2f')}x)")
    lines += ["", f"Total runtime {res['runtime_s']:.0f} s."]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def parse_envs(text: str) -> list[int]:
    """--envs / --sb3-envs: comma-separated counts >= 1 ("none": no run)."""
    if text == "none":
        return []
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated env counts >= 1 (e.g. 1,2) "
                                         f"or 'none', got {text!r}")
    return sorted(set(values))


def main(argv: list[str] | None = None) -> int:
    global BATCH, TRAIN_FREQ, DEVICE_FRAMES, ACT_GRAPH  # --batch, --train-freq, --device-frames
    # --act-graph
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3,000 steps a side, learning from step 1,000")
    parser.add_argument("--steps", type=int, help="agent steps a side (25,000; quick 3,000)")
    parser.add_argument("--learning-starts", type=int,
                        help="agent steps before the first update (5,000; quick 1,000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both sides (0)")
    parser.add_argument("--pure-updates", type=int, default=50, metavar="N",
                        help="updates per timed loop of the pure update rate (50)")
    parser.add_argument(
        "--threads", type=int, default=0, metavar="N",
        help="torch threads of both sides; 0 (default) keeps torch's default, what users get",
    )
    parser.add_argument("--envs", type=parse_envs, default=[1, 2], metavar="LIST",
                        help="env counts our trainer runs with, one run each (1,2)")
    parser.add_argument("--sb3-envs", type=parse_envs, default=None, metavar="LIST",
                        help="env counts SB3 runs with (default: as --envs; 'none': no SB3)")
    parser.add_argument("--device", default="cpu",
                        help="learner device of both sides: cpu (default), cuda, auto")
    parser.add_argument("--batch", type=int, default=BATCH,
                        help=f"batch size of both sides ({BATCH}); with --train-freq, the same "
                             "gradient samples per agent step in larger, fewer updates")
    parser.add_argument("--train-freq", type=int, default=TRAIN_FREQ,
                        help=f"agent steps per update, over all envs ({TRAIN_FREQ})")
    parser.add_argument("--overlap", choices=("auto", "on", "off"), default="auto",
                        help="ours: run.overlap, updates while the env workers emulate (auto: "
                             "on with a GPU learner)")
    parser.add_argument("--device-frames", choices=("auto", "on", "off"), default=DEVICE_FRAMES,
                        help="ours: learner.device_frames, the replay's frames copied to the "
                             "learner's device and batches gathered there (off)")
    parser.add_argument("--act-graph", action="store_true",
                        help="ours: learner.act_graph, acting captured in a CUDA graph")
    parser.add_argument("--vector-envs", type=parse_envs, default=[], metavar="LIST",
                        help="also step ale-py's AtariVectorEnv with these env counts (none)")
    parser.add_argument("--vector-seconds", type=float, default=10.0, metavar="S",
                        help="timed seconds of each AtariVectorEnv run (10)")
    parser.add_argument("--json", metavar="PATH", help="write the results as one JSON object")
    parser.add_argument("--side", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--side-envs", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch < 1 or args.train_freq < 1:
        parser.error("--batch and --train-freq must be >= 1")
    BATCH, TRAIN_FREQ, DEVICE_FRAMES = args.batch, args.train_freq, args.device_frames
    ACT_GRAPH = args.act_graph
    if args.steps is None:
        args.steps = 3_000 if args.quick else 25_000
    if args.learning_starts is None:
        args.learning_starts = 1_000 if args.quick else 5_000
    if not BATCH <= args.learning_starts < args.steps:
        parser.error(f"need {BATCH} <= --learning-starts < --steps")
    if not args.vector_seconds > 0:
        parser.error(f"--vector-seconds must be > 0, got {args.vector_seconds}")
    if args.pure_updates < 1 or args.seed < 0 or args.threads < 0:
        parser.error("--pure-updates must be >= 1, --seed and --threads >= 0")
    if args.sb3_envs is None:
        args.sb3_envs = args.envs
    for n in args.sb3_envs:
        try:
            sb3_train_freq(n)
        except ValueError as exc:
            parser.error(f"--sb3-envs: {exc}")
    if not args.envs:
        parser.error("--envs needs at least one count")
    if args.side is not None:  # a child: one side
        return side_main(args.side, args.side_envs, args.device, args.steps,
                         args.learning_starts, args.seed, args.pure_updates, args.threads,
                         args.overlap, args.vector_seconds)

    t0, log = time.perf_counter(), progress_log()

    res: dict = {
        "machine": machine_info(loadavg_start=loadavg()),
        "quick": args.quick,
        "settings": {**settings(args.steps, args.learning_starts, args.seed),
                     "torch_threads": args.threads or "torch's default",
                     "device": args.device, "envs": args.envs, "sb3_envs": args.sb3_envs,
                     "overlap": args.overlap, "device_frames": args.device_frames,
                     "act_graph": args.act_graph,
                     "vector_envs": args.vector_envs},
        "sides": {},
    }
    for n in args.envs:
        res["sides"][side_key("ours", n)] = run_side("ours", n, args, log)
    for n in args.sb3_envs:
        res["sides"][side_key("sb3", n)] = run_side("sb3", n, args, log)
    res["vector_env"] = {side_key("vector", n): run_side("vector", n, args, log)
                         for n in args.vector_envs}
    res["machine"]["loadavg_end"] = loadavg()

    sides = res["sides"]

    def get(library: str, n: int, key: str):
        return sides.get(side_key(library, n), {}).get(key)

    res["sps_vs_envs1"] = {str(n): ratio(get("ours", n, "learning_sps"),
                                         get("ours", 1, "learning_sps")) for n in args.envs}
    res["sps_vs_sb3"] = {str(n): ratio(get("ours", n, "learning_sps"),
                                       get("sb3", n, "learning_sps")) for n in args.envs}
    head = max(args.envs)
    keys = ("learning_sps", "overall_sps", "updates_per_s", "pure_updates_per_s")
    res["ratios"] = {k: ratio(get("ours", head, k), get("sb3", head, k)) for k in keys}
    res.update(
        envs=head,
        sps=get("ours", head, "learning_sps"), sps_sb3=get("sb3", head, "learning_sps"),
        sps_ratio_vs_sb3=res["ratios"]["learning_sps"],
        overall_sps_ratio_vs_sb3=res["ratios"]["overall_sps"],
        updates_ratio_vs_sb3=res["ratios"]["updates_per_s"],
        pure_updates_ratio_vs_sb3=res["ratios"]["pure_updates_per_s"],
        updates_per_s=get("ours", head, "updates_per_s"),
        updates_per_s_sb3=get("sb3", head, "updates_per_s"),
        pure_updates_per_s=get("ours", head, "pure_updates_per_s"),
        pure_updates_per_s_sb3=get("sb3", head, "pure_updates_per_s"),
        score=get("ours", head, "score"), score_sb3=get("sb3", head, "score"),
        episodes=get("ours", head, "episodes"), episodes_sb3=get("sb3", head, "episodes"),
        sps_envs2_vs_envs1=ratio(get("ours", 2, "learning_sps"), get("ours", 1, "learning_sps")),
    )
    vector_head = max(args.vector_envs, default=None)
    vector_sps = res["vector_env"].get(side_key("vector", vector_head), {}).get("sps")
    res.update(vector_env_envs=vector_head, vector_env_sps=vector_sps,
               sps_vs_vector_env=ratio(res["sps"], vector_sps))

    def target(text: str, threshold: float, value: float | None) -> dict:
        return dict(target=text, threshold=threshold, value=value,
                    met=None if value is None else value >= threshold)

    res["targets"] = [
        target(f"ours >= {TARGET_SPS_RATIO:g}x SB3's SPS, 1 env each (learning phase)",
               TARGET_SPS_RATIO, res["sps_vs_sb3"].get("1")),
        target(f"ours >= {TARGET_SPS_RATIO_ENVS2:g}x SB3's SPS, 2 envs each (learning phase)",
               TARGET_SPS_RATIO_ENVS2, res["sps_vs_sb3"].get("2")),
        target(f"ours with 2 envs >= {TARGET_ENVS2_VS_ENVS1:g}x ours with 1 (learning phase)",
               TARGET_ENVS2_VS_ENVS1, res["sps_envs2_vs_envs1"]),
    ]
    if args.vector_envs:
        res["targets"].append(target(
            f"ours with {head} envs >= {TARGET_VS_VECTOR_ENV:g}x AtariVectorEnv with "
            f"{vector_head} envs (ours learning, it only stepping)", TARGET_VS_VECTOR_ENV,
            res["sps_vs_vector_env"]))
    res["runtime_s"] = time.perf_counter() - t0
    emit(render(res), res, args.json)
    return 0 if all("error" not in d for d in [*sides.values(), *res["vector_env"].values()]) \
        else 1


if __name__ == "__main__":
    sys.exit(main())
