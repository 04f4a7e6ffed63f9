"""Game profiles and the agent's action vocabulary.

The documented action set is the same four buttons for every game — 0 NOOP, 1 ZAP, 2 FIRE,
3 FIRE+ZAP (index = fire * 2 + zap) — joined with the movement axis a game needs. ZAP is the
game's special ability, taken from its manual (Phoenix: pull the joystick back for the force
shield). Each joint index decodes to (movement, button) and to exactly one ALE action.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import ale_py
from ale_py import roms as ale_roms

BUTTONS = ("NOOP", "ZAP", "FIRE", "FIRE+ZAP")
"""The documented buttons; a joint index is movement_index * 4 + button."""

MOVEMENTS: dict[str, tuple[str, ...]] = {
    "none": ("",),
    "horizontal": ("", "LEFT", "RIGHT"),
    "thrust_turn": ("", "UP", "LEFT", "RIGHT", "UPLEFT", "UPRIGHT"),
    "eight_way": ("", "UP", "DOWN", "LEFT", "RIGHT", "UPLEFT", "UPRIGHT", "DOWNLEFT", "DOWNRIGHT"),
}
"""Movement axes: ALE joystick directions ("" = centred)."""

# Where the ROMs a user drops in are looked up (repository root / roms).
USER_ROMS = Path(__file__).resolve().parent.parent / "roms"


@dataclass(frozen=True)
class GameProfile:
    game: str
    movement: str
    """Key of MOVEMENTS."""
    zap: str | None
    """Joystick direction that triggers the special ("DOWN"), or None: ZAP is inert."""
    zap_means: str
    """What ZAP does in this game, from its manual."""
    fire_on_reset: bool = False
    """Press FIRE at the start of each game and after each life lost (the game waits for it)."""
    profiled: bool = True
    """False for the default profile given to a game without one."""
    zap_alone: bool = False
    """ZAP acts only with the stick otherwise centred: moving with ZAP plays exactly as the move
    (Phoenix: DOWNLEFT as LEFT, tests/test_games.py), so those actions share the move's output."""


PROFILES: dict[str, GameProfile] = {
    p.game: p
    for p in (
        GameProfile("phoenix", "horizontal", "DOWN",
                    "force shield (pull the joystick back; the ship cannot move while it is up)",
                    zap_alone=True),
        GameProfile("beam_rider", "horizontal", "UP",
                    "torpedo (push the joystick forward; three per sector)"),
        GameProfile("asteroids", "thrust_turn", "DOWN",
                    "the game variation's feature: hyperspace, shields or flip (pull back)"),
        GameProfile("gravitar", "thrust_turn", "DOWN",
                    "shield and tractor beam (pull the joystick back)"),
        GameProfile("enduro", "horizontal", "DOWN", "brake (pull back; FIRE accelerates)"),
        GameProfile("breakout", "horizontal", None, "inert: no special (FIRE serves the ball)",
                    fire_on_reset=True),
        GameProfile("pong", "horizontal", None, "inert: no special (RIGHT/LEFT move the paddle)"),
        GameProfile("space_invaders", "horizontal", None, "inert: no special"),
        GameProfile("seaquest", "eight_way", None, "inert: no special (surface by moving up)"),
        GameProfile("atlantis", "horizontal", None,
                    "inert: no special (LEFT/RIGHT with FIRE pick the side gun, FIRE alone the "
                    "centre gun)"),
        GameProfile("ms_pacman", "eight_way", None, "inert: no special (FIRE does nothing)"),
    )
}

_DIRECTIONS = {"": (0, 0), "UP": (0, -1), "DOWN": (0, 1), "LEFT": (-1, 0), "RIGHT": (1, 0),
               "UPLEFT": (-1, -1), "UPRIGHT": (1, -1), "DOWNLEFT": (-1, 1), "DOWNRIGHT": (1, 1)}


def compose(movement: str, zap: str | None, fire: bool) -> str:
    """The one ALE action name for a movement, an optional ZAP direction and the fire button.

    A ZAP direction overrides the movement on its own axis (Asteroids: thrust UP + ZAP DOWN is
    DOWN, hyperspace), and keeps the other axis (Phoenix: LEFT + ZAP is DOWNLEFT).
    """
    dx, dy = _DIRECTIONS[movement]
    if zap is not None:
        zx, zy = _DIRECTIONS[zap]
        dx, dy = (zx or dx), (zy or dy)
    name = {-1: "UP", 0: "", 1: "DOWN"}[dy] + {-1: "LEFT", 0: "", 1: "RIGHT"}[dx]
    name += "FIRE" if fire else ""
    return name or "NOOP"


@functools.lru_cache(maxsize=1)
def _bundled_md5() -> dict[str, str]:
    """{md5: rom id} for every ROM ale-py supports (its own md5.json)."""
    with open(Path(ale_roms.__file__).parent / "md5.json") as f:
        return {md5: name.removesuffix(".bin") for name, md5 in json.load(f).items()}


# In ale-py's ROM list, but ALE's loadROM exits the whole process for them (two-player-only
# games). tests/test_games.py checks that each still fails and every other ROM loads.
UNLOADABLE = frozenset({"combat", "joust", "maze_craze", "warlords"})


def all_games() -> list[str]:
    """Every ROM id ale-py can load, sorted."""
    return sorted(set(ale_roms.get_all_rom_ids()) - UNLOADABLE)


def check_game(game: str) -> str:
    """`game` if ale-py can load it; else a ValueError naming close matches."""
    if game in UNLOADABLE:
        raise ValueError(
            f"game {game!r} ships with ale-py but ALE cannot load it (a two-player-only game); "
            "`atari-agent games` lists the games it can load"
        )
    if not isinstance(game, str) or game not in all_games():
        close = difflib.get_close_matches(str(game).lower().replace("-", "_").replace(" ", "_"),
                                          all_games(), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown game {game!r}: not a ROM that ale-py supports.{hint} "
            "`atari-agent games` lists them all."
        )
    return game


def rom_path(game: str, user_roms: Path = USER_ROMS) -> Path:
    """The ROM file for `game`: a matching file dropped into roms/, else ale-py's bundled one.

    Every file in roms/ is identified by its MD5 against ALE's list of supported ROMs, so its
    name does not matter; a file ALE does not know raises a ValueError.
    """
    check_game(game)
    for path in sorted(user_roms.glob("*")) if user_roms.is_dir() else ():
        if path.suffix.lower() not in (".bin", ".a26"):
            continue
        if identify_rom(path) == game:
            return path
    bundled = Path(ale_roms.__file__).parent / f"{game}.bin"
    if not bundled.is_file():
        raise ValueError(f"ROM for {game!r} is missing from ale-py ({bundled}); reinstall ale-py")
    return bundled


def identify_rom(path: Path) -> str:
    """The ROM id of a ROM file by its MD5; ValueError if ALE does not support that file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read ROM file {path}: {exc.strerror}") from None
    md5 = hashlib.md5(data).hexdigest()
    game = _bundled_md5().get(md5)
    if game is None:
        raise ValueError(
            f"ROM file {path} (md5 {md5}, {len(data)} bytes) is not a ROM that ALE supports; "
            "ALE checks ROMs by MD5, so use an unmodified dump of a supported game"
        )
    return game


def profile(game: str) -> GameProfile:
    """The game's profile, or the default one: eight-way movement, ZAP inert."""
    check_game(game)
    return PROFILES.get(game) or GameProfile(
        game, "eight_way", None, "inert: no profile for this game yet", profiled=False)


@dataclass(frozen=True)
class ActionSet:
    """The agent's actions for one game: names, ALE actions, and the button each one presses."""

    game: str
    kind: str
    """"documented" or "minimal"."""
    names: tuple[str, ...]
    """Display name per index, e.g. "FIRE+ZAP", "LEFT+FIRE", "RIGHT"."""
    ale_names: tuple[str, ...]
    """ALE action name per index, e.g. "DOWNLEFTFIRE"."""
    buttons: tuple[int, ...]
    """Documented button (index into BUTTONS) each action presses, for button distributions."""
    plays_as: tuple[str, ...] = ()
    """ALE action each index plays as, where the game's profile says two play alike (zap_alone:
    Phoenix's LEFT+ZAP presses DOWNLEFT and plays as LEFT); empty: as it presses (ale_names)."""

    def __len__(self) -> int:
        return len(self.names)

    @property
    def ale_actions(self) -> list[ale_py.Action]:
        return [getattr(ale_py.Action, n) for n in self.ale_names]

    def outputs(self) -> tuple[int, ...]:
        """Per index, the number of the distinct ALE action it plays as (in order of first
        appearance): the network output it reads with learner.shared_outputs, and what Agree%
        compares. The documented set repeats actions where ZAP is inert (Breakout: 12 indices,
        6 distinct) and where ZAP acts only alone (Phoenix: 12 indices, 8 distinct)."""
        first: dict[str, int] = {}
        return tuple(first.setdefault(name, len(first))
                     for name in self.plays_as or self.ale_names)

    def network_outputs(self, shared: bool) -> tuple[int, ...] | None:
        """QNetwork's `outputs`: with `shared` (learner.shared_outputs) and where some indices
        play alike, outputs(); else None, one output per index (so a minimal set's network and
        checkpoints are the same with the option on or off)."""
        outputs = self.outputs()
        return outputs if shared and len(set(outputs)) < len(outputs) else None

    def layout(self) -> dict:
        """What a checkpoint records to check that it is played with the same actions."""
        return {"game": self.game, "kind": self.kind, "ale_names": list(self.ale_names)}


def documented_actions(game: str) -> ActionSet:
    prof = profile(game)
    names, ale_names, buttons, plays_as = [], [], [], []
    for move in MOVEMENTS[prof.movement]:
        for button, button_name in enumerate(BUTTONS):
            fire, zap = bool(button // 2), bool(button % 2)
            names.append(button_name if not move else
                         move if button == 0 else f"{move}+{button_name}")
            ale_names.append(compose(move, prof.zap if zap else None, fire))
            buttons.append(button)
            plays_as.append(compose(move, None, fire) if zap and move and prof.zap_alone
                            else ale_names[-1])
    return ActionSet(game, "documented", tuple(names), tuple(ale_names), tuple(buttons),
                     tuple(plays_as) if plays_as != ale_names else ())


def minimal_actions(game: str, minimal: list[str]) -> ActionSet:
    """The ROM's minimal set (names as ALE gives them), each tagged with the button it presses."""
    prof = profile(game)
    buttons = []
    for name in minimal:
        fire = "FIRE" in name
        zap = prof.zap is not None and prof.zap in name.replace("FIRE", "")
        buttons.append(int(fire) * 2 + int(zap))
    return ActionSet(game, "minimal", tuple(minimal), tuple(minimal), tuple(buttons))


def action_set(game: str, kind: str, minimal: list[str] | None = None) -> ActionSet:
    if kind == "documented":
        return documented_actions(game)
    if kind == "minimal":
        if minimal is None:
            minimal = minimal_action_names(game)
        return minimal_actions(game, minimal)
    raise ValueError(f"action set must be 'documented' or 'minimal', got {kind!r}")


def minimal_action_names(game: str) -> list[str]:
    """The ROM's minimal action set, read from ALE (loads the ROM once)."""
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.loadROM(str(rom_path(game)))
    return [a.name for a in ale.getMinimalActionSet()]


def games_table() -> str:
    """One line per game ale-py can load: profile, movement axis, ZAP binding."""
    rows = [("game", "profile", "movement", "ZAP", "documented actions", "ZAP means")]
    for game in all_games():
        p = profile(game)
        rows.append((game, "yes" if p.profiled else "default", p.movement, p.zap or "inert",
                     str(4 * len(MOVEMENTS[p.movement])), p.zap_means))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    profiled = sum(1 for g in all_games() if g in PROFILES)
    lines.append(f"\n{len(rows) - 1} games, {profiled} with a profile; the rest use the default "
                 "(eight-way movement, ZAP inert). `atari-agent games GAME` shows one game.")
    return "\n".join(lines)


def describe_game(game: str) -> str:
    """One game's documented actions (index, name, ALE action) and its minimal action set."""
    p = profile(game)
    doc = documented_actions(game)
    mini = action_set(game, "minimal")
    lines = [f"{game}: movement {p.movement}, ZAP = {p.zap or 'inert'} ({p.zap_means})"
             + ("" if p.profiled else " [default profile]"),
             f"ROM: {rom_path(game)}", "", "documented action set (index = movement * 4 + button):"]
    lines += [f"  {i:3d}  {n:18s} -> {a}" for i, (n, a) in enumerate(zip(doc.names, doc.ale_names))]
    lines += ["", "minimal action set (--action-set minimal):"]
    lines += [f"  {i:3d}  {n:18s}    button {BUTTONS[b]}"
              for i, (n, b) in enumerate(zip(mini.names, mini.buttons))]
    return "\n".join(lines)
