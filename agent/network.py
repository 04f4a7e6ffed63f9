"""The Nature DQN convolutional Q-network (Mnih et al. 2015), with an optional dueling head.

Input: uint8 stacks (B, stack, H, W); the 1/255 scaling happens inside, so callers hand over
replay batches as they are. Output: one Q-value per joint action of the game's action set.
With `outputs` (learner.shared_outputs), actions that press the same ALE action share one output
of the last layer: the network computes one value per distinct ALE action and hands back one
per action index, so callers index actions as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURE = "nature-dqn"


class QNetwork(nn.Module):
    """conv 32-8x8-s4, conv 64-4x4-s2, conv 64-3x3-s1, FC 512, one output per action."""

    def __init__(self, n_actions: int, stack: int = 4, frame_shape: tuple[int, int] = (84, 84),
                 dueling: bool = False, outputs: list[int] | tuple[int, ...] | None = None):
        super().__init__()
        if n_actions < 1:
            raise ValueError(f"n_actions must be >= 1, got {n_actions}")
        self.n_actions, self.stack, self.frame_shape, self.dueling = (
            int(n_actions), int(stack), tuple(frame_shape), bool(dueling))
        # outputs[a]: the last layer's row that action a reads (ActionSet.outputs()).
        self.outputs = None if outputs is None else tuple(int(o) for o in outputs)
        if self.outputs is not None and (
                len(self.outputs) != n_actions
                or sorted(set(self.outputs)) != list(range(max(self.outputs) + 1))):
            raise ValueError(f"outputs must give each of the {n_actions} actions an output, "
                             f"numbered 0..k-1 with none unused, got {list(self.outputs)}")
        rows = n_actions if self.outputs is None else max(self.outputs) + 1
        # Not in the state dict (the spec records it): a buffer so that it follows .to(device).
        self.register_buffer("expand", None if self.outputs is None
                             else torch.tensor(self.outputs, dtype=torch.long), persistent=False)
        self.features = nn.Sequential(
            nn.Conv2d(stack, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, stack, *frame_shape)).shape[1]
        if dueling:
            self.value = nn.Sequential(nn.Linear(flat, 512), nn.ReLU(), nn.Linear(512, 1))
            self.advantage = nn.Sequential(nn.Linear(flat, 512), nn.ReLU(),
                                           nn.Linear(512, rows))
        else:
            self.head = nn.Sequential(nn.Linear(flat, 512), nn.ReLU(), nn.Linear(512, rows))

    def spec(self) -> dict:
        """What a checkpoint records to rebuild this network and to check a match (`outputs`
        only when shared: a checkpoint from before the option reads as not shared)."""
        spec = {"architecture": ARCHITECTURE, "n_actions": self.n_actions, "stack": self.stack,
                "frame_shape": list(self.frame_shape), "dueling": self.dueling}
        if self.outputs is not None:
            spec["outputs"] = list(self.outputs)
        return spec

    @classmethod
    def from_spec(cls, spec: dict) -> QNetwork:
        if spec.get("architecture") != ARCHITECTURE:
            raise ValueError(f"network architecture {spec.get('architecture')!r} is not "
                             f"supported (expected {ARCHITECTURE!r})")
        return cls(spec["n_actions"], spec["stack"], tuple(spec["frame_shape"]), spec["dueling"],
                   spec.get("outputs"))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if obs.dtype != torch.uint8:  # frames are bytes: a float input (NaN, Inf) is a bug
            raise ValueError(f"observations must be uint8 frames (0-255) of shape "
                             f"(batch, {self.stack}, {self.frame_shape[0]}, "
                             f"{self.frame_shape[1]}), got {obs.dtype} {tuple(obs.shape)}")
        # uint8 -> float in the dtype the first conv computes in (autocast's, when active); 0..255
        # is exact in bf16 too, so the 1/255 scaling moves onto conv1's weights (8k numbers, not
        # a pass over the batch). channels_last suits oneDNN's convs. The layers run as
        # functions: the same weights and maths as the modules, without their call overhead
        # (about 7% of a one-observation forward pass, measured).
        dtype = self.features[0].weight.dtype
        if torch.is_autocast_enabled(obs.device.type):
            dtype = torch.get_autocast_dtype(obs.device.type)
        c1, c2, c3 = self.features[0], self.features[2], self.features[4]
        if c1.weight.is_contiguous(memory_format=torch.channels_last):
            obs = obs.contiguous(memory_format=torch.channels_last)  # permute the uint8 bytes
        x = F.relu(F.conv2d(obs.to(dtype), c1.weight * (1.0 / 255.0), c1.bias, c1.stride))
        x = F.relu(F.conv2d(x, c2.weight, c2.bias, c2.stride))
        x = F.relu(F.conv2d(x, c3.weight, c3.bias, c3.stride)).flatten(1)
        if not self.dueling:
            q = _mlp(self.head, x)
        else:  # the advantages' mean over distinct actions: a repeated action counts once
            adv = _mlp(self.advantage, x)
            q = _mlp(self.value, x) + adv - adv.mean(dim=1, keepdim=True)
        return q if self.expand is None else q.index_select(1, self.expand)


def _mlp(head: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Linear, ReLU, Linear (a head of QNetwork) as functions."""
    hidden, out = head[0], head[2]
    return F.linear(F.relu(F.linear(x, hidden.weight, hidden.bias)), out.weight, out.bias)
