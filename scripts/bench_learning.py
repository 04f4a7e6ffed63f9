"""Learning benchmark: our DQN trainer against stable-baselines3's DQN, same settings, score over
agent steps and over training wall-clock, evaluated under our evaluation protocol.

Run from the repository root (the `agent` package built and installed; stable-baselines3 too):

    python scripts/bench_learning.py --quick                 # smoke run: ~2 min on 2 cores
    python scripts/bench_learning.py                         # Pong, 500,000 steps a side, seed 0
    python scripts/bench_learning.py --game pong,breakout --seeds 0,1,2 --threads 1
    python scripts/bench_learning.py --sides ours --steps 1000000 --eval-every 100000
    python scripts/bench_learning.py --resume                # continue a cut benchmark in --out
    python scripts/bench_learning.py --json learning.json --png learning.png
    python scripts/bench_learning.py --parallel --threads 1 --eval-workers 1   # sides at once
    python scripts/bench_learning.py --sides ours --action-set documented --out doc
    python scripts/bench_learning.py --merge bench-learning,doc --out both   # one chart of both
    python scripts/bench_learning.py --game breakout --sides ours-ray --ray-actors 2 --out ray

What it measures. For each game, seed and side ("ours": `agent.train.Trainer`; "ours-ray": the
same trainer with its Ape-X actors on a local Ray instance, agent/distributed.py; "sb3":
stable-baselines3's `DQN("CnnPolicy")`), one training run of --steps agent steps that saves its
policy every --eval-every steps (and at the end). Each saved policy is scored over
--eval-episodes episodes under our evaluation protocol (agent/protocol.py: sticky actions 0.25,
game over ends an episode, raw game score, 108,000-frame cap, up to 30 no-op frames, epsilon
0.001, evaluation seed 0 for every point, so every point plays the same games). The random
policy is scored once per game the same way: the reference line. Each point records the
training wall-clock seconds since the run's start, EXCLUDING setup (building the env and the
model), saving the point (checkpoint / model and replay buffer), and evaluation: a run's
training is paused while its points are evaluated, so wall time is what training alone took.

Matched settings (both sides identical; bench_train.py's settings where a learning benchmark
does not need others): vanilla DQN, the ALE minimal action set (--action-set), replay buffer
100,000; batch 32; one update every 4 agent steps once 20,000 steps are collected (learning
starts); Adam lr 1e-4, epsilon 1e-8; gamma 0.99; 1-step targets with the target network's max
(no double DQN), no TD-target clip; Huber loss; gradient-norm clip 10; a hard target sync every
1,000 agent steps (ours: 250 updates); uniformly random actions until learning starts, then
SB3's epsilon line 1.0 -> 0.01 over the first 10% of the budget counted from step 0 (ours
counts from learning_starts, so it starts where SB3's line is then: 0.604 at the default budget,
and decays over the 30,000 steps left of it). These are the RL Zoo's Atari DQN settings
(replay 100k, lr 1e-4, batch 32, train_freq 4, target sync 1,000, exploration 10% down to
0.01) with learning_starts scaled from the Zoo's 100k of a 10M budget to 20k of 500k.
Environment: frameskip 4 with the max of the last two frames, 84x84 gray, 4-frame stack,
sticky actions 0.25, up to 30 no-ops at reset, FIRE on reset, rewards clipped to their sign,
a lost life a terminal for learning (the game goes on). --quick: 2,000 steps, learning from
500, points every 1,000 steps, 2 episodes, replay 5,000 (a smoke run: nothing is learnt).
Each side keeps its own defaults for what is not set here, as users get them: ours updates in
bf16 autocast on CPUs with native bf16 (learner.precision "auto") and keeps its watchdog, SB3
runs fp32; results.json's "runs" says which precision, threads and device each run used.

- ours: `Trainer` with that Config, one env, checkpoint_every = --eval-every with every
  checkpoint kept and its replay snapshot saved (run.save_replay), no periodic evaluation of
  its own, no TensorBoard; scored with `agent.evaluate.evaluate` on the checkpoints.
- ours-ray: ours with `--ray` (a local Ray instance started and shut down by the run) and
  --ray-actors actors of one env each (default 2; the replay gets one stream per actor env).
  What differs from ours is exploration: random actions until learning starts, then each
  actor keeps its fixed epsilon of the Ape-X ladder (0.4 ** (1 + 7 i / (N - 1)): 0.4 and
  0.0007 with 2 actors) instead of the decaying line; the actors act with weights at most
  ray.sync_every (400) agent steps old. The learner's updates per agent step are the same.
- sb3: `DQN("CnnPolicy", optimize_memory_usage=False)` on `make_atari_env("ALE/<Game>-v5",
  n_envs=1, env_kwargs={"frameskip": 1, "repeat_action_probability": 0.25})` (SB3's
  AtariWrapper) + `VecFrameStack(4)`; a callback saves the model and its replay buffer every
  --eval-every steps, after that rollout's update. Its replay holds observations and next
  observations apart: about 5.6 GB at 100,000 (ours: about 0.7 GB).

How SB3 is evaluated: its saved Q-network plays greedily (epsilon 0.001) in OUR protocol env
(agent.env.AtariEnv through agent.protocol.play_episode, the same episodes as ours). That works
because the layouts match: SB3's CnnPolicy sees VecFrameStack's 84x84x4 channel-last stack
(oldest frame first) transposed by VecTransposeImage to 4x84x84 and divides by 255 itself
(`policy.predict` on our 4x84x84 uint8 stack, oldest first, does the same); its frames are
OpenCV's gray + INTER_AREA resize of the max of two RGB frames, which our native kernel matches
to within 1 gray level; and gymnasium's ALE minimal action set has the same order as ours
(both are `ALEInterface.getMinimalActionSet()`): checked for every game before anything runs.
What differs: SB3 pads a new stack with zeros, ours with the first frame; ours presses FIRE
after a lost life where the game waits for it, as SB3's FireResetEnv does per life in training.

Processes. Each run trains in its own process (this script again, hidden --child flag), one run
at a time, so torch's thread pools of one side never meet the other's. With --parallel the sides
of a game and seed train at the same time instead (give each its share of the cores with
--threads: 1 on 2 cores), so both see the same machine, and the same outside load, while both
run; the faster side finishes first and the other then has the machine to itself. Evaluations
stay one at a time: a run that reaches a point while the other's is scored waits (untimed).
At each point the child saves, records the point in its run directory (points.json) and waits;
this process evaluates the point (episodes spread over --eval-workers processes) and lets it go
on. A child is only ever stopped by its pid; one whose parent is gone stops at its next point.

Output, in --out (default bench-learning/): results.json, written atomically after every
point (a cut loses at most the point in progress), and curves.png: one row of two panels per
game (score vs agent steps, score vs training wall-clock minutes), one line per (side, seed),
the random policy's mean as a dashed grey line; --json and --png write copies. Run directories:
OUT/<game>/<side>-seed<seed>/ (ours: a run directory `atari-agent plot` reads, checkpoints/;
sb3: model-<steps>.zip). The replay snapshots needed to resume are deleted once a run is done.
At the end a table: side, game, seed, steps, wall minutes, mean +- std. A point in
results.json also keeps its episodes' scores and `buttons`: the shares of their agent steps
that pressed noop, ZAP, FIRE, FIRE+ZAP (how much a policy leans on ZAP, e.g. Phoenix's shield).

Merge. `--merge DIR,DIR --out OUT` trains nothing: it overlays finished (or running)
benchmarks whose settings differ only in games, seeds, sides, --action-set or --shared-outputs
(anything else is refused, named) in OUT's results.json, curves.png and table. Each line is
named by its side and, where not minimal, ours' action set ("ours documented shared"); each
action set keeps its own random policy.

Resume. `--resume` continues the benchmark in --out: points already in results.json are kept
as they are (not recomputed), points a run saved but that were not evaluated yet are evaluated,
and a cut training run continues from its last saved point (what it trained after that
point is trained again): ours with `Trainer.restore` from
that checkpoint and its replay snapshot (as `atari-agent train --resume`: exactly where it
stopped), SB3 with `DQN.load` of that model, `load_replay_buffer` and `learn(...,
reset_num_timesteps=False)` (a fresh env episode: not bit-exact). Its wall time goes on from
the last point's. --resume refuses an --out whose benchmark had other settings (it names the
first that differs); it may add games, seeds or sides. --stop-after-points N stops after N
points have been evaluated by this command, as a cut would (to split a benchmark into pieces;
the smoke test uses it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from bench_train import (
    ADAM_EPS,
    BATCH,
    EPS_START,
    EXPLORATION_FRACTION,
    FRAMESKIP,
    GAMMA,
    LR,
    MAX_GRAD_NORM,
    NOOP_MAX,
    STACK,
    STICKY,
    TRAIN_FREQ,
    eps_decay_steps,
    ours_explore,
)
from benchio import loadavg, machine_info, progress_log
from learning_results import (
    CURVES,
    MERGED,
    RESULTS,
    SIDES,
    BenchError,
    merge,
    render_png,
    report,
)

STEPS = 500_000
EVAL_EVERY = 50_000
EVAL_EPISODES = 10
LEARNING_STARTS = 20_000
REPLAY_CAPACITY = 100_000
TARGET_UPDATE_STEPS = 1_000  # agent steps between hard target syncs (the RL Zoo's Atari value)
EPS_END = 0.01  # the RL Zoo's Atari exploration_final_eps
QUICK = dict(steps=2_000, learning_starts=500, eval_every=1_000, eval_episodes=2, replay=5_000)
EVAL_SEED = 0
EVAL_EPSILON = 0.001  # the protocol's (explore.eval_epsilon)
LEDGER = "points.json"


# ------------------------------------------------------------------------------ settings
def make_settings(args) -> dict:
    """Everything both sides train and are scored with (as plain JSON values)."""
    s = dict(
        steps=args.steps, eval_every=args.eval_every, eval_episodes=args.eval_episodes,
        action_set=args.action_set, learning_starts=args.learning_starts,
        replay_capacity=args.replay, batch_size=BATCH, train_freq=TRAIN_FREQ, gradient_steps=1,
        lr=LR, adam_eps=ADAM_EPS, gamma=GAMMA, n_step=1, double_dqn=False, td_clip=None,
        loss="huber (delta 1)", max_grad_norm=MAX_GRAD_NORM,
        target_update_steps=TARGET_UPDATE_STEPS,
        target_update_updates_ours=TARGET_UPDATE_STEPS // TRAIN_FREQ,
        exploration_fraction=EXPLORATION_FRACTION, eps_start=EPS_START, eps_end=EPS_END,
        eps_decay_steps=eps_decay_steps(args.steps),
        ours_explore=ours_explore(args.steps, args.learning_starts, eps_end=EPS_END),
        frameskip=FRAMESKIP, stack=STACK, repeat_action_probability=STICKY, noop_max=NOOP_MAX,
        fire_on_reset=True, clip_rewards=True, terminal_on_life_loss=True,
        eval_seed=EVAL_SEED, eval_epsilon=EVAL_EPSILON,
        eval_protocol="sticky actions 0.25, game over ends an episode, raw score, "
                      "108,000-frame cap, up to 30 no-op frames",
        torch_threads=args.threads, device=args.device,
        games=args.game, seeds=args.seeds, sides=args.sides,
    )
    if args.shared_outputs:  # only when set: a benchmark from before the flag resumes as it was
        s["shared_outputs"] = True
    return json.loads(json.dumps(s))  # tuples -> lists: equal to what results.json reads back


def base_env(s: dict, game: str) -> dict:
    """The env section both sides train on (and, with the protocol's settings, are scored on)."""
    return dict(game=game, action_set=s["action_set"], frameskip=s["frameskip"],
                repeat_action_probability=s["repeat_action_probability"],
                noop_max=s["noop_max"], terminal_on_life_loss=True, clip_rewards=True,
                stack=s["stack"])


def protocol_env(s: dict, game: str):
    from agent.config import EnvConfig
    from agent.protocol import protocol_config

    return protocol_config(EnvConfig(**base_env(s, game)))


def ours_config(s: dict, game: str, seed: int, run_dir: Path):
    from agent.config import Config

    points = math.ceil(s["steps"] / s["eval_every"])
    return Config().replace(
        env=base_env(s, game),
        learner=dict(lr=s["lr"], adam_eps=s["adam_eps"], gamma=s["gamma"], n_step=1,
                     batch_size=s["batch_size"], huber_delta=1.0,
                     max_grad_norm=s["max_grad_norm"], td_clip=0.0, double_dqn=False,
                     dueling=False, target_update=s["target_update_updates_ours"],
                     train_freq=s["train_freq"], learning_starts=s["learning_starts"],
                     threads=s["torch_threads"], device=s["device"],
                     shared_outputs=s.get("shared_outputs", False)),
        explore={**s["ours_explore"], "eval_epsilon": s["eval_epsilon"]},
        replay=dict(capacity=s["replay_capacity"], prioritized=False),
        run=dict(total_steps=s["steps"], seed=seed, envs=1, eval_every=0,
                 checkpoint_every=s["eval_every"], keep_last=points + 1, save_replay=True,
                 report_seconds=60.0, runs_dir=str(run_dir.parent), name=run_dir.name),
    )


def sb3_env_id(game: str) -> str | None:
    """gymnasium's ALE/<Game>-v5 id of our ROM id (None if gymnasium has none)."""
    import ale_py
    import gymnasium

    gymnasium.register_envs(ale_py)
    ids = [k for k, spec in gymnasium.registry.items()
           if k.startswith("ALE/") and k.endswith("-v5") and spec.kwargs.get("game") == game]
    return ids[0] if ids else None


def check_action_order(game: str) -> list[str]:
    """Our minimal action set and gymnasium's (SB3's) for `game`, which must be the same list in
    the same order (SB3's Q-network is played in our env by action index); the names."""
    import ale_py
    import gymnasium

    from agent.games import action_set

    env_id = sb3_env_id(game)
    if env_id is None:
        raise BenchError(f"game {game!r} has no gymnasium ALE/...-v5 env, so SB3 cannot train "
                         f"on it: use --sides ours, or another --game")
    gymnasium.register_envs(ale_py)
    env = gymnasium.make(env_id, frameskip=1, repeat_action_probability=STICKY)
    try:
        theirs = list(env.unwrapped.get_action_meanings())
    finally:
        env.close()
    ours = list(action_set(game, "minimal").ale_names)
    if theirs != ours:
        raise BenchError(f"{game}: our minimal action set {ours} and gymnasium's {env_id} "
                         f"{theirs} differ, so SB3's actions cannot be played in our env")
    return ours


def is_point(steps: int, s: dict) -> bool:
    return steps % s["eval_every"] == 0 or steps >= s["steps"]


def run_key(side: str, game: str, seed: int) -> str:
    return f"{side}/{game}/seed{seed}"


def run_dir_of(out: Path, side: str, game: str, seed: int) -> Path:
    return out / game / f"{side}-seed{seed}"


# ------------------------------------------------------------------------------ files
def write_json(path: Path, obj) -> None:
    from agent.files import atomic_write

    data = (json.dumps(obj, indent=1) + "\n").encode()
    atomic_write(Path(path), lambda f: f.write(data))


def read_ledger(run_dir: Path) -> dict:
    """A run's saved points: {"points": [{"steps", "wall_s", "path", "save_s"}], ...}."""
    try:
        return json.loads((run_dir / LEDGER).read_text())
    except (OSError, ValueError):
        return {"points": []}


def drop_replays(side: str, run_dir: Path) -> None:
    """A finished run's replay snapshots (only a resume needs them; they are large)."""
    pattern = "replay-*.pkl" if side == "sb3" else "checkpoints/replay-*.npz"
    for path in run_dir.glob(pattern):
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ the child
class _Pause:
    """A child's side of a point: count training time, save, record, wait for the parent."""

    def __init__(self, spec: dict, send, offset: float):
        self.spec, self.send = spec, send
        self.run_dir = Path(spec["run_dir"])
        self.ledger = read_ledger(self.run_dir)
        self.ledger.update(side=spec["side"], game=spec["game"], seed=spec["seed"])
        self.train_s = offset
        self.t = time.perf_counter()
        self.stop = False

    def begin(self) -> None:
        """Training starts (again) now."""
        self.t = time.perf_counter()

    def point(self, steps: int, save) -> None:
        """`save()` (returns the saved file's path, relative to the run directory) at a point:
        record it, tell the parent, wait for its word ("go" or "stop"; EOF: stop)."""
        self.train_s += time.perf_counter() - self.t
        t = time.perf_counter()
        path = save()
        entry = dict(steps=int(steps), wall_s=self.train_s, path=str(path),
                     save_s=time.perf_counter() - t)
        self.ledger["points"].append(entry)
        self.ledger["finished"] = steps >= self.spec["settings"]["steps"]
        write_json(self.run_dir / LEDGER, self.ledger)
        self.send({"type": "point", **entry})
        reply = sys.stdin.readline().strip()
        self.stop = reply != "go"
        self.begin()


def child_ours(spec: dict, send) -> dict:
    import torch

    from agent.train import Trainer, check_resume

    s, run_dir = spec["settings"], Path(spec["run_dir"])
    config = ours_config(s, spec["game"], spec["seed"], run_dir)
    if spec["side"] == "ours-ray":
        config = config.replace(ray={"address": "local", "actors": spec["actors"]})
    ledger = read_ledger(run_dir)
    resume_from = None
    if ledger["points"]:
        resume_from = run_dir / ledger["points"][-1]["path"]
        config = check_resume(config, resume_from)
    with open(os.devnull, "w") as devnull:
        trainer = Trainer(config, run_dir, out=devnull, tensorboard=False)
        try:
            if resume_from is not None:
                trainer.restore(resume_from)
            pause = _Pause(spec, send, ledger["points"][-1]["wall_s"] if ledger["points"] else 0.0)
            save = trainer.save

            def point_save():
                # A save at a point; any other (Ctrl-C / SIGTERM mid-segment) is skipped, so a
                # resume goes on from the last point, whose replay snapshot is the one kept.
                if not is_point(trainer.steps, s):
                    return None
                pause.point(trainer.steps, lambda: save().relative_to(run_dir))
                if pause.stop:
                    trainer.request_stop("the benchmark stopped")
                return trainer.last_checkpoint

            trainer.save = point_save
            send({"type": "info", "library": "agent (this repository)",
                  "precision": "bf16 autocast" if trainer.learner.bf16 else "fp32",
                  "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
                  "device": str(trainer.learner.device), "n_actions": len(trainer.actions),
                  "resumed_from": trainer.steps if resume_from is not None else None,
                  **({"ray_actors": config.ray.actors} if config.ray.enabled else {})})
            pause.begin()
            result = trainer.run()
        finally:
            trainer.close()
    return {"state": result.state, "steps": trainer.steps, "error": result.error}


def child_sb3(spec: dict, send) -> dict:
    import ale_py
    import gymnasium
    import stable_baselines3
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    from agent import files

    gymnasium.register_envs(ale_py)
    s, run_dir, seed = spec["settings"], Path(spec["run_dir"]), spec["seed"]
    files.remove_stale_temps(run_dir)  # what a child killed mid-save left
    if s["torch_threads"]:
        torch.set_num_threads(s["torch_threads"])
    ledger = read_ledger(run_dir)
    start = ledger["points"][-1]["steps"] if ledger["points"] else 0
    for path in [*run_dir.glob("model-*.zip"), *run_dir.glob("replay-*.pkl")]:
        if int(path.stem.split("-")[1]) > start:  # saved by a child cut before recording it
            path.unlink()
    env = make_atari_env(sb3_env_id(spec["game"]), n_envs=1, seed=seed + start,
                         env_kwargs={"frameskip": 1, "repeat_action_probability": STICKY})
    env = VecFrameStack(env, s["stack"])
    if start:
        model_path, replay_path = (run_dir / f"model-{start:012d}.zip",
                                   run_dir / f"replay-{start:012d}.pkl")
        if not replay_path.is_file():
            raise BenchError(f"cannot resume {run_dir} at step {start:,}: its replay buffer "
                             f"{replay_path.name} is missing")
        model = DQN.load(model_path, env=env, device=s["device"])
        model.load_replay_buffer(replay_path)
        model.set_random_seed(seed + start)
    else:
        model = DQN(
            "CnnPolicy", env, learning_rate=s["lr"], buffer_size=s["replay_capacity"],
            learning_starts=s["learning_starts"], batch_size=s["batch_size"], tau=1.0,
            gamma=s["gamma"], train_freq=s["train_freq"], gradient_steps=1,
            target_update_interval=s["target_update_steps"], device=s["device"],
            exploration_fraction=s["exploration_fraction"],
            exploration_initial_eps=s["eps_start"], exploration_final_eps=s["eps_end"],
            max_grad_norm=s["max_grad_norm"], optimize_memory_usage=False, seed=seed,
            verbose=0,
        )
    n_actions = int(model.action_space.n)
    assert tuple(model.observation_space.shape) == (s["stack"], 84, 84), \
        model.observation_space  # VecTransposeImage's channel-first stack: our layout
    assert model.policy.optimizer.defaults["eps"] == s["adam_eps"]
    pause = _Pause(spec, send, ledger["points"][-1]["wall_s"] if ledger["points"] else 0.0)

    def save(steps: int) -> str:
        # the replay first: a model on disk always has its replay buffer beside it
        replay = run_dir / f"replay-{steps:012d}.pkl"
        files.atomic_write(replay, model.save_replay_buffer)
        name = f"model-{steps:012d}.zip"
        files.atomic_write(run_dir / name, model.save)
        return name

    class Points(BaseCallback):
        """A point at the first rollout start at or past each multiple of eval_every, i.e.
        after the update of the rollout that reached it (the last one: after learn())."""

        def __init__(self) -> None:
            super().__init__()
            self.next = (start // s["eval_every"] + 1) * s["eval_every"]
            self.last = start

        def _on_rollout_start(self) -> None:
            n = self.model.num_timesteps
            if n >= self.next and n < s["steps"] and not pause.stop:
                self.save_point(n)

        def save_point(self, n: int) -> None:
            pause.point(n, lambda: save(n))
            for old in run_dir.glob("replay-*.pkl"):  # only the newest point's is needed
                if old.name != f"replay-{n:012d}.pkl":
                    old.unlink(missing_ok=True)
            self.last, self.next = n, (n // s["eval_every"] + 1) * s["eval_every"]

        def _on_step(self) -> bool:
            return not pause.stop

    send({"type": "info", "library": f"stable-baselines3 {stable_baselines3.__version__}",
          "precision": "fp32", "torch_threads": torch.get_num_threads(),
          "torch_version": torch.__version__, "device": str(model.device),
          "n_actions": n_actions, "resumed_from": start or None})
    points = Points()
    pause.begin()
    model.learn(total_timesteps=s["steps"] - start, callback=points,
                reset_num_timesteps=not start, progress_bar=False)
    if not pause.stop and model.num_timesteps > points.last:
        points.save_point(model.num_timesteps)
    env.close()
    state = "finished" if model.num_timesteps >= s["steps"] else "interrupted"
    return {"state": state, "steps": int(model.num_timesteps), "error": None}


def child_main(spec_json: str) -> int:
    """--child: train one run, talking to the parent in JSON lines on stdout / words on stdin."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops us by pid
    spec = json.loads(spec_json)
    stdout, sys.stdout = sys.stdout, sys.stderr  # whatever the libraries print goes to stderr

    def send(obj: dict) -> None:
        print(json.dumps(obj), file=stdout, flush=True)

    run = child_sb3 if spec["side"] == "sb3" else child_ours
    send({"type": "done", **run(spec, send)})
    return 0


# ------------------------------------------------------------------------------ evaluation
_SB3_MODELS: dict[str, object] = {}
"""Per-process cache of loaded SB3 models (an evaluation worker plays several episodes)."""


def _init_eval_worker() -> None:
    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C


def _sb3_episode(model_path: str, env: dict, seed: int, index: int, epsilon: float):
    """Episode `index` of SB3's saved policy in our protocol env (as evaluate's own tasks)."""
    from stable_baselines3 import DQN

    from agent.config import from_dict
    from agent.env import AtariEnv
    from agent.protocol import episode_streams, play_episode

    model = _SB3_MODELS.get(model_path)
    if model is None:  # buffer_size 1: acting needs no replay buffer
        model = _SB3_MODELS[model_path] = DQN.load(model_path, device="cpu", buffer_size=1)
    env_seed, rng = episode_streams(seed, index)
    game = AtariEnv(from_dict({"env": env}, source="evaluation task").env, env_seed)
    try:
        assert int(model.action_space.n) == len(game.actions), (model.action_space, game.actions)
        assert tuple(model.observation_space.shape) == game.observation.shape

        def act(obs) -> int:
            return int(model.policy.predict(obs, deterministic=True)[0])

        return index, play_episode(game, act, rng, epsilon)
    finally:
        game.close()


def eval_sb3(model_path: Path, env_config, episodes: int, workers: int) -> list:
    """SB3's saved policy over `episodes` protocol episodes, in `workers` processes."""
    env = {**asdict(env_config), "frame_shape": list(env_config.frame_shape)}
    tasks = [(str(model_path), env, EVAL_SEED, i, EVAL_EPSILON) for i in range(episodes)]
    workers = workers or min(os.cpu_count() or 1, episodes)
    if workers <= 1:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return [_sb3_episode(*t)[1] for t in tasks]
        finally:
            _SB3_MODELS.clear()
            torch.set_num_threads(threads)
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    pool = ProcessPoolExecutor(workers, mp_context=get_context("forkserver"),
                               initializer=_init_eval_worker)
    done = False
    try:
        out = dict(pool.map(_sb3_episode, *zip(*tasks)))
        done = True
        return [out[i] for i in range(episodes)]
    finally:
        processes = list(getattr(pool, "_processes", {}).values())
        if not done:  # interrupted or failed: stop the workers we started, by pid
            for process in processes:
                process.kill()
        pool.shutdown(wait=True, cancel_futures=True)


def eval_point(side: str, game: str, seed: int, run_dir: Path, entry: dict, s: dict,
               workers: int) -> dict:
    from agent.protocol import summarize

    path = run_dir / entry["path"]
    if side != "sb3":
        from agent.evaluate import checkpoint_targets, evaluate

        (r,) = evaluate(checkpoint_targets([path], {}), s["eval_episodes"], EVAL_SEED,
                        EVAL_EPSILON, workers)
    else:
        episodes = eval_sb3(path, protocol_env(s, game), s["eval_episodes"], workers)
        r = {**summarize(episodes), "scores": [e.score for e in episodes]}
    return dict(side=side, game=game, action_set=s["action_set"],
                shared_outputs=s.get("shared_outputs", False), seed=seed,
                steps=entry["steps"], wall_s=entry["wall_s"], mean=r["mean"], std=r["std"],
                episodes=len(r["scores"]), scores=r["scores"], buttons=r["buttons"])


def eval_random(game: str, s: dict, workers: int) -> dict:
    from agent.config import EnvConfig
    from agent.evaluate import evaluate, random_target

    (r,) = evaluate([random_target(EnvConfig(**base_env(s, game)), {})], s["eval_episodes"],
                    EVAL_SEED, EVAL_EPSILON, workers)
    return dict(game=game, action_set=s["action_set"], mean=r["mean"], std=r["std"],
                episodes=r["episodes"], scores=r["scores"])


# ------------------------------------------------------------------------------ the parent
class Bench:
    """The benchmark in --out: results.json's object, kept and published after every point."""

    def __init__(self, args, res: dict, log):
        self.args, self.res = args, res
        self.out = Path(args.out)
        self.s = res["settings"]
        self.new_points = 0
        self.stopped = False
        self.failed: list[str] = []
        # --parallel: one thread a run; results.json's object and the evaluations are shared
        self.lock = threading.RLock()
        self.procs: dict[str, subprocess.Popen] = {}
        self._log = log

    def log(self, message: str) -> None:
        with self.lock:  # whole lines: --parallel's threads log too
            self._log(message)

    def publish(self) -> None:
        with self.lock:
            self._publish()

    def _publish(self) -> None:
        for path in filter(None, (self.out / RESULTS, self.args.json)):
            write_json(Path(path), self.res)
        png = render_png(self.res)
        from agent.files import atomic_write

        for path in filter(None, (self.out / CURVES, self.args.png)):
            atomic_write(Path(path), lambda f: f.write(png))

    def budget_left(self) -> bool:
        n = self.args.stop_after_points
        return n is None or self.new_points < n

    def has_point(self, side: str, game: str, seed: int, steps: int) -> bool:
        return any((p["side"], p["game"], p["seed"], p["steps"]) == (side, game, seed, steps)
                   for p in self.res["points"])

    def add_point(self, side: str, game: str, seed: int, run_dir: Path, entry: dict) -> None:
        with self.lock:  # one evaluation at a time: a parallel run waits at its point
            self._add_point(side, game, seed, run_dir, entry)

    def _add_point(self, side: str, game: str, seed: int, run_dir: Path, entry: dict) -> None:
        t = time.perf_counter()
        p = eval_point(side, game, seed, run_dir, entry, self.s, self.args.eval_workers)
        self.res["points"].append(p)
        self.new_points += 1
        self.publish()
        self.log(f"{run_key(side, game, seed)} step {p['steps']:,}: {p['mean']:.1f} ± "
                 f"{p['std']:.1f} ({p['wall_s'] / 60:.1f} min of training; evaluated in "
                 f"{time.perf_counter() - t:.0f} s)")

    def random(self, game: str) -> None:
        if any(r["game"] == game for r in self.res["random"]):
            return
        r = eval_random(game, self.s, self.args.eval_workers)
        self.res["random"].append(r)
        self.publish()
        self.log(f"random policy on {game}: {r['mean']:.1f} ± {r['std']:.1f}")

    def run(self, side: str, game: str, seed: int) -> None:
        """One run: its points not yet evaluated, then its training from its last point."""
        key = run_key(side, game, seed)
        run_dir = run_dir_of(self.out, side, game, seed)
        with self.lock:
            info = self.res["runs"].setdefault(key, dict(side=side, game=game, seed=seed,
                                                         run_dir=str(run_dir)))
        ledger = read_ledger(run_dir)
        for entry in ledger["points"]:  # saved by an earlier command, not evaluated yet
            if not self.has_point(side, game, seed, entry["steps"]):
                if not self.budget_left():
                    self.stopped = True
                    return
                self.add_point(side, game, seed, run_dir, entry)
        done = ledger["points"][-1]["steps"] if ledger["points"] else 0
        if done >= self.s["steps"]:
            drop_replays(side, run_dir)
            info["state"] = "finished"
            return
        if not self.budget_left():
            self.stopped = True
            return
        if not ledger["points"] and run_dir.exists():
            shutil.rmtree(run_dir)  # a run cut before its first point: start it again
        run_dir.mkdir(parents=True, exist_ok=True)
        self.log(f"training {key}: " + (f"resuming at step {done:,}, " if done else "")
                 + f"to {self.s['steps']:,} steps, a point every {self.s['eval_every']:,}")
        result = self.train(side, game, seed, run_dir, info)
        with self.lock:
            info["state"] = result.get("state", "failed")
            if result.get("error"):
                info["error"] = result["error"]
        if info["state"] == "finished":
            drop_replays(side, run_dir)
        elif not self.stopped:
            self.failed.append(key)
            self.log(f"{key} did not finish: {info['state']}"
                     + (f" ({info['error']})" if info.get("error") else ""))
        self.publish()

    def train(self, side: str, game: str, seed: int, run_dir: Path, info: dict) -> dict:
        """The run's child process, its points evaluated while it waits; its "done" message
        (or {"state": "failed", "error": ...})."""
        spec = dict(side=side, game=game, seed=seed, run_dir=str(run_dir), settings=self.s,
                    actors=self.args.ray_actors)
        cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.procs[run_key(side, game, seed)] = proc
        result: dict = {}
        try:
            while line := proc.stdout.readline():
                if not line.startswith("{"):
                    continue
                msg = json.loads(line)
                kind = msg.pop("type")
                if kind == "info":
                    with self.lock:
                        info.update(msg)
                elif kind == "point":
                    self.add_point(side, game, seed, run_dir, msg)
                    go = self.budget_left()
                    self.stopped = not go
                    try:
                        proc.stdin.write("go\n" if go else "stop\n")
                        proc.stdin.flush()
                    except BrokenPipeError:  # it died meanwhile: its exit status says so
                        break
                elif kind == "done":
                    result = msg
            code = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C, SIGTERM) or failed here: stop it
                proc.kill()
                proc.wait()
            self.procs.pop(run_key(side, game, seed), None)
        if code != 0 or not result:
            return {"state": "failed", "error": f"its process ended with exit status {code} "
                                                f"(see stderr above)"}
        return result


    def run_together(self, runs: list[tuple[str, str, int]]) -> None:
        """--parallel: the runs at once, one thread (and one training process) each. Ctrl-C or
        a failure here stops every child by its pid; a thread's error is raised here."""
        errors: list[BaseException] = []

        def one(side: str, game: str, seed: int) -> None:
            try:
                self.run(side, game, seed)
            except BaseException as exc:  # noqa: BLE001 -- handed to the main thread
                errors.append(exc)

        threads = [threading.Thread(target=one, args=run, daemon=True) for run in runs]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.5)  # a timed join: Ctrl-C reaches this thread
        finally:
            for proc in list(self.procs.values()):
                if proc.poll() is None:
                    proc.kill()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]


# ------------------------------------------------------------------------------ arguments
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + error
        self.exit(2, f"{self.prog}: error: {message}\n")


def _list(kind: str, cast=str):
    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",")]
        if not all(items):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind}, got "
                                             f"{text!r}")
        try:
            values = [cast(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind}, got "
                                             f"{text!r}") from None
        return list(dict.fromkeys(values))  # in order, without repeats
    return parse


def parse_args(argv: list[str] | None):
    p = _Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--game", type=_list("games"), default=["pong"],
                   help="game(s), comma-separated (pong)")
    p.add_argument("--steps", type=int, help=f"agent steps a run ({STEPS:,}; quick "
                                             f"{QUICK['steps']:,})")
    p.add_argument("--eval-every", type=int, help=f"agent steps between points ({EVAL_EVERY:,}; "
                                                  f"quick {QUICK['eval_every']:,})")
    p.add_argument("--eval-episodes", type=int,
                   help=f"episodes a point ({EVAL_EPISODES}; quick {QUICK['eval_episodes']})")
    p.add_argument("--seeds", type=_list("seeds (ints >= 0)", int), default=[0],
                   help="training seeds, comma-separated (0)")
    p.add_argument("--sides", type=_list("sides"), default=["ours", "sb3"],
                   help="ours, ours-ray (ours with Ape-X actors on Ray), sb3; comma-separated "
                        "(ours,sb3)")
    p.add_argument("--action-set", default="minimal", help="minimal (default) or documented "
                                                           "(ours only)")
    p.add_argument("--shared-outputs", action="store_true",
                   help="ours: one network output per distinct ALE action "
                        "(learner.shared_outputs; matters with --action-set documented)")
    p.add_argument("--learning-starts", type=int,
                   help=f"agent steps before the first update ({LEARNING_STARTS:,}; quick "
                        f"{QUICK['learning_starts']})")
    p.add_argument("--replay", type=int, help=f"replay capacity ({REPLAY_CAPACITY:,}; quick "
                                              f"{QUICK['replay']:,})")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads of each training process (0: torch's default)")
    p.add_argument("--device", default="cpu", help="learner device of both sides: cpu "
                                                   "(default), cuda, cuda:N")
    p.add_argument("--eval-workers", type=int, default=0,
                   help="processes an evaluation spreads episodes over (0: one per CPU)")
    p.add_argument("--out", default="bench-learning",
                   help="directory of the benchmark: runs, models, results.json, curves.png "
                        "(bench-learning/)")
    p.add_argument("--json", metavar="FILE", help="also write results.json here")
    p.add_argument("--png", metavar="FILE", help="also write curves.png here")
    p.add_argument("--resume", action="store_true",
                   help="continue the benchmark in --out (finished points are kept)")
    p.add_argument("--quick", action="store_true",
                   help="smoke budget: 2,000 steps, learning from 500, a point every 1,000, "
                        "2 episodes, replay 5,000")
    p.add_argument("--stop-after-points", type=int, metavar="N",
                   help="stop (as a cut would) after N points evaluated by this command; "
                        "continue with --resume")
    p.add_argument("--ray-actors", type=int, default=2, metavar="N",
                   help="Ray actors of the ours-ray side, one env each (default 2)")
    p.add_argument("--parallel", action="store_true",
                   help="train the sides of a game and seed at the same time, one process "
                        "each, so both see the same machine load (give each its share of the "
                        "cores with --threads)")
    p.add_argument("--merge", type=_list("benchmark directories"), metavar="DIR,DIR",
                   help="train nothing: overlay the benchmarks in these --out directories "
                        "(e.g. one per action set) in --out's results.json and curves.png")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        return args
    quick = QUICK if args.quick else dict(steps=STEPS, learning_starts=LEARNING_STARTS,
                                          eval_every=EVAL_EVERY, eval_episodes=EVAL_EPISODES,
                                          replay=REPLAY_CAPACITY)
    for name, default in quick.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    try:
        check_args(args)
    except BenchError as exc:
        p.error(str(exc))
    return args


def check_args(args) -> None:
    from agent.games import check_game

    bad = [side for side in args.sides if side not in SIDES]
    if bad:
        raise BenchError(f"unknown side {bad[0]!r} in --sides: accepted: {', '.join(SIDES)} "
                         f"(comma-separated)")
    if args.steps < 1:
        raise BenchError(f"--steps must be a positive number of agent steps, got {args.steps}")
    if args.eval_every < 1:
        raise BenchError(f"--eval-every must be a positive number of agent steps, got "
                         f"{args.eval_every}")
    if args.eval_every > args.steps:
        raise BenchError(f"--eval-every ({args.eval_every:,}) must not exceed --steps "
                         f"({args.steps:,}): a run needs a point before it ends")
    for name in ("steps", "eval_every"):
        if getattr(args, name) % TRAIN_FREQ:
            raise BenchError(f"--{name.replace('_', '-')} must be a multiple of {TRAIN_FREQ} "
                             f"(one update per {TRAIN_FREQ} agent steps: both sides then save "
                             f"their points at the same steps), got {getattr(args, name)}")
    if args.eval_episodes < 1:
        raise BenchError(f"--eval-episodes must be >= 1, got {args.eval_episodes}")
    if not BATCH <= args.learning_starts < args.steps:
        raise BenchError(f"--learning-starts must be in [{BATCH}, --steps), got "
                         f"{args.learning_starts}")
    if args.replay < BATCH:
        raise BenchError(f"--replay must be at least {BATCH} transitions, got {args.replay}")
    if any(seed < 0 for seed in args.seeds):
        raise BenchError(f"--seeds must be ints >= 0, got {min(args.seeds)}")
    if args.threads < 0 or args.eval_workers < 0:
        raise BenchError("--threads and --eval-workers must be >= 0 (0: the default)")
    if args.ray_actors < 1:
        raise BenchError(f"--ray-actors must be >= 1, got {args.ray_actors}")
    if "ours-ray" in args.sides:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise BenchError('--sides ours-ray needs Ray: pip install -e ".[ray]"') from None
    if args.stop_after_points is not None and args.stop_after_points < 1:
        raise BenchError(f"--stop-after-points must be >= 1, got {args.stop_after_points}")
    if args.action_set not in ("minimal", "documented"):
        raise BenchError(f"unknown --action-set {args.action_set!r}: accepted: minimal, "
                         f"documented")
    if args.shared_outputs and "sb3" in args.sides:
        raise BenchError("--shared-outputs is a setting of ours (learner.shared_outputs): use "
                         "it with --sides ours")
    if args.action_set != "minimal" and "sb3" in args.sides:
        raise BenchError(f"--action-set {args.action_set}: SB3 plays the minimal action set "
                         f"only; use --action-set minimal, or --sides ours")
    for game in args.game:
        try:
            check_game(game)
        except ValueError as exc:
            raise BenchError(f"--game: {exc}") from None
    for path in (args.json, args.png):
        if path and not Path(path).resolve().parent.is_dir():
            raise BenchError(f"{path}: its directory does not exist")


def open_bench(args, settings: dict) -> dict:
    """results.json's object: a new one, or (--resume) the one in --out, settings checked."""
    out = Path(args.out)
    path = out / RESULTS
    if not args.resume:
        if path.exists():
            raise BenchError(f"{out} already holds a benchmark ({path}): pass --resume to "
                             f"continue it, or choose another --out")
        for game in settings["games"]:
            for seed in settings["seeds"]:
                for side in settings["sides"]:
                    if run_dir_of(out, side, game, seed).exists():
                        raise BenchError(f"{run_dir_of(out, side, game, seed)} exists but "
                                         f"{path} does not: choose another --out")
        return {"settings": settings, "points": [], "random": [], "runs": {}, "invocations": 0}
    if not path.is_file():
        raise BenchError(f"--resume: {out} holds no benchmark to continue (no {path}); run "
                         f"without --resume to start one")
    try:
        res = json.loads(path.read_text())
        old = res["settings"]
        for key in ("points", "random", "runs"):
            res.setdefault(key, [] if key != "runs" else {})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"--resume: {path} is not a benchmark's results ({exc})") from None
    for key, value in settings.items():
        if key not in MERGED and old.get(key) != value:
            hint = (" (it was started with --quick)" if res.get("quick") is True
                    and not args.quick else "")
            raise BenchError(f"--resume: {out} holds a benchmark with {key} = "
                             f"{json.dumps(old.get(key))}, this command asks for "
                             f"{json.dumps(value)}{hint}: resume with its settings, or choose "
                             f"another --out")
    for key in MERGED:
        old[key] = list(dict.fromkeys([*old.get(key, []), *settings[key]]))
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        return child_main(args.child)
    if args.merge:
        try:
            if any(Path(d).resolve() == Path(args.out).resolve() for d in args.merge):
                raise BenchError(f"--merge writes into --out {args.out}, one of the merged "
                                 f"benchmarks: choose another --out")
            res = merge(args.merge)
        except BenchError as exc:
            print(f"bench_learning.py: error: {exc}", file=sys.stderr)
            return 2
        Path(args.out).mkdir(parents=True, exist_ok=True)
        Bench(args, res, print).publish()
        print(report(res, False, Path(args.out)))
        return 0
    settings = make_settings(args)
    try:
        res = open_bench(args, settings)
        orders = {g: check_action_order(g) for g in args.game} if "sb3" in args.sides else {}
    except BenchError as exc:
        print(f"bench_learning.py: error: {exc}", file=sys.stderr)
        return 2
    # SIGTERM as Ctrl-C: the finally blocks stop the child and the evaluation workers by pid
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log = progress_log()
    import torch

    # This process only evaluates (in-process with --eval-workers 1): one thread, as evaluate's
    # workers; torch's default of one per core slows many times over when a core is busy.
    torch.set_num_threads(1)

    try:
        import stable_baselines3
        sb3_version = stable_baselines3.__version__
    except ImportError:  # needed only with --sides sb3
        sb3_version = None
    res["machine"] = machine_info(loadavg_start=loadavg(), torch=torch.__version__,
                                  stable_baselines3=sb3_version)
    res["quick"] = args.quick
    res["invocations"] = res.get("invocations", 0) + 1
    res.setdefault("action_orders", {}).update(orders)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, res, log)
    bench.publish()
    try:
        for game in args.game:
            bench.random(game)
            for seed in args.seeds:
                if args.parallel:
                    bench.run_together([(side, game, seed) for side in args.sides])
                for side in () if args.parallel else args.sides:
                    bench.run(side, game, seed)
                    if bench.stopped:
                        break
                if bench.stopped:
                    break
            if bench.stopped:
                break
    finally:
        res["machine"]["loadavg_end"] = loadavg()
        bench.publish()
    print(report(res, bench.stopped, out))
    if bench.failed:
        print(f"failed: {', '.join(bench.failed)} (rerun with --resume to try again)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
