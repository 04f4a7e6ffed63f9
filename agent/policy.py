"""A saved agent, ready to act: a checkpoint read back into its game, action set and network.

Play and evaluate both start here. The checkpoint is read with `checkpoint.load` (weights only,
no pickled code), its network is rebuilt from the recorded spec, and the action layout is
checked against the env it will drive, so a checkpoint is never played with other actions.
Acting runs in fp32 on the CPU (one observation at a time; see `Learner.q_values`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from agent import checkpoint as ckpt_io
from agent.checkpoint import CheckpointError
from agent.config import Config, EnvConfig, from_dict
from agent.network import QNetwork


@dataclass
class LoadedAgent:
    path: Path
    game: str
    config: Config
    """The training run's config (its env section is what the agent was trained on)."""
    layout: dict
    """The action layout recorded in the checkpoint: game, kind, ale_names."""
    network: QNetwork
    steps: int
    """Agent steps of training behind these weights."""

    @torch.no_grad()
    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q-values (float32, one per action) of one uint8 stack (stack, H, W)."""
        return self.network(torch.from_numpy(np.ascontiguousarray(obs))[None])[0].float().numpy()

    def act(self, obs: np.ndarray) -> int:
        return int(self.q_values(obs).argmax())

    def env_config(self, **overrides) -> EnvConfig:
        """The env the agent was trained on, with `overrides` (e.g. the evaluation protocol)."""
        return self.config.env.replace(**overrides)

    def check_actions(self, actions) -> None:
        """Refuse an env whose action set is not the one the network was trained on."""
        ckpt_io.verify({"layout": self.layout}, self.path, layout=actions.layout())


def load_agent(path: str | Path) -> LoadedAgent:
    """Read a checkpoint for acting, or raise CheckpointError naming the file and the problem."""
    path = Path(path)
    saved = ckpt_io.load(path)
    try:
        config = from_dict(saved["config"], source=str(path))
        network = QNetwork.from_spec(saved["network"])
        network.load_state_dict(saved["learner"]["online"])
        layout = dict(saved["layout"])
        steps = int(saved["counters"]["steps"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        # RuntimeError: load_state_dict's shape mismatch; the others: a field missing or wrong.
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc)
        raise CheckpointError(f"checkpoint {path} is incomplete or inconsistent "
                              f"({type(exc).__name__}: {detail})") from None
    if layout.get("game") != config.env.game:
        raise CheckpointError(f"checkpoint {path} is inconsistent: its actions are for "
                              f"{layout.get('game')!r} but its config plays {config.env.game!r}")
    if len(layout.get("ale_names", ())) != network.n_actions:
        raise CheckpointError(f"checkpoint {path} is inconsistent: {network.n_actions} network "
                              f"outputs for {len(layout.get('ale_names', ()))} actions")
    network.eval()
    return LoadedAgent(path, config.env.game, config, layout, network, steps)
