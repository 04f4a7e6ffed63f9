"""Configuration: one frozen dataclass per part, every field documented with its unit and why.

Defaults live here and nowhere else. `validate()` rejects a bad value with a message that names
the field, the value and what is accepted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

ACTION_SETS = ("documented", "minimal")


@dataclass(frozen=True)
class EnvConfig:
    """How the agent sees and drives one ALE game (Machado et al. 2018 evaluation settings)."""

    game: str = "phoenix"
    """ALE ROM id (snake_case, e.g. "space_invaders"); see `atari-agent games`."""
    action_set: str = "documented"
    """"documented": movement x (noop, ZAP, FIRE, FIRE+ZAP) from the game's profile;
    "minimal": the ROM's minimal ALE action set (to compare with published baselines)."""
    frameskip: int = 4
    """Emulator frames per agent step; the observation is the max of the last two."""
    repeat_action_probability: float = 0.25
    """Sticky actions: chance per emulator frame that ALE repeats the previous action."""
    noop_max: int = 30
    """Reset does a uniform 0..noop_max emulator frames of NOOP before the first observation."""
    terminal_on_life_loss: bool = False
    """Report a life loss as a terminal for learning (the episode itself ends at game over)."""
    clip_rewards: bool = True
    """Learn from sign(reward); the raw score is kept for reporting either way."""
    max_frames: int = 108_000
    """Emulator frames per episode before it is truncated (not terminated): 30 minutes at 60 Hz."""
    frame_shape: tuple[int, int] = (84, 84)
    """Preprocessed frame (height, width)."""
    stack: int = 4
    """Frames per observation."""

    def validate(self) -> EnvConfig:
        from agent.games import check_game  # local: games imports nothing from config at import

        check_game(self.game)
        _choice("action_set", self.action_set, ACTION_SETS)
        _int_range("frameskip", self.frameskip, 1, 64)
        _float_range("repeat_action_probability", self.repeat_action_probability, 0.0, 1.0)
        _int_range("noop_max", self.noop_max, 0, 10_000)
        _int_range("max_frames", self.max_frames, 1, 10**9)
        _int_range("stack", self.stack, 1, 64)
        if (
            not isinstance(self.frame_shape, tuple)
            or len(self.frame_shape) != 2
            or not all(isinstance(v, int) and 1 <= v <= 210 for v in self.frame_shape)
        ):
            raise ValueError(
                f"frame_shape must be (height, width) ints in 1..210, got {self.frame_shape!r}"
            )
        return self

    def replace(self, **changes) -> EnvConfig:
        return dataclasses.replace(self, **changes).validate()


def _choice(name: str, value, options) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")


def _int_range(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")


def _float_range(name: str, value, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
