"""`atari-agent train`: the clipped-gradient DQN training job, top to bottom.

Per agent step: act epsilon-greedily on the env's acting stack; the env writes its new frame
straight into the replay ring's next slot; the replay records the step. Every `train_freq` steps
(once the replay holds `learning_starts` transitions) one learner update; every
`watchdog.check_every` updates a health check (the seed system's diagnostics) that the watchdog
judges. Every `report_seconds` a row (terminal table, metrics.jsonl, TensorBoard); every
`checkpoint_every` steps a checkpoint; every `eval_every` steps an evaluation that keeps the best
checkpoint. Ctrl-C / SIGTERM stop at the next step boundary and save first. A checkpoint that
cannot be written (a full disk) leaves the previous one intact and, by run.on_save_error, stops
the run (state "failed") or trains on and tries again at the next interval.

State is split so that a checkpoint captures all of it: learner (weights, optimizer, counters),
env (emulator + RNG), replay (optional snapshot), the exploration and diagnostics RNGs, the
watchdog's history and the probe batch. With the replay snapshot, `--resume` continues exactly
as if the run had not stopped.
"""

from __future__ import annotations

import json
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from agent import checkpoint as ckpt_io
from agent.checkpoint import CheckpointError, CheckpointStore, to_numpy, to_torch
from agent.config import Config, EnvConfig, dump_toml, to_dict
from agent.diagnostics import Watchdog, agreement, button_distribution
from agent.env import AtariEnv
from agent.evaluate import protocol_config, run_episodes, summarize
from agent.games import action_set
from agent.learner import STAT_NAMES, Learner
from agent.native import FrameReplay
from agent.network import QNetwork
from agent.report import Reporter
from agent.runs import write_status

EnvFactory = Callable[[int, EnvConfig], object]
"""make_env(seed, env_config) -> an env with AtariEnv's interface (actions, observation,
reset(out), step(action, out) -> Step, episode_score, episode_steps, get_state, set_state)."""


def default_env(seed: int, config: EnvConfig) -> AtariEnv:
    return AtariEnv(config, seed)


@dataclass
class TrainResult:
    run_dir: Path
    state: str
    """"finished", "interrupted" (Ctrl-C / SIGTERM / stop_after), "halted" (watchdog) or
    "failed" (a checkpoint could not be written, see run.on_save_error; or bad data, e.g. a NaN
    reward, stopped the loop: `error` says which)."""
    steps: int
    episodes: int
    checkpoint: Path | None
    """The last checkpoint written (with "failed": the last good one, intact and loadable)."""
    error: str | None = None
    """With "failed": one line naming the file that could not be written, the OS error, the
    last good checkpoint and how to continue."""


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


class Trainer:
    """One training run in `run_dir`; `run()` trains until total_steps, a stop or a halt."""

    def __init__(self, config: Config, run_dir: Path, make_env: EnvFactory | None = None,
                 out=None, tensorboard: bool = True):
        self.config = c = config.validate()
        self.run_dir = Path(run_dir)
        self.make_env = make_env or default_env
        if c.learner.threads:
            torch.set_num_threads(c.learner.threads)
        env_s, replay_s, torch_s, explore_s, diag_s = np.random.SeedSequence(c.run.seed).spawn(5)
        self.env = self.make_env(_seed(env_s), c.env)
        self.actions = self.env.actions
        self.buttons = np.asarray(self.actions.buttons, np.int64)
        torch.manual_seed(_seed(torch_s, 63))
        self.learner = Learner(c.learner, len(self.actions), c.env.stack, c.env.frame_shape)
        check_replay_memory(c)
        self.replay = FrameReplay(c.replay.capacity, c.env.frame_shape, c.env.stack,
                                  c.learner.n_step, c.learner.gamma, c.replay.prioritized,
                                  c.replay.alpha, seed=_seed(replay_s, 63))
        self.explore_rng = np.random.default_rng(explore_s)
        self.diag_rng = np.random.default_rng(diag_s)
        self.watchdog = Watchdog(c.watchdog)
        self.store = CheckpointStore(self.run_dir, c.run.keep_last)
        ckpt_io.atomic_write(self.run_dir / "config.toml", lambda f: f.write(dump_toml(c).encode()))
        self.reporter = Reporter(self.run_dir, c.run.total_steps, out, tensorboard)
        # counters and running state (all of it in the checkpoint)
        self.steps = 0
        self.episodes = 0
        self.collected = 0  # transitions added to this replay: learning waits for learning_starts
        self.scores: deque[float] = deque(maxlen=100)
        self.pending: list[torch.Tensor] = []  # per-update stats since the last health check
        self.last_check: dict = {}
        self.checks: deque[dict] = deque(maxlen=1000)  # recent health checks (incident records)
        self.healthy = True
        self.rollbacks_in_row = 0
        self.incidents = 0
        self.probe: np.ndarray | None = None
        self.batch = None
        self.state = "running"
        self.last_checkpoint: Path | None = None
        self._stop_reason: str | None = None
        self._row_requested = False
        self._episode_open = False
        self.save_failures = 0  # checkpoint writes failed in a row (run.max_save_failures)
        self.save_error: str | None = None  # why the run failed (state "failed")
        self._status_failed = False  # status.json could not be written (said once)

    # ------------------------------------------------------------------ the loop
    def run(self, stop_after: int | None = None) -> TrainResult:
        """Train to total_steps; `stop_after` steps simulates an interruption (tests)."""
        c = self.config
        total = c.run.total_steps
        if not self._episode_open:
            self.env.reset(out=self.replay.frame_slot())
            self.replay.reset()
            self._episode_open = True
        previous = self._install_signals()
        self._write_status()
        t_row, s_row = time.monotonic(), self.steps
        try:
            while self.steps < total and self._stop_reason is None:
                self._step()
                if (self.collected >= c.learner.learning_starts
                        and self.steps % c.learner.train_freq == 0):
                    self._update()
                if self.steps % c.run.checkpoint_every == 0:
                    self._checkpoint()
                    if self.state == "failed":
                        break  # no evaluation (best.pt) and no save on the way out
                if c.run.eval_every and self.steps % c.run.eval_every == 0:
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
                self._checkpoint(final=True)
        except Exception as exc:
            # An error out of the loop ends the run unsaved: the state it reached is suspect,
            # and the checkpoints written so far are intact. A ValueError is bad data (e.g. a
            # NaN reward, which the message names): the run ends "failed" with that message.
            # Anything else is a bug and keeps its traceback.
            self.state = "failed"
            self.save_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.reporter.event("error", f"step {self.steps:,}: {self.save_error}",
                                steps=self.steps)
            if not isinstance(exc, ValueError):
                raise
        finally:
            self._restore_signals(previous)
            self._write_status()
            self.reporter.close()
        return TrainResult(self.run_dir, self.state, self.steps, self.episodes,
                           self.last_checkpoint,
                           self.save_error if self.state == "failed" else None)

    def _epsilon(self) -> float:
        return self.config.explore.epsilon(self.steps, self.config.learner.learning_starts)

    def _step(self) -> None:
        eps = self._epsilon()
        if self.explore_rng.random() < eps:
            action = int(self.explore_rng.integers(len(self.actions)))
        else:
            action = self.learner.act(self.env.observation)
        s = self.env.step(action, out=self.replay.frame_slot())
        try:
            self.replay.add(action, s.reward, s.learn_terminal,
                            s.truncated and not s.learn_terminal)
        except ValueError as exc:  # e.g. a NaN reward: never let it into the replay
            raise ValueError(f"step {self.steps + 1:,}: the environment returned a transition "
                             f"that cannot be learned from ({exc}); training stopped, the "
                             f"checkpoints saved so far are intact") from None
        self.steps += 1
        self.collected += 1
        if s.terminated or s.truncated:
            self.scores.append(float(self.env.episode_score))
            self.episodes += 1
            self.env.reset(out=self.replay.frame_slot())
            self.replay.reset()
        elif s.learn_terminal:  # a lost life ends a learning episode; the game goes on
            self.replay.reset(self.env.observation[-1])

    def _update(self) -> None:
        c = self.config
        if self.probe is None:
            # A C-order copy whatever the batch's layout: the checkpoint keeps a plain tensor.
            self.probe = self._diag_sample(c.run.probe_size).obs.copy(order="C")
        frac = min(self.steps / c.run.total_steps, 1.0)
        beta = c.replay.beta_start + (c.replay.beta_end - c.replay.beta_start) * frac
        # In the layout the learner's networks read without a permute (see Learner.channels_last).
        self.batch = self.replay.sample(c.learner.batch_size, beta, out=self.batch,
                                        channels_last=self.learner.channels_last)
        result = self.learner.update(self.batch, want_td=c.replay.prioritized)
        if c.replay.prioritized:
            self.replay.update_priorities(self.batch.index, result.td_abs + c.replay.priority_eps)
        self.pending.append(result.stats)
        if self.learner.updates % c.watchdog.check_every == 0:
            self.health_check()

    # ------------------------------------------------------------------ diagnostics
    def _diag_sample(self, n: int):
        """n replay transitions picked with the diagnostics RNG (training's draws untouched)."""
        valid = self.replay.valid_indices()
        pick = self.diag_rng.choice(valid, size=min(n, len(valid)), replace=False)
        return self.replay.gather(np.sort(pick), channels_last=self.learner.channels_last)

    def measure(self) -> dict:
        """The seed system's diagnostics now (consumes the pending per-update stats)."""
        m: dict = dict.fromkeys(STAT_NAMES)
        if self.pending:
            stats = torch.stack(self.pending).double().mean(dim=0).tolist()
            m.update(zip(STAT_NAMES, stats, strict=True))
            self.pending = []
        batch = self._diag_sample(self.config.run.diag_batch)
        greedy = self.learner.q_values(batch.obs).argmax(dim=1).cpu().numpy()
        m["agree"] = agreement(greedy, batch.action)
        m["greedy_dist"] = button_distribution(greedy, self.buttons)
        m["replay_dist"] = button_distribution(batch.action, self.buttons)
        q = self.learner.q_values(self.probe)
        m["q_min"], m["q_mean"], m["q_max"] = (float(q.min()), float(q.mean()), float(q.max()))
        m["target_age"] = self.learner.target_age
        return m

    def health_check(self) -> list[str]:
        m = self.measure()
        reasons = self.watchdog.check(m, self.learner.weights_finite())
        self.last_check = m
        self.checks.append({"steps": self.steps, "updates": self.learner.updates, **m,
                            "alarm": reasons})
        self.healthy = not reasons
        if reasons:
            self._divergence(reasons, m)
        return reasons

    def _divergence(self, reasons: list[str], m: dict) -> None:
        c = self.config.watchdog
        self.incidents += 1
        halt = c.on_divergence == "halt" or self.rollbacks_in_row >= c.max_rollbacks
        target = None if halt else self.store.latest_healthy()
        action = "halt" if halt or target is None else "rollback"
        record = {"event": "divergence", "steps": self.steps, "updates": self.learner.updates,
                  "reasons": reasons, "metrics": m, "action": action,
                  "rollback_to": None if target is None else target.name,
                  "rollbacks_in_row": self.rollbacks_in_row,
                  "recent_checks": list(self.checks)[-20:]}
        incidents = self.run_dir / "incidents"
        incidents.mkdir(exist_ok=True)
        path = incidents / f"incident-{self.incidents:03d}-step{self.steps}.json"
        text = json.dumps(record, indent=1, default=str).encode()
        ckpt_io.atomic_write(path, lambda f: f.write(text))  # never a half record after a kill
        self.reporter.event("divergence", f"step {self.steps:,}: " + "; ".join(reasons) +
                            f" -> {action} (incident record {path.name})", **{
                                k: v for k, v in record.items()
                                if k not in ("event", "recent_checks")})
        if action == "halt":
            why = ("on_divergence is 'halt'" if c.on_divergence == "halt" else
                   f"{self.rollbacks_in_row} roll-backs in a row" if target is None and
                   self.rollbacks_in_row >= c.max_rollbacks else "no healthy checkpoint yet")
            self.reporter.event("halt", f"training halted ({why}); the last healthy checkpoint "
                                f"is {self.store.latest_healthy()}", steps=self.steps)
            self.state = "halted"
            self._stop_reason = "watchdog"
            return
        saved = ckpt_io.load(target)
        updates = self.learner.updates  # the count of updates done stays monotonic
        self.learner.load_state_dict(saved["learner"], resync_target=True)
        self.learner.updates = self.learner.target_synced_at = updates
        self.watchdog.reset_agreement()
        self.pending = []
        self.rollbacks_in_row += 1
        self.reporter.event("rollback", f"restored {target.name} (step "
                            f"{saved['counters']['steps']:,}) and re-synced the target network",
                            steps=self.steps, checkpoint=target.name,
                            checkpoint_steps=saved["counters"]["steps"])

    def _report(self, sps: float) -> None:
        m = self.last_check
        row = {"time": time.time(), "steps": self.steps, "updates": self.learner.updates,
               "sps": sps, "epsilon": self._epsilon(),
               "episodes": self.episodes,
               "score_mean100": float(np.mean(self.scores)) if self.scores else None,
               **{k: m.get(k) for k in ("loss", "agree", "greedy_dist", "replay_dist", "q_min",
                                        "q_mean", "q_max", "grad_norm", "clip_delta",
                                        "td_clip_frac")},
               "target_age": self.learner.target_age}
        self.reporter.row(row)
        self._write_status()

    def _write_status(self) -> None:
        """status.json (for `atari-agent runs`). A failed write (a full disk) is said once on
        the terminal and skipped, never raised: status is informational, the previous
        status.json stays whole (atomic write), and the checkpoint is what a resume needs."""
        try:
            write_status(self.run_dir, state=self.state, game=self.config.env.game,
                         steps=self.steps, total_steps=self.config.run.total_steps,
                         episodes=self.episodes,
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
            kept = self.healthy and self.store.save_best(self.payload(), self.steps,
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
        return {
            "game": self.config.env.game,
            "layout": self.actions.layout(),
            "network": self.learner.online.spec(),
            "config": to_dict(self.config),
            "learner": self.learner.state_dict(),
            "counters": {"steps": self.steps, "episodes": self.episodes,
                         "collected": self.collected, "updates": self.learner.updates,
                         "incidents": self.incidents, "rollbacks_in_row": self.rollbacks_in_row},
            "epsilon": self._epsilon(),
            "scores": list(self.scores),
            "rng": {"explore": self.explore_rng.bit_generator.state,
                    "diag": self.diag_rng.bit_generator.state,
                    "torch": torch.get_rng_state()},
            "env": to_torch(self.env.get_state()),
            "watchdog": self.watchdog.state_dict(),
            "last_check": self.last_check,
            "probe": None if self.probe is None else torch.from_numpy(self.probe),
            "pending": torch.stack(self.pending).cpu() if self.pending else None,
            "saved_at": time.time(),
        }

    def save(self) -> Path:
        healthy = self.healthy and self.learner.weights_finite()
        replay = self.replay.state_dict() if self.config.run.save_replay else None
        self.last_checkpoint = self.store.save(self.payload(), self.steps, healthy, replay)
        self.save_failures = 0
        if healthy:
            self.rollbacks_in_row = 0
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
        ckpt_io.verify(saved, path, network=self.learner.online.spec(),
                       layout=self.actions.layout())
        self.learner.load_state_dict(saved["learner"])
        n = saved["counters"]
        self.steps, self.episodes = int(n["steps"]), int(n["episodes"])
        self.incidents, self.rollbacks_in_row = int(n["incidents"]), int(n["rollbacks_in_row"])
        self.scores = deque((float(s) for s in saved["scores"]), maxlen=100)
        self.explore_rng.bit_generator.state = saved["rng"]["explore"]
        self.diag_rng.bit_generator.state = saved["rng"]["diag"]
        torch.set_rng_state(saved["rng"]["torch"])
        self.env.set_state(to_numpy(saved["env"]))
        self.watchdog.load_state_dict(saved["watchdog"])
        self.last_check = saved["last_check"]
        self.healthy = bool(saved.get("healthy", True))
        self.probe = None if saved["probe"] is None else saved["probe"].numpy().copy()
        self.pending = [] if saved["pending"] is None else list(saved["pending"])
        self.last_checkpoint = path
        replay_file = saved.get("replay_file")
        if replay_file and (path.parent / replay_file).is_file():
            self.replay.load_state_dict(ckpt_io.load_arrays(path.parent / replay_file))
            self.collected = int(n["collected"])
            note = "with its replay snapshot: continuing exactly"
        else:
            # No snapshot: a fresh replay; the env is mid-episode, so the replay starts a new
            # segment at the current frame, and learning waits until it holds learning_starts.
            self.replay.reset(self.env.observation[-1])
            self.collected = 0
            note = (f"without a replay snapshot: refilling {self.config.learner.learning_starts:,}"
                    f" transitions before learning resumes")
        self._episode_open = True
        self.reporter.event("resume", f"resumed from {path.name} at step {self.steps:,} "
                            f"({note})", steps=self.steps, checkpoint=path.name)

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


def check_resume(config: Config, path: Path) -> None:
    """Refuse a checkpoint that `config` cannot continue (unreadable, another network, game or
    action layout) before anything in its run directory is written."""
    saved = ckpt_io.load(path)
    actions = action_set(config.env.game, config.env.action_set)
    network = QNetwork(len(actions), config.env.stack, config.env.frame_shape,
                       config.learner.dueling).spec()
    ckpt_io.verify(saved, path, network=network, layout=actions.layout())


def train(config: Config, run_dir: Path, resume_from: Path | None = None,
          make_env: EnvFactory | None = None, out=None, stop_after: int | None = None,
          tensorboard: bool = True) -> TrainResult:
    """Train in `run_dir` (created by the caller), resuming from a checkpoint if given."""
    trainer = Trainer(config, run_dir, make_env, out, tensorboard)
    if resume_from is not None:
        try:
            trainer.restore(resume_from)
        except CheckpointError:
            trainer.reporter.close()
            raise
    return trainer.run(stop_after=stop_after)
