"""The ALE bridge: one game driven through `ale_py.ALEInterface`, frames through the native kernel.

Per agent step: the chosen action for `frameskip` emulator frames (ALE applies sticky actions per
frame), the reward summed, the last two screens max-pooled, grayed and resized by the native
kernel straight into a caller's buffer (a replay-ring slot) or the env's own acting stack.
Screens are read as ALE's palette indices (`getScreen`, one byte a pixel) rather than RGB
(`getScreenRGB`, 25x slower to read): the kernel learns each index's colour from the first screen
that shows it, read both ways, and then computes the max of the two frames' colours itself.
Reset: a new game, 0..noop_max NOOP frames, FIRE where the game waits for it. An episode ends at
game over (terminated) or at `max_frames` emulator frames (truncated, not terminated).

The serve (`_serve`: after reset and after a lost life, in games whose profile says the game waits
for FIRE, e.g. Breakout): with sticky actions, ALE applies the new action on a frame only with
probability 1 - p and otherwise repeats the previous one (NOOP after a reset), so a single FIRE
frame would be lost a quarter of the time at p = 0.25 and the game would then wait forever for a
policy that never presses FIRE. So the env presses FIRE one frame at a time until ALE has applied it
(the sticky tracker's replay of the emulator's RNG says so), at most SERVE_MAX_FRAMES frames.
Breakout takes FIRE on the very frame a life is lost, so an applied FIRE is a served ball.

`AtariEnv` is the fast face the agent uses; `AtariGymEnv` wraps it as a `gymnasium.Env`.

Snapshots (`AtariEnv.get_state` / `set_state`) carry everything a later `step()` depends on: the
emulator with its RNG, the env's own RNG, the acting stack and the episode counters, and ALE's
sticky "previous action", which ALE keeps outside its saved state (see `_StickyTracker`).
"""

from __future__ import annotations

import dataclasses
import random
from array import array
from dataclasses import dataclass

import ale_py
import gymnasium
import numpy as np

from agent.config import EnvConfig
from agent.games import ActionSet, action_set, profile, rom_path
from agent.native import FramePreprocessor, FrameSkip

SUPPORTED_ALE = (0, 12)
"""The ale-py minor version this code runs on: `AtariEnv` reads its emulator-state layout
(`ALEState.serialize()`) for sticky-action snapshots, which other versions lay out otherwise."""


class UnsupportedALE(RuntimeError):
    """The installed ale-py is not the version this code reads."""


def check_ale_version(version: str | None = None) -> None:
    """Refuse, in one line, an ale-py other than 0.12.x (default: the installed one)."""
    version = ale_py.__version__ if version is None else version
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        major_minor = None
    if major_minor != SUPPORTED_ALE:
        want, below = f"0.{SUPPORTED_ALE[1]}", f"0.{SUPPORTED_ALE[1] + 1}"
        raise UnsupportedALE(
            f"ale-py {version} is installed, but atari-agent needs ale-py {want}.x (it reads that "
            f"version's emulator-state layout): pip install 'ale-py>={want},<{below}'")


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


SERVE_MAX_FRAMES = 32
"""Most emulator frames of FIRE per serve: at p = 0.25 all of them stick with probability
0.25**32 (about 1e-19); at p = 1 ALE applies no new action at all, so a serve is one frame."""

STATE_FORMAT = "atari-agent-env-state"
STATE_VERSION = 1
_MT_WORDS = 625  # std::mt19937's text form: 624 state words and the position in them


def _ale_rng_words(blob: bytes) -> tuple[int, ...]:
    """The emulator RNG's std::mt19937 state inside a serialized `ALEState` (cloned with its RNG).

    `ALEState.serialize()` (ale-py 0.12) is: six int32 (paddles, frame numbers, mode,
    difficulty), the emulator's own state as an int32 length and bytes, then two int32 (paddle
    limits). The emulator's state ends with a bool (int32 pattern) saying the RNG is included and
    the RNG as a length-prefixed text: libstdc++'s `operator<<` of std::mt19937, 624 words and
    the position, space-separated (Python's `random.Random` state has the same 625 numbers); the
    standard's form without the position (libc++) is 624 words, oldest first, which is the state
    at position 624. Raises ValueError if the blob does not have that form.
    """
    if len(blob) < 36:
        raise ValueError(f"is {len(blob)} bytes, too short for a serialized ALEState")
    n = int.from_bytes(blob[24:28], "little")
    if 28 + n + 8 != len(blob):
        raise ValueError(f"has an emulator section of {n} bytes that does not fit its "
                         f"{len(blob)} bytes: not a serialized ALEState")
    inner = blob[28:28 + n]
    start = len(inner.rstrip(b"0123456789 "))  # the text's length prefix ends in a 0 byte
    if start < 8 or int.from_bytes(inner[start - 4:start], "little") != len(inner) - start:
        raise ValueError("does not end with the emulator's RNG: not an ALEState cloned with "
                         "cloneState(include_rng=True)")
    words = tuple(int(w) for w in inner[start:].split())
    if len(words) == _MT_WORDS - 1:
        words += (624,)
    if len(words) != _MT_WORDS or not all(w < 2**32 for w in words) or words[-1] > 624:
        raise ValueError(f"holds an RNG of {len(words)} numbers, expected std::mt19937's 625")
    return words


class _StickyTracker:
    """Knows ALE's sticky "previous action", which `ALEState` does not save.

    With repeat_action_probability p, ALE's `act` draws two doubles from its RNG per emulator
    frame (player A, then player B, each 32 bits of std::mt19937 over 2**32) and takes the new
    player-A action only if its draw is >= p; otherwise the previous one repeats. That previous
    action lives in the environment, not in `cloneState`'s state, so a restored emulator would
    repeat whatever the restoring ALEInterface last applied. This tracker keeps an anchor (the
    emulator RNG's state and the previous action, known at `reset_game`, where ALE sets it to
    NOOP, and at every get/set_state) and the actions sent since, one entry per run of frames;
    replaying the RNG from the anchor says which frames took their action.
    """

    def __init__(self, p: float):
        self.threshold = float(np.float32(p))  # ALE keeps p as a float; draws compare in double
        self.anchor_words: tuple[int, ...] | None = None
        self.anchor_state: ale_py.ALEState | None = None
        self.anchor_action = 0
        self.acted = array("H")  # (ALE action << 7) | frames, since the anchor

    def anchor(self, state: ale_py.ALEState, action: int,
               words: tuple[int, ...] | None = None) -> None:
        self.anchor_state, self.anchor_words = state, words
        self.anchor_action = int(action)
        del self.acted[:]

    def previous_action(self, now_words: tuple[int, ...]) -> int:
        """ALE's previous player-A action now, given the emulator RNG's state now."""
        if self.anchor_words is None:
            self.anchor_words = _ale_rng_words(self.anchor_state.serialize())
        gen = random.Random()
        gen.setstate((3, self.anchor_words, None))
        previous = self.anchor_action
        codes = np.frombuffer(self.acted, np.uint16)
        frames = int((codes & 127).sum())
        if frames:
            # Two 32-bit draws per frame; randbytes gives them in order, little-endian.
            draws = np.frombuffer(gen.randbytes(8 * frames), "<u4")[0::2]
            took = np.flatnonzero(draws / 4294967296.0 >= self.threshold)
            if took.size:
                per_frame = np.repeat(codes >> 7, codes & 127)
                previous = int(per_frame[took[-1]])
        if gen.getstate()[1] != now_words:
            raise RuntimeError(
                "the emulator's RNG moved in a way the env did not record (was env.ale driven "
                "directly?); the sticky previous action cannot be known, so no exact snapshot")
        return previous

    def now(self, ale: ale_py.ALEInterface) -> int:
        """ALE's previous player-A action now; re-anchors here, so the next replay is short."""
        clone = ale.cloneState(include_rng=True)
        words = _ale_rng_words(bytes(clone.serialize()))
        previous = self.previous_action(words)
        self.anchor(clone, previous, words)
        return previous

    def force(self, ale: ale_py.ALEInterface, state: ale_py.ALEState,
              words: tuple[int, ...], action: int) -> None:
        """Make `action` ALE's previous action, then leave the emulator exactly at `state`."""
        gen = random.Random()
        gen.setstate((3, words, None))
        if self.threshold < 1.0:  # at p = 1 no action is ever taken: it is NOOP since reset
            frames = 1
            while gen.getrandbits(32) / 4294967296.0 < self.threshold:
                gen.getrandbits(32)
                frames += 1
            for _ in range(frames):
                ale.act(ale_py.Action(action))
        ale.restoreState(state)


def _config_state(config: EnvConfig) -> dict:
    out = dataclasses.asdict(config)
    out["frame_shape"] = np.asarray(config.frame_shape, np.int64)
    return out


class AtariEnv:
    """One ALE game, stepped by the index of an action in `self.actions`."""

    def __init__(self, config: EnvConfig | None = None, seed: int = 0):
        self.config = (config or EnvConfig()).validate()
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        check_ale_version()
        self.profile = profile(self.config.game)
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # before: no banner on stdout
        self.ale = ale_py.ALEInterface()
        self._rom = str(rom_path(self.config.game))
        self._load(int(seed))
        minimal = [a.name for a in self.ale.getMinimalActionSet()]
        self.actions: ActionSet = action_set(self.config.game, self.config.action_set, minimal)
        self._ale_actions = self.actions.ale_actions
        self._codes = [a.value << 7 for a in self._ale_actions]  # for the sticky tracker
        self._noop = ale_py.Action.NOOP
        self._fire = ale_py.Action.FIRE
        self._noop_code = self._noop.value << 7
        self._fire_code = self._fire.value << 7
        screen = tuple(self.ale.getScreenDims())  # (210, 160) for most ROMs, up to (250, 160)
        self._kernel = FramePreprocessor(screen, self.config.frame_shape)
        h, w = self.config.frame_shape
        self._stack = np.zeros((self.config.stack, h, w), np.uint8)
        # The frameskip loop (act, read the last two screens, preprocess) runs natively.
        ale = self.ale
        self._skip = FrameSkip(self._kernel, ale.act, ale.game_over, ale.getScreen,
                               ale.getScreenRGB, self.config.frameskip, self._stack)
        self.episode_score = 0.0
        self.episode_steps = 0
        self._lives = 0

    def _load(self, seed: int) -> None:
        emulator_seed, self._rng = seed_streams(seed)
        self.ale.setInt("random_seed", emulator_seed)
        self.ale.setFloat("repeat_action_probability", self.config.repeat_action_probability)
        self.ale.setInt("frame_skip", 1)
        self.ale.loadROM(self._rom)  # resets the game: the sticky previous action is NOOP
        self._sticky = _StickyTracker(self.config.repeat_action_probability)
        self._sticky.anchor(self.ale.cloneState(include_rng=True), ale_py.Action.NOOP.value)

    def _reset_game(self) -> None:
        self.ale.reset_game()  # draws nothing from the RNG; sets the previous action to NOOP
        self._sticky.anchor(self.ale.cloneState(include_rng=True), self._noop.value)

    # ------------------------------------------------------------------ the agent's face
    @property
    def observation(self) -> np.ndarray:
        """The acting stack (stack, H, W), oldest frame first; a view, updated in place."""
        return self._stack

    def share_stack(self, buffer: np.ndarray) -> None:
        """Keep the acting stack in `buffer` from now on (its current frames copied in), e.g. a
        row of a worker pool's shared memory, so that no step has to copy it out."""
        shape = self._stack.shape
        if (not isinstance(buffer, np.ndarray) or buffer.dtype != np.uint8
                or buffer.shape != shape or not buffer.flags.c_contiguous
                or not buffer.flags.writeable):
            raise ValueError(f"buffer must be a writable C-contiguous uint8 array of shape "
                             f"{shape}, got {getattr(buffer, 'dtype', type(buffer).__name__)} "
                             f"{getattr(buffer, 'shape', '')}")
        buffer[...] = self._stack
        self._skip.bind(buffer)
        self._stack = buffer

    def seed(self, seed: int) -> None:
        """Restart the emulator and the env's RNG from `seed` (reloads the ROM)."""
        self._load(int(seed))

    def reset(self, out: np.ndarray | None = None) -> np.ndarray:
        """Start a new game. The first frame goes into `out` if given (and the acting stack)."""
        if self.ale is None:
            raise RuntimeError("reset() on a closed AtariEnv: make a new one")
        self._reset_game()
        acted = self._sticky.acted
        for _ in range(int(self._rng.integers(0, self.config.noop_max + 1))):
            self.ale.act(self._noop)
            acted.append(self._noop_code | 1)
            if self.ale.game_over():
                self._reset_game()
                acted = self._sticky.acted
        opening = 0.0
        if self.profile.fire_on_reset:
            opening = self._serve()  # scored like the serve after a lost life
            if self.ale.game_over():
                self._reset_game()
                opening = 0.0
        # The first observation has nothing to max with: its frame with itself.
        self._read_screen(1)
        frame = self._kernel.indexed(1, 1, self._stack[-1] if out is None else out)
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
        # Max over the last two frames; with one frame (frameskip 1, or a game that ended before
        # the second-to-last frame) the newest is maxed with itself. The new frame goes into
        # the acting stack (shifted) and into `out`.
        raw, frames, game_over = self._skip.step(ale_action, out)
        self._sticky.acted.append(self._codes[action] | frames)
        lives = ale.lives()
        life_lost = lives < self._lives and not game_over
        self._lives = lives
        if life_lost and self.profile.fire_on_reset:
            raw += self._serve()  # the game waits for FIRE; its frames' reward counts
        truncated = not game_over and ale.getEpisodeFrameNumber() >= self.config.max_frames
        self.episode_score += raw
        self.episode_steps += 1
        reward = raw
        if self.config.clip_rewards and raw == raw:  # its sign; a NaN stays NaN, for the replay
            reward = float((raw > 0) - (raw < 0))  # to refuse with the step named
        learn_terminal = game_over or (life_lost and self.config.terminal_on_life_loss)
        if learn_terminal and not game_over:
            # The replay starts a new segment at this frame, padded with it (as at reset): the
            # acting stack must be that same stack, or the agent acts on one and learns another.
            self._stack[:-1] = self._stack[-1]
        return Step(
            reward=reward,
            raw_reward=raw,
            terminated=game_over,
            truncated=truncated,
            life_lost=life_lost,
            learn_terminal=learn_terminal,
        )

    def _serve(self) -> float:
        """Press FIRE until ALE has applied it (see the module docstring); the frames' reward.
        Deterministic from the emulator's state and RNG, so snapshots replay it exactly."""
        ale, sticky = self.ale, self._sticky
        check = 0.0 < sticky.threshold < 1.0  # at 0 every frame applies, at 1 none does
        raw = 0.0
        for _ in range(SERVE_MAX_FRAMES):
            raw += ale.act(self._fire)
            sticky.acted.append(self._fire_code | 1)
            if not check or ale.game_over() or sticky.now(ale) == self._fire.value:
                break
        return raw

    def _read_screen(self, slot: int) -> None:
        """The current screen into the kernel's index frame `slot`; new colours learned."""
        self._skip.read(slot)

    def rgb(self) -> np.ndarray:
        """The current raw screen, (210, 160, 3) uint8 (for playback)."""
        return self.ale.getScreenRGB()

    # ------------------------------------------------------------------ snapshots
    def get_state(self) -> dict:
        """Everything later `step()`s depend on, as plain values (no ALE or pickled objects).

        After `set_state(state)` on an AtariEnv with the same EnvConfig (any seed), `step()` and
        `reset()` give the same frames, rewards and flags as this env would from here. Keys:

        - format str, version int: "atari-agent-env-state", 1;
        - config: the EnvConfig's fields (frame_shape as an int64 array (2,)); checked on load;
        - ale: uint8 array, `ALEState.serialize()` of `cloneState(include_rng=True)`: the
          emulator (RAM, CPU, TIA, cartridge, frame numbers, paddles) and its RNG, which draws
          the sticky actions;
        - sticky_action int: ALE's previous player-A action (an `ale_py.Action` value), which
          a sticky frame repeats; ALE keeps it outside its saved state;
        - rng: the env's numpy Generator state (`bit_generator.state`: a dict of str and int;
          the PCG64 words are ints up to 128 bits), which draws the NOOPs of each reset;
        - stack: uint8 (stack, H, W), the acting observation;
        - episode_score float, episode_steps int, lives int.

        Cost: one emulator clone (about 0.1 ms) plus replaying the emulator RNG since the last
        reset or snapshot (about 3 ms for a full 108 000-frame episode).
        """
        if self.ale is None:
            raise RuntimeError("get_state() on a closed AtariEnv: make a new one")
        clone = self.ale.cloneState(include_rng=True)
        blob = bytes(clone.serialize())
        try:
            words = _ale_rng_words(blob)
        except ValueError as exc:
            raise RuntimeError(f"ale-py {ale_py.__version__}'s ALEState {exc}; this code reads "
                               "the layout of ale-py 0.12") from None
        sticky = self._sticky.previous_action(words)
        self._sticky.anchor(clone, sticky, words)  # the next snapshot replays from here
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "config": _config_state(self.config),
            "ale": np.frombuffer(blob, np.uint8).copy(),
            "sticky_action": sticky,
            "rng": _plain(self._rng.bit_generator.state),
            "stack": self._stack.copy(),
            "episode_score": float(self.episode_score),
            "episode_steps": int(self.episode_steps),
            "lives": int(self._lives),
        }

    def set_state(self, state: dict) -> None:
        """Restore a `get_state()` snapshot (see there). Everything is checked first: a snapshot
        of another game or config, a missing key, a wrong type, dtype or shape raises
        ValueError naming the problem and leaves this env unchanged."""
        if self.ale is None:
            raise RuntimeError("set_state() on a closed AtariEnv: make a new one")
        if not isinstance(state, dict):
            raise ValueError(f"state must be a dict from AtariEnv.get_state(), got "
                             f"{type(state).__name__}")
        keys = ("format", "version", "config", "ale", "sticky_action", "rng", "stack",
                "episode_score", "episode_steps", "lives")
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"env state is missing key {missing[0]!r} (an AtariEnv.get_state() "
                             f"has keys {', '.join(keys)})")
        extra = sorted(str(k) for k in state if k not in keys)
        if extra:
            raise ValueError(f"env state has unexpected key(s) {', '.join(map(repr, extra))}")
        if state["format"] != STATE_FORMAT or state["version"] != STATE_VERSION:
            raise ValueError(f"env state is format {state['format']!r} version "
                             f"{state['version']!r}, expected {STATE_FORMAT!r} version "
                             f"{STATE_VERSION}")
        self._check_config(state["config"])

        blob = _uint8_blob(state["ale"])
        try:
            words = _ale_rng_words(blob)
        except ValueError as exc:
            raise ValueError(f"env state['ale'] {exc}") from None
        sticky = state["sticky_action"]
        legal = {a.value for a in self.ale.getLegalActionSet()}
        if isinstance(sticky, bool) or not isinstance(sticky, (int, np.integer)) \
                or int(sticky) not in legal:
            raise ValueError(f"env state['sticky_action'] is {sticky!r}, expected one of the "
                             f"ALE actions {sorted(legal)}")
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = state["rng"]
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"env state['rng'] is not a {type(self._rng.bit_generator).__name__}"
                             f" state ({type(exc).__name__}: {exc})") from None
        if type(rng.bit_generator) is not type(self._rng.bit_generator):
            raise ValueError(f"env state['rng'] is a {type(rng.bit_generator).__name__} state, "
                             f"expected {type(self._rng.bit_generator).__name__}")
        stack = np.asarray(state["stack"])
        if stack.dtype != np.uint8 or stack.shape != self._stack.shape:
            raise ValueError(f"env state['stack'] is a {stack.dtype} array of shape "
                             f"{stack.shape}, expected uint8 of shape {self._stack.shape} "
                             "(stack, height, width)")
        numbers = {}
        for key, kind in (("episode_score", (int, float)), ("episode_steps", int),
                          ("lives", int)):
            v = state[key]
            if isinstance(v, bool) or not isinstance(v, kind) or (key != "episode_score"
                                                                   and v < 0):
                raise ValueError(f"env state[{key!r}] is {v!r}, expected a "
                                 f"{'number' if key == 'episode_score' else 'non-negative int'}")
            numbers[key] = v
        try:
            ale_state = ale_py.ALEState(blob)
        except Exception as exc:
            raise ValueError(f"env state['ale'] is not a serialized ALEState ({exc})") from None

        # Everything checked: restore. A failing restore puts the emulator back as it was.
        backup = self.ale.cloneState(include_rng=True)
        try:
            self._sticky.force(self.ale, ale_state, words, int(sticky))
        except Exception as exc:
            backup_words = _ale_rng_words(bytes(backup.serialize()))
            self._sticky.force(self.ale, backup, backup_words,
                               self._sticky.previous_action(backup_words))
            raise ValueError(f"env state['ale'] could not be restored into {self.config.game} "
                             f"({type(exc).__name__}: {exc})") from None
        self._sticky.anchor(ale_state, int(sticky), words)
        self._rng = rng
        self._stack[:] = stack
        self.episode_score = float(numbers["episode_score"])
        self.episode_steps = int(numbers["episode_steps"])
        self._lives = int(numbers["lives"])

    def _check_config(self, got) -> None:
        expected = _config_state(self.config)
        if not isinstance(got, dict) or set(got) != set(expected):
            raise ValueError(f"env state['config'] must be a dict with the EnvConfig fields "
                             f"{', '.join(expected)}, got {got!r}")
        if got["game"] != expected["game"]:
            raise ValueError(f"env state is of game {got['game']!r}, but this env plays "
                             f"{self.config.game!r}")
        for key, want in expected.items():
            have = got[key]
            if key == "frame_shape":
                same = np.array_equal(np.asarray(have), want)
            else:  # 1 == True in Python; a bool field must stay a bool and a number a number
                same = have == want and isinstance(have, bool) == isinstance(want, bool)
            if not same:
                raise ValueError(f"env state's config.{key} is {have!r}, but this env has "
                                 f"{key}={getattr(self.config, key)!r}; restore into an AtariEnv "
                                 "with the same EnvConfig")

    def close(self) -> None:
        self.ale = self._skip = None


def _plain(value):
    """A copy of nested dicts of str/int/float (a bit generator's state) with no numpy scalars."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


def _uint8_blob(value) -> bytes:
    try:
        a = np.asarray(value)
    except Exception as exc:
        raise ValueError(f"env state['ale'] could not be read as an array ({exc})") from None
    if a.dtype != np.uint8 or a.ndim != 1:
        raise ValueError(f"env state['ale'] is a {a.dtype} array of shape {a.shape}, expected a "
                         "1-D uint8 array (the serialized ALEState)")
    return a.tobytes()


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
