"""The seed system's health metrics and the divergence watchdog. Pure: they report, nothing else.

Metrics (computed at each health check, every `watchdog.check_every` learner updates):
- Agree%: share of sampled replay transitions whose stored action equals the online network's
  greedy action now (percent), twins that press the same ALE action (the documented set's +ZAP
  where ZAP is inert) counted as equal. A healthy agent late in training mostly replays its own
  choices.
- greedy_dist / replay_dist: the same sample's greedy and stored actions, marginalised over
  movement onto the documented buttons (noop / ZAP / FIRE / FIRE+ZAP), shares summing to 1.
- Q-range: min / mean / max of the online Q-values over a fixed probe batch of observations;
  q_state_std: their std across the probe's observations, mean over actions (0: the output no
  longer depends on the observation).
- loss, grad_norm (pre-clip), clip_delta (post-clip / pre-clip norm; 1.0 = not clipped),
  td_clip_frac: means over the updates since the previous check.

The watchdog flags, at each check: NaN/Inf in the loss, the gradients or the weights; a loss
explosion (the check's mean loss above `loss_factor` times the median of earlier checks); a Q
blow-up (any |Q| on the probe above `q_limit`); an agreement collapse (the median Agree% of the
last `agree_window` checks `agree_drop` points or more below its plateau, the best such median);
a dead network (q_state_std at most `dead_q_std`: too large steps switched off every unit of a
layer, and a run that neither blows up nor learns would otherwise go on unseen).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from agent.config import WatchdogConfig
from agent.games import BUTTONS

BUTTON_KEYS = ("noop", "ZAP", "FIRE", "FIRE+ZAP")
"""Keys of the button distributions in metrics.jsonl (BUTTONS, with 'noop' spelled as logged)."""
assert len(BUTTON_KEYS) == len(BUTTONS)


def button_distribution(actions: np.ndarray, buttons: np.ndarray) -> dict[str, float]:
    """Shares of each documented button among joint `actions` (`buttons[a]` is a's button)."""
    counts = np.bincount(buttons[np.asarray(actions, np.int64)], minlength=len(BUTTON_KEYS))
    total = max(int(counts.sum()), 1)
    return {k: float(c) / total for k, c in zip(BUTTON_KEYS, counts, strict=True)}


def format_buttons(shares: dict | None) -> str:
    """A button distribution as "n/Z/F/FZ" percents, e.g. "40/5/50/5"; "-" when there is
    none (before the first health check, or a result saved before buttons were counted)."""
    if not shares:
        return "-"
    return "/".join(f"{100 * shares[k]:.0f}" for k in BUTTON_KEYS)


def agreement(greedy: np.ndarray, stored: np.ndarray) -> float:
    """Agree%: percent of transitions whose stored action is the greedy action now."""
    return 100.0 * float(np.mean(np.asarray(greedy) == np.asarray(stored)))


def finite(*values: float) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


@dataclass
class Watchdog:
    """Keeps the history the rules need; `check()` returns the reasons to alarm (empty: healthy)."""

    config: WatchdogConfig
    losses: deque = field(default_factory=deque)
    agrees: deque = field(default_factory=deque)
    plateau: float | None = None
    """Best median Agree% seen since the start (or the last roll-back)."""

    def check(self, m: dict, weights_finite: bool = True) -> list[str]:
        """Judge one health check's metrics (`loss`, `grad_norm`, `q_min`, `q_max`, `agree`,
        `q_state_std`)."""
        cfg = self.config
        reasons = []
        if not finite(m["loss"]):
            reasons.append(f"loss is {m['loss']}")
        if not finite(m["grad_norm"]):
            reasons.append(f"gradient norm is {m['grad_norm']}")
        if not weights_finite:
            reasons.append("network weights hold NaN/Inf")
        if not finite(m["q_min"], m["q_max"]):
            reasons.append(f"Q-values are not finite (min {m['q_min']}, max {m['q_max']})")
        elif max(abs(m["q_min"]), abs(m["q_max"])) > cfg.q_limit:
            reasons.append(f"Q blow-up: |Q| reached {max(abs(m['q_min']), abs(m['q_max'])):.4g} "
                           f"> q_limit {cfg.q_limit:g}")
        if finite(m["loss"]) and len(self.losses) >= cfg.min_history:
            median = float(np.median(self.losses))
            if m["loss"] > max(cfg.loss_factor * median, cfg.loss_floor) and median > 0:
                reasons.append(f"loss explosion: {m['loss']:.4g} > {cfg.loss_factor:g} x running "
                               f"median {median:.4g} (and > loss_floor {cfg.loss_floor:g})")
        spread = m.get("q_state_std")
        if cfg.dead_q_std > 0 and spread is not None and finite(spread) \
                and spread <= cfg.dead_q_std:
            reasons.append(f"dead network: the Q-values no longer depend on the observation "
                           f"(their std across the probe's observations is {spread:.2g} <= "
                           f"dead_q_std {cfg.dead_q_std:g}); a smaller learning rate or the "
                           f"gradient clip keeps its units alive")
        agree_now = None
        if m.get("agree") is not None:
            window = [*list(self.agrees)[-(cfg.agree_window - 1):], m["agree"]] \
                if cfg.agree_window > 1 else [m["agree"]]
            agree_now = float(np.median(window))
            if (self.plateau is not None and len(self.agrees) >= cfg.min_history
                    and agree_now <= self.plateau - cfg.agree_drop):
                reasons.append(f"agreement collapse: Agree% {agree_now:.1f} is "
                               f"{self.plateau - agree_now:.1f} points below its plateau "
                               f"{self.plateau:.1f}")
        if not reasons:  # only healthy checks feed the history the rules compare against
            self.losses.append(m["loss"])
            while len(self.losses) > cfg.loss_history:
                self.losses.popleft()
            if agree_now is not None:
                self.agrees.append(m["agree"])
                while len(self.agrees) > cfg.agree_window:
                    self.agrees.popleft()
                if len(self.agrees) >= min(cfg.agree_window, cfg.min_history):
                    self.plateau = agree_now if self.plateau is None else max(self.plateau,
                                                                              agree_now)
        return reasons

    def reset_agreement(self) -> None:
        """After a roll-back the policy changed: measure the plateau afresh."""
        self.agrees.clear()
        self.plateau = None

    def state_dict(self) -> dict:
        return {"losses": [float(v) for v in self.losses],
                "agrees": [float(v) for v in self.agrees], "plateau": self.plateau}

    def load_state_dict(self, state: dict) -> None:
        self.losses = deque(float(v) for v in state["losses"])
        self.agrees = deque(float(v) for v in state["agrees"])
        self.plateau = None if state["plateau"] is None else float(state["plateau"])
