"""The ALE bridge: one game driven through `ale_py.ALEInterface`, frames through the native kernel.

Per agent step: the chosen action for `frameskip` emulator frames (ALE applies sticky actions per
frame), the reward summed, the last two screens max-pooled, grayed and resized by the native
kernel straight into a caller's buffer (a replay-ring slot) or the env's own acting stack.
Reset: a new game, 0..noop_max NOOP frames, FIRE where the game waits for it. An episode ends at
game over (terminated) or at `max_frames` emulator frames (truncated, not terminated).

`AtariEnv` is the fast face the agent uses; `AtariGymEnv` wraps it as a `gymnasium.Env`.
"""

from __future__ import annotations

from dataclasses import dataclass

import ale_py
import gymnasium
import numpy as np

from agent.config import EnvConfig
from agent.games import ActionSet, action_set, profile, rom_path
from agent.native import FramePreprocessor


@dataclass
class Step:
    """What one agent step produced. `reward` is for learning (clipped if configured)."""

    reward: float
    raw_reward: float
    terminated: bool
    """The game is over."""
    truncated: bool
    """The episode hit max_frames."""
    life_lost: bool
    """A life was lost on this step (and the game is not over)."""
    learn_terminal: bool
    """terminated, or life_lost when the config makes life loss a terminal for learning."""


def seed_streams(seed: int) -> tuple[int, np.random.Generator]:
    """One seed split into independent streams: the emulator's seed and the env's own RNG."""
    emulator, env = np.random.SeedSequence(seed).spawn(2)
    return int(emulator.generate_state(1)[0] & 0x7FFFFFFF), np.random.default_rng(env)


class AtariEnv:
    """One ALE game, stepped by the index of an action in `self.actions`."""

    def __init__(self, config: EnvConfig | None = None, seed: int = 0):
        self.config = (config or EnvConfig()).validate()
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.profile = profile(self.config.game)
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # before: no banner on stdout
        self.ale = ale_py.ALEInterface()
        self._rom = str(rom_path(self.config.game))
        self._load(int(seed))
        minimal = [a.name for a in self.ale.getMinimalActionSet()]
        self.actions: ActionSet = action_set(self.config.game, self.config.action_set, minimal)
        self._ale_actions = self.actions.ale_actions
        self._noop = ale_py.Action.NOOP
        self._fire = ale_py.Action.FIRE
        screen = tuple(self.ale.getScreenDims())  # (210, 160) for most ROMs, up to (250, 160)
        self._kernel = FramePreprocessor(screen, self.config.frame_shape)
        self._screens = np.empty((2, *screen, 3), np.uint8)  # the last two raw frames
        h, w = self.config.frame_shape
        self._stack = np.zeros((self.config.stack, h, w), np.uint8)
        self.episode_score = 0.0
        self.episode_steps = 0
        self._lives = 0

    def _load(self, seed: int) -> None:
        emulator_seed, self._rng = seed_streams(seed)
        self.ale.setInt("random_seed", emulator_seed)
        self.ale.setFloat("repeat_action_probability", self.config.repeat_action_probability)
        self.ale.setInt("frame_skip", 1)
        self.ale.loadROM(self._rom)

    # ------------------------------------------------------------------ the agent's face
    @property
    def observation(self) -> np.ndarray:
        """The acting stack (stack, H, W), oldest frame first; a view, updated in place."""
        return self._stack

    def seed(self, seed: int) -> None:
        """Restart the emulator and the env's RNG from `seed` (reloads the ROM)."""
        self._load(int(seed))

    def reset(self, out: np.ndarray | None = None) -> np.ndarray:
        """Start a new game. The first frame goes into `out` if given (and the acting stack)."""
        self.ale.reset_game()
        for _ in range(int(self._rng.integers(0, self.config.noop_max + 1))):
            self.ale.act(self._noop)
            if self.ale.game_over():
                self.ale.reset_game()
        opening = 0.0
        if self.profile.fire_on_reset:
            opening = self.ale.act(self._fire)  # scored like the FIRE after a lost life
            if self.ale.game_over():
                self.ale.reset_game()
                opening = 0.0
        # The first observation has nothing to max with: its frame with itself.
        self.ale.getScreenRGB(self._screens[1])
        frame = self._kernel(self._screens[1], self._screens[1],
                             self._stack[-1] if out is None else out)
        self._stack[:] = frame  # first-frame padding, as the replay does
        self._lives = self.ale.lives()
        self.episode_score = opening
        self.episode_steps = 0
        return self._stack

    def step(self, action: int, out: np.ndarray | None = None) -> Step:
        """Act for `frameskip` frames. The new frame goes into `out` if given, and the stack."""
        if self.ale is None:
            raise RuntimeError("step() on a closed AtariEnv: make a new one")
        try:
            if isinstance(action, bool):
                raise TypeError  # True would index action 1
            ale_action = self._ale_actions[action]
        except (IndexError, TypeError):
            raise ValueError(
                f"action must be an int in [0, {len(self._ale_actions) - 1}] for "
                f"{self.config.game}'s {self.actions.kind} action set, got {action!r}"
            ) from None
        if action < 0:
            raise ValueError(f"action must be an int in [0, {len(self._ale_actions) - 1}], "
                             f"got {action!r}")
        ale = self.ale
        skip = self.config.frameskip
        screens = self._screens
        raw = 0.0
        game_over = False
        for i in range(skip):
            raw += ale.act(ale_action)
            if ale.game_over():
                game_over = True
                break
            if i == skip - 2:
                ale.getScreenRGB(screens[0])
        ale.getScreenRGB(screens[1])
        # Max over the last two frames; with one frame (frameskip 1, or a game that ended before
        # the second-to-last frame) the newest frame is maxed with itself.
        prev = screens[1] if (skip == 1 or i < skip - 1) else screens[0]
        self._stack[:-1] = self._stack[1:]  # shift first: the kernel may write into _stack[-1]
        if out is None:
            self._kernel(prev, screens[1], self._stack[-1])
        else:
            self._stack[-1] = self._kernel(prev, screens[1], out)
        lives = ale.lives()
        life_lost = lives < self._lives and not game_over
        self._lives = lives
        if life_lost and self.profile.fire_on_reset:
            raw += ale.act(self._fire)  # the game waits for FIRE; its frame's reward counts
        truncated = not game_over and ale.getEpisodeFrameNumber() >= self.config.max_frames
        self.episode_score += raw
        self.episode_steps += 1
        reward = float(np.sign(raw)) if self.config.clip_rewards else raw
        return Step(
            reward=reward,
            raw_reward=raw,
            terminated=game_over,
            truncated=truncated,
            life_lost=life_lost,
            learn_terminal=game_over or (life_lost and self.config.terminal_on_life_loss),
        )

    def rgb(self) -> np.ndarray:
        """The current raw screen, (210, 160, 3) uint8 (for playback)."""
        return self.ale.getScreenRGB()

    def close(self) -> None:
        self.ale = None


class AtariGymEnv(gymnasium.Env):
    """`AtariEnv` as a gymnasium.Env: observations (stack, 84, 84) uint8, Discrete actions."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, config: EnvConfig | None = None, render_mode: str | None = None):
        self.env = AtariEnv(config)
        h, w = self.env.config.frame_shape
        self.observation_space = gymnasium.spaces.Box(0, 255, (self.env.config.stack, h, w),
                                                      np.uint8)
        self.action_space = gymnasium.spaces.Discrete(len(self.env.actions))
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.env.seed(seed)
        obs = self.env.reset().copy()
        return obs, {"lives": self.env.ale.lives()}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action must be in {self.action_space}, got {action!r}")
        s = self.env.step(int(action))
        info = {"lives": self.env.ale.lives(), "raw_reward": s.raw_reward,
                "life_lost": s.life_lost, "episode_score": self.env.episode_score}
        return self.env.observation.copy(), s.reward, s.terminated, s.truncated, info

    def render(self):
        return self.env.rgb() if self.render_mode == "rgb_array" else None

    def close(self):
        self.env.close()
