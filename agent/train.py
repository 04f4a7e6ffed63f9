"""`atari-agent train`: the clipped-gradient DQN training job, top to bottom.

Per round: every env acts epsilon-greedily (one batched forward pass over the N acting stacks)
and steps; each new frame goes straight into its env's stream of the replay ring (see
agent/collector.py). Once the replay holds `learning_starts` transitions, one learner update of
`batch_size` per `train_freq` agent steps, counted over all envs (so the replay ratio does not
change with N); every `watchdog.check_every` updates a health check (the seed system's
diagnostics, agent/health.py) that the watchdog judges, rolling back to the last healthy
checkpoint on a divergence. Every `report_seconds` a row (terminal table, metrics.jsonl,
TensorBoard); every `checkpoint_every` steps a checkpoint; every `eval_every` steps an
evaluation that keeps the best checkpoint. Ctrl-C / SIGTERM stop at the next round and save
first. A checkpoint that cannot be written (a full disk) leaves the previous one intact and, by
run.on_save_error, stops the run (state "failed") or trains on and tries again at the next
interval. An env worker that dies or hangs stops the run "failed", naming it; the checkpoints
written so far are intact.

A checkpoint captures the whole run (agent/runstate.py): learner, every env (emulator + RNG),
the exploration and diagnostics RNGs, the watchdog's history and the probe batch, and with
--save-replay the replay, so that `--resume` continues exactly as if the run had not stopped.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from agent import checkpoint as ckpt_io
from agent import runstate
from agent.checkpoint import CheckpointError, CheckpointStore
from agent.collector import Collector, EnvFactory, check_streams, resolve_envs, streams
from agent.config import Config, EnvConfig, dump_toml
from agent.device_frames import DeviceFrames, device_frames_fit
from agent.env import AtariEnv
from agent.games import action_set
from agent.health import HealthMonitor
from agent.learner import Learner, resolve_device
from agent.native import Batch
from agent.network import QNetwork
from agent.protocol import protocol_config, run_episodes, summarize
from agent.report import Reporter
from agent.runs import write_status
from agent.workers import WorkerError

__all__ = ["EnvFactory", "TrainResult", "Trainer", "check_resume", "default_env", "train"]


def default_env(seed: int, config: EnvConfig) -> AtariEnv:
    return AtariEnv(config, seed)


@dataclass
class TrainResult:
    run_dir: Path
    state: str
    """"finished", "interrupted" (Ctrl-C / SIGTERM / stop_after), "halted" (watchdog) or
    "failed" (a checkpoint could not be written, see run.on_save_error; bad data, e.g. a NaN
    reward; or an env worker died or hung: `error` says which)."""
    steps: int
    episodes: int
    checkpoint: Path | None
    """The last checkpoint written (with "failed": the last good one, intact and loadable)."""
    error: str | None = None
    """With "failed": one line saying what failed, the last good checkpoint and how to
    continue."""


def _seed(seq: np.random.SeedSequence, bits: int = 31) -> int:
    return int(seq.generate_state(1, np.uint64)[0] & ((1 << bits) - 1))


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (Linux), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_replay_memory(config: Config) -> None:
    """Refuse a replay that cannot fit in memory now, rather than dying hours later when the
    ring (allocated lazily, page by page) fills up."""
    h, w = config.env.frame_shape
    per_slot = h * w + 6 + (12 if config.replay.prioritized else 0)  # frame, fields, PER
    need = config.replay.capacity * per_slot
    have = available_memory()
    if have is not None and need > 0.9 * have:
        fits = int(0.9 * have / per_slot) // 1000 * 1000
        raise ValueError(
            f"replay.capacity {config.replay.capacity:,} needs about {need / 2**30:.1f} GiB but "
            f"{have / 2**30:.1f} GiB is available; use --capacity {fits:,} or less")


def _crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (before, after]: a round of N steps crossed it."""
    return every > 0 and after // every > before // every


class Trainer:
    """One training run in `run_dir`; `run()` trains until total_steps, a stop or a halt;
    `close()` stops the env workers."""

    def __init__(self, config: Config, run_dir: Path, make_env: EnvFactory | None = None,
                 out=None, tensorboard: bool = True):
        c = config.validate()
        # "auto" envs: one per core here; one per actor with Ray (each actor is a process).
        envs = (c.run.envs or 1) if c.ray.enabled else resolve_envs(c.run.envs)
        if envs != c.run.envs:  # "auto" resolved: config.toml records the count used
            c = c.replace(run={"envs": envs})
        check_streams(c, streams(c))
        check_replay_memory(c)
        self.config = c
        self.run_dir = Path(run_dir)
        self.make_env = make_env or default_env
        device = resolve_device(c.learner.device)
        threads = c.learner.threads or (1 if device.type == "cuda" else 0)
        if threads:
            torch.set_num_threads(threads)
        env_s, replay_s, torch_s, explore_s, diag_s = np.random.SeedSequence(c.run.seed).spawn(5)
        torch.manual_seed(_seed(torch_s, 63))
        overlap = c.run.overlap == "on" or (c.run.overlap == "auto" and device.type == "cuda")
        if c.ray.enabled:  # actors on Ray fill the replay (agent/distributed.py)
            from agent.distributed import RayCollector

            self.collector = RayCollector(c, self.make_env, _seed(env_s), _seed(replay_s, 63))
        else:
            self.collector = Collector(c, envs, self.make_env, _seed(env_s),
                                       _seed(replay_s, 63), explore_s, overlap=overlap)
        self.replay = self.collector.replay
        self.actions = self.collector.actions
        self.buttons = np.asarray(self.actions.buttons, np.int64)
        self.learner = Learner(c.learner, len(self.actions), c.env.stack, c.env.frame_shape,
                               outputs=self.actions.network_outputs(
                                   c.learner.shared_outputs))
        self.frames = self._device_frames(c.learner.device_frames)
        self.store = CheckpointStore(self.run_dir, c.run.keep_last)
        ckpt_io.atomic_write(self.run_dir / "config.toml", lambda f: f.write(dump_toml(c).encode()))
        self.reporter = Reporter(self.run_dir, c.run.total_steps, out, tensorboard)
        self.health = HealthMonitor(c, self.learner, self.replay, self.buttons, self.store,
                                    self.reporter, self.run_dir, np.random.default_rng(diag_s),
                                    same=np.asarray(self.actions.outputs(), np.int64))
        self.collector.attach(self.learner, self.reporter)
        self.batch: Batch | None = None
        self.rows: np.ndarray | None = None  # the batch's ring rows, with self.frames
        self.state = "running"
        self.last_checkpoint: Path | None = None
        self._saved_at_step: int | None = None  # the step of the last checkpoint written
        self._stop_reason: str | None = None
        self._row_requested = False
        self.save_failures = 0  # checkpoint writes failed in a row (run.max_save_failures)
        self.save_error: str | None = None  # why the run failed (state "failed")
        self._status_failed = False  # status.json could not be written (said once)

    def _device_frames(self, mode: str) -> DeviceFrames | None:
        """The copy of the replay's frames on the learner's device (learner.device_frames)."""
        device = self.learner.device
        on = mode == "on" or (mode == "auto" and device.type == "cuda" and device_frames_fit(
            self.replay.capacity, self.config.env.frame_shape, device))
        if not on:
            return None
        frames = DeviceFrames(self.replay, device)
        self.learner.use_frames(frames.ring)
        return frames

    # The run's counters live with the part that keeps them.
    steps = property(lambda self: self.collector.steps)
    episodes = property(lambda self: self.collector.episodes)
    scores = property(lambda self: self.collector.scores)
    env = property(lambda self: self.collector.env)
    """The env, with one env (None with several: they run in `collector`'s VecEnv)."""
    explore_rng = property(lambda self: self.collector.explore[0])
    checks = property(lambda self: self.health.checks)
    incidents = property(lambda self: self.health.incidents)
    healthy = property(lambda self: self.health.healthy)
    probe = property(lambda self: self.health.probe)

    # ------------------------------------------------------------------ the loop
    def run(self, stop_after: int | None = None) -> TrainResult:
        """Train to total_steps; `stop_after` steps simulates an interruption (tests)."""
        c = self.config
        total = c.run.total_steps
        if not self.collector.open:
            self.collector.start()
        previous = self._install_signals()
        self._write_status()
        t_row, s_row = time.monotonic(), self.steps
        try:
            while self.steps < total and self._stop_reason is None:
                before = self.steps
                if self.collector.overlap:  # the updates while the envs emulate
                    self.collector.begin(self.learner.act_batch, self.collector.epsilon())
                    self._learn(before, before + self.collector.num_envs)
                    self.collector.finish()
                else:
                    self._step()
                    self._learn(before, self.steps)
                if _crossed(before, self.steps, c.run.checkpoint_every):
                    self._checkpoint()
                    if self.state == "failed":
                        break  # no evaluation (best.pt) and no save on the way out
                if _crossed(before, self.steps, c.run.eval_every):
                    self.evaluate_and_keep_best()
                now = time.monotonic()
                if now - t_row >= c.run.report_seconds or self._row_requested:
                    self._report((self.steps - s_row) / max(now - t_row, 1e-9))
                    t_row, s_row, self._row_requested = now, self.steps, False
                else:
                    self.reporter.progress(self.steps, (self.steps - s_row) / max(now - t_row,
                                                                                  1e-9))
                if stop_after is not None and self.steps >= stop_after:
                    self._stop_reason = f"stop_after={stop_after}"
            now = time.monotonic()
            self._report((self.steps - s_row) / max(now - t_row, 1e-9))
            if self.state == "running":
                self.state = "finished" if self.steps >= total else "interrupted"
                if self.state == "interrupted":
                    self.reporter.event("interrupted", f"stopped at step {self.steps:,} "
                                        f"({self._stop_reason}); saving", steps=self.steps)
                if self._saved_at_step != self.steps:  # (the loop may have just saved)
                    self._checkpoint(final=True)
        except WorkerError as exc:
            # An env worker died or hung: its emulator is gone, so nothing can be saved; the
            # checkpoints written so far are intact.
            self._failed(str(exc).splitlines()[0] + "; " + self._resume_hint())
        except Exception as exc:
            # An error out of the loop ends the run unsaved: the state it reached is suspect,
            # and the checkpoints written so far are intact. A ValueError is bad data (e.g. a
            # NaN reward, which the message names): the run ends "failed" with that message.
            # Anything else is a bug and keeps its traceback.
            self._failed(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            if not isinstance(exc, ValueError):
                raise
        finally:
            self._restore_signals(previous)
            self._write_status()
            self.reporter.close()
        return TrainResult(self.run_dir, self.state, self.steps, self.episodes,
                           self.last_checkpoint,
                           self.save_error if self.state == "failed" else None)

    def _failed(self, message: str) -> None:
        self.state = "failed"
        self.save_error = message
        self.reporter.event("error", f"step {self.steps:,}: {message}", steps=self.steps)

    def _resume_hint(self) -> str:
        if self.last_checkpoint is None:
            return "no checkpoint was written yet: start the run again"
        return (f"the last checkpoint {self.last_checkpoint.name} is intact: continue with "
                f"`atari-agent train --resume {self.run_dir}`")

    def _step(self) -> int:
        """One round: every env acts and steps (agent/collector.py); the agent steps taken."""
        act = self.learner.act if self.collector.num_envs == 1 else self.learner.act_batch
        return self.collector.step(act, self.collector.epsilon())

    def _learn(self, before: int, after: int) -> None:
        """The updates due for the round from agent step `before` to `after`: one per
        `train_freq` steps over all envs, once the round has brought the replay to
        `learning_starts` transitions (and it holds a batch of valid ones)."""
        c = self.config.learner
        collected = self.collector.collected + (after - self.steps)  # (a round in flight)
        if collected < c.learning_starts or len(self.replay) < c.batch_size:
            return
        for _ in range(after // c.train_freq - before // c.train_freq):
            self._update()
            if self._stop_reason == "watchdog":
                return

    def _update(self) -> None:
        """One learner update on a sampled batch; a health check when one is due."""
        c = self.config
        B = c.learner.batch_size
        if self.batch is None:
            # The gather writes straight into the learner's buffers (pinned on a GPU), in the
            # layout its networks read without a permute (see Learner.channels_last); with the
            # frames on the device only the stacks' ring rows are drawn on the host.
            h, w = c.env.frame_shape
            on_device = self.frames is not None
            self.batch = Batch(B, c.env.stack, h, w, self.learner.channels_last,
                               buffers=self.learner.batch_buffers(B, frames=not on_device))
            self.rows = self.learner.rows_buffer(B) if on_device else None
        if c.learner.lr_decay_steps:
            self.learner.set_lr(c.learner.lr_at(self.steps))
        if self.frames is not None:
            self.frames.sync()  # the frames written since the last update, to the device
        self.replay.sample(B, c.replay.beta(self.steps, c.run.total_steps), out=self.batch,
                           rows=self.rows)
        result = self.learner.update(self.batch, want_td=c.replay.prioritized, rows=self.rows)
        if c.replay.prioritized:
            self.replay.update_priorities(self.batch.index, result.td_abs + c.replay.priority_eps)
        if self.health.record(result.stats) and self.health.check(self.steps) == "halt":
            self.state = "halted"
            self._stop_reason = "watchdog"

    def health_check(self) -> str:
        return self.health.check(self.steps)

    # ------------------------------------------------------------------ reporting
    def _report(self, sps: float) -> None:
        m = self.health.last_check
        row = {"time": time.time(), "steps": self.steps, "updates": self.learner.updates,
               "sps": sps, "epsilon": self.collector.epsilon(),
               "lr": self.config.learner.lr_at(self.steps),
               "episodes": self.episodes,
               "score_mean100": float(np.mean(self.scores)) if self.scores else None,
               **{k: m.get(k) for k in ("loss", "agree", "greedy_dist", "replay_dist", "q_min",
                                        "q_mean", "q_max", "q_state_std", "grad_norm",
                                        "clip_delta", "td_clip_frac")},
               "target_age": self.learner.target_age, **self.collector.stats()}
        self.reporter.row(row)
        self._write_status()

    def _write_status(self) -> None:
        """status.json (for `atari-agent runs`). A failed write (a full disk) is said once on
        the terminal and skipped, never raised: status is informational, the previous
        status.json stays whole (atomic write), and the checkpoint is what a resume needs."""
        try:
            write_status(self.run_dir, state=self.state, game=self.config.env.game,
                         steps=self.steps, total_steps=self.config.run.total_steps,
                         episodes=self.episodes, envs=self.collector.num_envs,
                         workers=self.collector.worker_pids,
                         score_mean100=float(np.mean(self.scores)) if self.scores else None,
                         checkpoint=None if self.last_checkpoint is None
                         else self.last_checkpoint.name, error=self.save_error)
        except (CheckpointError, OSError) as exc:
            if not self._status_failed:
                self._status_failed = True
                self.reporter.print(f"[write_failed] {exc}; status.json is skipped while it "
                                    f"cannot be written (checkpoints go on as configured)")

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, episodes: int, seed: int) -> dict:
        env_config = protocol_config(self.config.env)
        result = run_episodes(lambda s: self.make_env(s, env_config), self.learner.act,
                              episodes, seed, self.config.explore.eval_epsilon)
        return summarize(result)

    def evaluate_and_keep_best(self) -> None:
        summary = self.evaluate(self.config.run.eval_episodes, seed=10_000 + self.steps)
        try:
            kept = self.health.healthy and self.store.save_best(self.payload(), self.steps,
                                                                summary["mean"])
        except CheckpointError as exc:  # best.pt could not be written: as any checkpoint
            kept = False
            self._save_failed(exc)
        self.reporter.event("eval", f"step {self.steps:,}: mean score {summary['mean']:.1f} ± "
                            f"{summary['std']:.1f} over {summary['episodes']} episodes"
                            + (" (new best: best.pt)" if kept else ""), steps=self.steps,
                            **summary, best=kept)

    # ------------------------------------------------------------------ checkpoints
    def payload(self) -> dict:
        return runstate.payload(self.config, self.actions, self.learner, self.collector,
                                self.health, self.collector.epsilon())

    def save(self) -> Path:
        healthy = self.health.healthy and self.learner.weights_finite()
        replay = self.replay.state_dict() if self.config.run.save_replay else None
        self.last_checkpoint = self.store.save(self.payload(), self.steps, healthy, replay)
        self._saved_at_step = self.steps
        self.save_failures = 0
        self.health.saved(healthy)
        self._write_status()
        return self.last_checkpoint

    def _checkpoint(self, final: bool = False) -> None:
        """save() for the loop and the end of a run: a failed write (a full disk) is reported
        and handled by run.on_save_error (`_save_failed`) instead of ending in a traceback."""
        try:
            self.save()
        except CheckpointError as exc:
            self._save_failed(exc, final)

    def _save_failed(self, exc: CheckpointError, final: bool = False) -> None:
        """A checkpoint write failed. The store has left the earlier checkpoints and index.json
        as they were, with no temp file and no orphan replay snapshot; say which file, the OS
        error and what happens next (a `save_failed` event). The run stops (state "failed") when
        run.on_save_error is "stop", when max_save_failures writes failed in a row, or when
        this was the run's last save (`final`: no later interval to try again at); otherwise it
        trains on and the next checkpoint interval tries again."""
        c = self.config.run
        self.save_failures += 1
        message = str(exc)
        prefix = f"could not write {self.store.dir}/"
        file = message[len(prefix):].split(":", 1)[0] if message.startswith(prefix) else None
        cause = exc.__cause__
        error = str(cause) if isinstance(cause, OSError) else message
        last = "none yet" if self.last_checkpoint is None else self.last_checkpoint.name
        stop = final or c.on_save_error == "stop" or self.save_failures >= c.max_save_failures
        if final:
            why = "it was the run's last save"
        elif c.on_save_error == "stop":
            why = "run.on_save_error is 'stop'"
        else:
            why = f"{self.save_failures} checkpoint writes failed in a row (run.max_save_failures)"
        resume = (f"the last good checkpoint is {last}: free space, then continue with "
                  f"`atari-agent train --resume {self.run_dir}`" if self.last_checkpoint else
                  "no checkpoint was written yet: free space and start the run again")
        if stop:
            nxt = f"the run stops ({why}); {resume}"
        else:
            at = min((self.steps // c.checkpoint_every + 1) * c.checkpoint_every, c.total_steps)
            nxt = (f"training goes on and tries again at step {at:,} (failure "
                   f"{self.save_failures} of {c.max_save_failures} in a row before the run "
                   f"stops); the last good checkpoint is {last}")
        self.reporter.event("save_failed", f"step {self.steps:,}: could not write "
                            f"{file or 'a checkpoint file'}: {error}; {nxt}", steps=self.steps,
                            file=file, error=error, action="stop" if stop else "continue",
                            failures=self.save_failures,
                            checkpoint=None if self.last_checkpoint is None
                            else self.last_checkpoint.name)
        if stop:
            self.save_error = (f"stopped at step {self.steps:,}: could not write "
                               f"{file or 'a checkpoint file'} in {self.store.dir} ({error}); "
                               f"{resume}")
            if self.state != "halted":  # a watchdog halt stays the reason it stopped
                self.state = "failed"
            self._stop_reason = "save_failed"

    def restore(self, path: Path) -> None:
        """Continue from a checkpoint of this run (with its replay snapshot when there is one)."""
        path = Path(path)
        saved = ckpt_io.load(path)
        snapshot = _check_resumable(saved, path, self.config, self.actions)
        replay = ckpt_io.load_arrays(snapshot) if snapshot is not None else None
        runstate.restore(saved, self.learner, self.collector, self.health, replay)
        self.last_checkpoint = path
        self._saved_at_step = self.steps
        if replay is not None:
            note = "with its replay snapshot: continuing exactly"
        else:
            note = (f"without a replay snapshot: refilling {self.config.learner.learning_starts:,}"
                    f" transitions before learning resumes")
        self.reporter.event("resume", f"resumed from {path.name} at step {self.steps:,} "
                            f"({note})", steps=self.steps, checkpoint=path.name)

    def close(self) -> None:
        """Stop the env workers; idempotent (the trainer cannot run after it)."""
        self.collector.close()

    # ------------------------------------------------------------------ signals
    def request_stop(self, reason: str) -> None:
        self._stop_reason = reason

    def _install_signals(self) -> dict:
        previous = {}

        def stop(signum, frame):
            name = signal.Signals(signum).name
            if self._stop_reason is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: give up on the save
            self._stop_reason = name

        def row(signum, frame):
            self._row_requested = True

        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, stop)
            if hasattr(signal, "SIGUSR1"):
                previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, row)
        except ValueError:  # not the main thread: no handlers; request_stop() still works
            pass
        return previous

    @staticmethod
    def _restore_signals(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _envs_mismatch(path: Path, saved: int, asked: int) -> str:
    return (f"checkpoint {path} is of a run with {saved} env(s) (its emulators and replay "
            f"streams), but {asked} were asked for: a run keeps its number of envs (--envs, "
            f"times --actors with --ray); resume without --envs and --actors, or start a new run")


def check_resume(config: Config, path: Path) -> Config:
    """Refuse a checkpoint that `config` cannot continue (unreadable, another network, game,
    action layout or number of envs) before anything in its run directory is written. Returns
    the config to resume with: run.envs "auto" takes the checkpoint's number of envs."""
    saved = ckpt_io.load(path)
    if config.run.envs == 0:
        actors = config.ray.actors if config.ray.enabled else 1
        config = config.replace(run={"envs": max(1, runstate.saved_envs(saved) // actors)})
    _check_resumable(saved, path, config, action_set(config.env.game, config.env.action_set))
    return config


def _check_resumable(saved: dict, path: Path, config: Config, actions) -> Path | None:
    """Refuse checkpoint `saved` if a run of `config` cannot continue it: another network,
    action layout or number of envs, or a replay snapshot of another shape (capacity, n-step,
    ...). Reads only the snapshot's parameters. Returns the snapshot's path, if it has one.
    `actions`: the run's action set (its env's, which a test game may set)."""
    network = QNetwork(len(actions), config.env.stack, config.env.frame_shape,
                       config.learner.dueling,
                       actions.network_outputs(config.learner.shared_outputs)).spec()
    ckpt_io.verify(saved, path, network=network, layout=actions.layout())
    envs = runstate.saved_envs(saved)
    if streams(config) != envs:
        raise CheckpointError(_envs_mismatch(path, envs, streams(config)))
    name = saved.get("replay_file")
    snapshot = path.parent / name if name else None
    if snapshot is None or not snapshot.is_file():
        return None
    c = config
    expected = {"capacity": ("--capacity", c.replay.capacity // envs * envs),
                "frame_shape": ("--frame-shape", tuple(c.env.frame_shape)),
                "stack": ("--stack", c.env.stack), "n_step": ("--n-step", c.learner.n_step),
                "gamma": ("--gamma", c.learner.gamma),
                "prioritized": ("--prioritized", c.replay.prioritized),
                "alpha": ("--alpha", c.replay.alpha)}
    for key, value in ckpt_io.snapshot_params(snapshot, list(expected)).items():
        flag, now = expected[key]
        if value != now:
            raise CheckpointError(
                f"replay snapshot {snapshot} was saved with {key} {value}, this run asks for "
                f"{now} ({flag}): resume with the run's {key}, or move the snapshot away to "
                f"resume without it (learning then waits to refill the replay)")
    return snapshot


def train(config: Config, run_dir: Path, resume_from: Path | None = None,
          make_env: EnvFactory | None = None, out=None, stop_after: int | None = None,
          tensorboard: bool = True) -> TrainResult:
    """Train in `run_dir` (created by the caller), resuming from a checkpoint if given; the
    env workers are stopped whatever way it ends."""
    trainer = Trainer(config, run_dir, make_env, out, tensorboard)
    try:
        if resume_from is not None:
            try:
                trainer.restore(resume_from)
            except CheckpointError:
                trainer.reporter.close()
                raise
        return trainer.run(stop_after=stop_after)
    finally:
        trainer.close()
