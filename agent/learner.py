"""The clipped-gradient DQN update: a pure TD-target function and the `Learner` that steps.

One update: sample (done by the caller) -> TD targets from the target network (double DQN: the
online network picks the next action), each clipped to +-td_clip -> Huber loss (importance
weighted under PER) -> gradients clipped to max_norm -> Adam step -> a hard target sync every
`target_update` updates. These clips exist because the system we learn from collapsed without
them (loss 0.126 -> 5,193, Q-values up to 9,827).

On CPU the forward and backward passes run under bf16 autocast with channels_last weights where
the config asks (fp32 master weights, fp32 loss); see `LearnerConfig.precision`. A learner with
channels_last weights wants channels_last batches (`Learner.channels_last`): the replay then
gathers each stack straight into (B, H, W, stack) memory, and no pass permutes the bytes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from agent.config import LearnerConfig
from agent.network import QNetwork

STAT_NAMES = ("loss", "grad_norm", "clip_delta", "td_clip_frac")
"""The order of the per-update statistics in `UpdateResult.stats`."""


def resolve_device(name: str) -> torch.device:
    """"auto" -> CUDA when present, else CPU; anything else as torch reads it (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"learner.device is {name!r} but CUDA is not available here; "
                         f"use 'auto' or 'cpu'")
    return device


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether to autocast to bf16: "auto" does on CPU and on CUDA GPUs with bf16 support."""
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


def td_targets(reward: torch.Tensor, discount: torch.Tensor, next_q_target: torch.Tensor,
               next_q_online: torch.Tensor | None, td_clip: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bootstrapped n-step targets y = R + discount * Q_target(s', a*), clipped to +-td_clip.

    `discount` is gamma^k for a transition that bootstraps after k steps and 0 after a terminal
    (the replay computes both). a* is argmax of `next_q_online` (double DQN) or, when that is
    None, of `next_q_target` itself. Returns the targets and the share that was clipped.
    """
    if next_q_online is not None:
        best = next_q_online.argmax(dim=1, keepdim=True)
        next_v = next_q_target.gather(1, best).squeeze(1)
    else:
        next_v = next_q_target.max(dim=1).values
    y = reward + discount * next_v
    if td_clip > 0:
        clipped = (y.abs() > td_clip).float().mean()
        y = y.clamp(-td_clip, td_clip)
    else:
        clipped = torch.zeros((), device=y.device)
    return y, clipped


@dataclass
class UpdateResult:
    stats: torch.Tensor
    """(4,) float32 on the learner's device: loss, grad_norm (pre-clip), clip_delta
    (post-clip / pre-clip norm, 1.0 = not clipped), td_clip_frac. Kept on the device so that
    an update does not wait for the GPU; the caller reduces many at once."""
    td_abs: np.ndarray | None
    """|TD error| per sample (for PER priorities), or None when not asked for."""


class Learner:
    """Online and target Q-networks, Adam, and the update step."""

    def __init__(self, config: LearnerConfig, n_actions: int, stack: int = 4,
                 frame_shape: tuple[int, int] = (84, 84), device: torch.device | None = None):
        self.config = config
        self.device = device if device is not None else resolve_device(config.device)
        self.bf16 = use_bf16(config.precision, self.device)
        self.online = QNetwork(n_actions, stack, frame_shape, config.dueling).to(self.device)
        self._channels_last = self.bf16 or self.device.type == "cuda"
        if self._channels_last:
            self.online = self.online.to(memory_format=torch.channels_last)
        # The target network only runs forward: under bf16 it is stored in bf16, so autocast
        # does not cast its weights again on every update.
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        if self.bf16:
            self.target = self.target.to(torch.bfloat16)
        # Fused Adam: one kernel for all parameters (about 10x faster than the per-tensor loop
        # on this CPU, which otherwise costs as much as the backward pass).
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=config.lr,
                                          eps=config.adam_eps, fused=fused)
        self.updates = 0
        self.target_synced_at = 0

    @property
    def n_actions(self) -> int:
        return self.online.n_actions

    @property
    def channels_last(self) -> bool:
        """Whether the networks' weights are channels_last (bf16 on CPU, or CUDA): then batches
        in channels_last layout (``FrameReplay.sample(..., channels_last=True)``) reach the first
        conv without a permute of their bytes; other batches are permuted in `QNetwork.forward`.
        """
        return self._channels_last

    @property
    def target_age(self) -> int:
        """Updates since the target network was last synced."""
        return self.updates - self.target_synced_at

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        """A tensor on the learner's device sharing `array`'s memory and strides where it can.

        A view with non-negative strides (e.g. a channels_last replay batch, a (B, stack, H, W)
        view of (B, H, W, stack) bytes) is taken as it is: no copy, and its memory format
        survives the move to a GPU. Only negative strides, which torch cannot view, are copied.
        """
        if any(s < 0 for s in array.strides):
            array = np.ascontiguousarray(array)
        return torch.from_numpy(array).to(self.device, non_blocking=True)

    @torch.no_grad()
    def q_values(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Online Q-values (float32) of a uint8 batch (B, stack, H, W).

        Inference runs in fp32 whatever the training precision: acting is one observation at a
        time, where bf16 autocast would cast every weight on every call (measured slower), and
        diagnostics then judge exactly the network that acts."""
        x = obs if isinstance(obs, torch.Tensor) else self.to_device(obs)
        return self.online(x).float()

    def act(self, obs: np.ndarray) -> int:
        """Greedy joint action for one stack (stack, H, W)."""
        return int(self.q_values(obs[None]).argmax(dim=1).item())

    def update(self, batch, want_td: bool = False) -> UpdateResult:
        """One gradient step on a replay `Batch`; syncs the target every `target_update`."""
        cfg = self.config
        obs, next_obs = self.to_device(batch.obs), self.to_device(batch.next_obs)
        action = self.to_device(batch.action)
        reward, discount = self.to_device(batch.reward), self.to_device(batch.discount)
        # One autocast region: the bf16 copies of the online weights are made once and reused
        # by both of its forward passes; the target network is kept in bf16 already.
        with self._autocast():
            with torch.no_grad():
                next_q_target = self.target(next_obs).float()
                next_q_online = self.online(next_obs).float() if cfg.double_dqn else None
            q_all = self.online(obs)
        y, td_clip_frac = td_targets(reward, discount, next_q_target, next_q_online, cfg.td_clip)
        q = q_all.float().gather(1, action.unsqueeze(1)).squeeze(1)  # fp32 loss
        per_sample = F.huber_loss(q, y, reduction="none", delta=cfg.huber_delta)
        weight = self.to_device(batch.weight)
        loss = (per_sample * weight).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.online.parameters()]
        grad_norm = torch.nn.utils.get_total_norm(grads)
        if cfg.max_grad_norm > 0:
            clip_delta = torch.clamp(cfg.max_grad_norm / (grad_norm + 1e-6), max=1.0)
            # Scale only when clipping bites. On CPU reading the norm costs nothing and skips a
            # pass over every gradient (about 0.8 ms of a 13 ms update here); on a GPU the scale
            # is always applied (by 1.0 when not clipping) so the update never waits for it.
            if self.device.type != "cpu" or float(grad_norm) > cfg.max_grad_norm:
                torch._foreach_mul_(grads, clip_delta)
        else:
            clip_delta = torch.ones((), device=self.device)
        self.optimizer.step()
        self.updates += 1
        if self.updates - self.target_synced_at >= cfg.target_update:
            self.sync_target()
        stats = torch.stack([loss.detach(), grad_norm, clip_delta, td_clip_frac]).float()
        td_abs = (q.detach() - y).abs().cpu().numpy() if want_td else None
        return UpdateResult(stats, td_abs)

    def sync_target(self) -> None:
        self.target.load_state_dict(self.online.state_dict())
        self.target_synced_at = self.updates

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.online.parameters())

    def state_dict(self) -> dict:
        return {"online": self.online.state_dict(), "target": self.target.state_dict(),
                "optimizer": self.optimizer.state_dict(), "updates": self.updates,
                "target_synced_at": self.target_synced_at}

    def load_state_dict(self, state: dict, resync_target: bool = False) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["online"] if resync_target else state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
        self.target_synced_at = self.updates if resync_target else int(state["target_synced_at"])
