"""The run's health: measure the seed system's diagnostics, let the watchdog judge, roll back.

Every learner update hands its (4,) stats tensor to `record` (kept on the learner's device: an
update never waits for the GPU). Every `watchdog.check_every` updates `check()` reduces them,
samples `run.diag_batch` replay transitions with its own RNG (training's draws untouched) for
Agree% and the greedy/replay button distributions, measures the Q-range on a fixed probe batch,
and asks the watchdog. On an alarm it writes an incident record and either rolls the learner
back to the last healthy checkpoint (target re-synced) or says the run must halt.

Everything it keeps is in `state_dict()`, so a resumed run judges exactly as an uninterrupted
one; `load_state_dict` puts every tensor on the learner's device, wherever it was saved.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import numpy as np
import torch

from agent import checkpoint as ckpt_io
from agent.config import Config
from agent.diagnostics import Watchdog, agreement, button_distribution
from agent.learner import STAT_NAMES


class HealthMonitor:
    """Measure, judge, roll back. `check()` returns "ok", "rollback" or "halt"."""

    def __init__(self, config: Config, learner, replay, buttons: np.ndarray, store, reporter,
                 run_dir: Path, rng: np.random.Generator, same: np.ndarray | None = None):
        """`same[a]`: the number of action a's ALE action (ActionSet.outputs()), so that Agree%
        counts a twin that presses the same ALE action as agreeing; None: every action apart."""
        same = np.arange(len(buttons)) if same is None else np.asarray(same, np.int64)
        self.config = config
        self.learner, self.replay, self.buttons = learner, replay, buttons
        self.same = same
        self.store, self.reporter, self.run_dir = store, reporter, Path(run_dir)
        self.rng = rng
        self.watchdog = Watchdog(config.watchdog)
        self.pending: list[torch.Tensor] = []  # per-update stats since the last check
        self.last_check: dict = {}
        self.checks: deque[dict] = deque(maxlen=1000)  # recent checks (incident records)
        self.healthy = True
        self.rollbacks_in_row = 0
        self.incidents = 0
        self.probe: np.ndarray | None = None

    # ------------------------------------------------------------------ measuring
    def record(self, stats: torch.Tensor) -> bool:
        """Keep one update's stats; whether a health check is due now."""
        if self.probe is None:
            # A C-order copy whatever the batch's layout: the checkpoint keeps a plain tensor.
            self.probe = self.sample(self.config.run.probe_size).obs.copy(order="C")
        self.pending.append(stats)
        return self.learner.updates % self.config.watchdog.check_every == 0

    def sample(self, n: int):
        """n distinct valid replay transitions drawn with this monitor's RNG (natively: no pass
        over the ring), in the layout the learner reads."""
        index = self.replay.draw_valid(n, int(self.rng.integers(2**63)))
        return self.replay.gather(index, channels_last=self.learner.channels_last)

    @property
    def _probe_varies(self) -> bool:
        """Whether the probe holds at least two different observations (a game whose replay
        so far shows one screen cannot show whether Q depends on it)."""
        return self.probe is not None and bool((self.probe != self.probe[:1]).any())

    def measure(self) -> dict:
        """The seed system's diagnostics now (consumes the pending per-update stats)."""
        m: dict = dict.fromkeys(STAT_NAMES)
        if self.pending:
            stats = torch.stack(self.pending).double().mean(dim=0).tolist()
            m.update(zip(STAT_NAMES, stats, strict=True))
            self.pending = []
        batch = self.sample(self.config.run.diag_batch)
        greedy = self.learner.q_values(batch.obs).argmax(dim=1).cpu().numpy()
        m["agree"] = agreement(self.same[greedy], self.same[np.asarray(batch.action, np.int64)])
        m["greedy_dist"] = button_distribution(greedy, self.buttons)
        m["replay_dist"] = button_distribution(batch.action, self.buttons)
        q = self.learner.q_values(self.probe)
        m["q_min"], m["q_mean"], m["q_max"] = (float(q.min()), float(q.mean()), float(q.max()))
        # (None where the probe holds one observation repeated: no spread to judge)
        m["q_state_std"] = float(q.std(dim=0).mean()) if self._probe_varies else None
        m["target_age"] = self.learner.target_age
        return m

    # ------------------------------------------------------------------ judging
    def check(self, steps: int) -> str:
        """Measure, judge, act: "ok", "rollback" (done: the learner holds the last healthy
        checkpoint's weights) or "halt" (the run must stop)."""
        m = self.measure()
        reasons = self.watchdog.check(m, self.learner.weights_finite())
        self.last_check = m
        self.checks.append({"steps": steps, "updates": self.learner.updates, **m,
                            "alarm": reasons})
        self.healthy = not reasons
        if not reasons:
            return "ok"
        return self._divergence(steps, reasons, m)

    def _divergence(self, steps: int, reasons: list[str], m: dict) -> str:
        c = self.config.watchdog
        self.incidents += 1
        halt = c.on_divergence == "halt" or self.rollbacks_in_row >= c.max_rollbacks
        target = None if halt else self.store.latest_healthy()
        action = "halt" if halt or target is None else "rollback"
        record = {"event": "divergence", "steps": steps, "updates": self.learner.updates,
                  "reasons": reasons, "metrics": m, "action": action,
                  "rollback_to": None if target is None else target.name,
                  "rollbacks_in_row": self.rollbacks_in_row,
                  "recent_checks": list(self.checks)[-20:]}
        incidents = self.run_dir / "incidents"
        incidents.mkdir(exist_ok=True)
        path = incidents / f"incident-{self.incidents:03d}-step{steps}.json"
        text = json.dumps(record, indent=1, default=str).encode()
        ckpt_io.atomic_write(path, lambda f: f.write(text))  # never a half record after a kill
        self.reporter.event("divergence", f"step {steps:,}: " + "; ".join(reasons) +
                            f" -> {action} (incident record {path.name})", **{
                                k: v for k, v in record.items()
                                if k not in ("event", "recent_checks")})
        if action == "halt":
            why = ("on_divergence is 'halt'" if c.on_divergence == "halt" else
                   f"{self.rollbacks_in_row} roll-backs in a row" if target is None and
                   self.rollbacks_in_row >= c.max_rollbacks else "no healthy checkpoint yet")
            self.reporter.event("halt", f"training halted ({why}); the last healthy checkpoint "
                                f"is {self.store.latest_healthy()}", steps=steps)
            return "halt"
        saved = ckpt_io.load(target)
        updates = self.learner.updates  # the count of updates done stays monotonic
        self.learner.load_state_dict(saved["learner"], resync_target=True)
        self.learner.updates = self.learner.target_synced_at = updates
        self.watchdog.reset_agreement()
        self.pending = []
        self.rollbacks_in_row += 1
        # The learner now holds weights a check judged healthy: checkpoints until the next
        # check may say so (and best.pt may update).
        self.healthy = True
        self.reporter.event("rollback", f"restored {target.name} (step "
                            f"{saved['counters']['steps']:,}) and re-synced the target network",
                            steps=steps, checkpoint=target.name,
                            checkpoint_steps=saved["counters"]["steps"])
        return "rollback"

    def saved(self, healthy: bool) -> None:
        """A checkpoint was written: a healthy one ends a run of roll-backs."""
        if healthy:
            self.rollbacks_in_row = 0

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"watchdog": self.watchdog.state_dict(), "last_check": self.last_check,
                "probe": None if self.probe is None else torch.from_numpy(self.probe),
                "pending": torch.stack(self.pending).cpu() if self.pending else None,
                "rng": self.rng.bit_generator.state, "incidents": self.incidents,
                "rollbacks_in_row": self.rollbacks_in_row, "healthy": self.healthy}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`; pending stats land on the learner's device, whatever device
        wrote them (a CUDA run's checkpoint resumed on a CPU, or the other way round)."""
        self.watchdog.load_state_dict(state["watchdog"])
        self.last_check = state["last_check"]
        self.probe = None if state["probe"] is None else state["probe"].numpy().copy()
        device = self.learner.device
        self.pending = ([] if state["pending"] is None else
                        [row.to(device) for row in state["pending"]])
        self.rng.bit_generator.state = state["rng"]
        self.incidents = int(state["incidents"])
        self.rollbacks_in_row = int(state["rollbacks_in_row"])
        self.healthy = bool(state.get("healthy", True))
