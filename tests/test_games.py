"""Game profiles: every documented action on every profiled game maps to the intended ALE action."""

from __future__ import annotations

import hashlib
import shutil

import ale_py
import numpy as np
import pytest

from agent import games
from agent.games import BUTTONS, MOVEMENTS, PROFILES, action_set, compose, documented_actions

# What each profiled game's ZAP must be, written out by hand from the manuals (not derived).
EXPECTED_ZAP = {
    "phoenix": "DOWN", "beam_rider": "UP", "asteroids": "DOWN", "gravitar": "DOWN",
    "enduro": "DOWN", "breakout": None, "pong": None, "space_invaders": None, "seaquest": None,
    "atlantis": None, "ms_pacman": None,
}


def test_the_profiled_games_are_the_ones_written_out():
    assert set(PROFILES) == set(EXPECTED_ZAP)
    for game, zap in EXPECTED_ZAP.items():
        assert PROFILES[game].zap == zap, game


def test_phoenix_documented_set_spelled_out():
    acts = documented_actions("phoenix")
    assert dict(zip(acts.names, acts.ale_names)) == {
        "NOOP": "NOOP", "ZAP": "DOWN", "FIRE": "FIRE", "FIRE+ZAP": "DOWNFIRE",
        "LEFT": "LEFT", "LEFT+ZAP": "DOWNLEFT", "LEFT+FIRE": "LEFTFIRE",
        "LEFT+FIRE+ZAP": "DOWNLEFTFIRE",
        "RIGHT": "RIGHT", "RIGHT+ZAP": "DOWNRIGHT", "RIGHT+FIRE": "RIGHTFIRE",
        "RIGHT+FIRE+ZAP": "DOWNRIGHTFIRE",
    }
    # Phoenix's minimal set is exactly NOOP / DOWN / FIRE / DOWNFIRE plus LEFT/RIGHT moves.
    minimal = set(action_set("phoenix", "minimal").ale_names)
    assert minimal == {"NOOP", "FIRE", "RIGHT", "LEFT", "DOWN", "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE"}
    assert {"NOOP", "DOWN", "FIRE", "DOWNFIRE"} <= set(acts.ale_names)


@pytest.mark.parametrize("game", sorted(EXPECTED_ZAP))
def test_every_documented_action_maps_to_the_intended_ale_action(game):
    acts = documented_actions(game)
    moves = MOVEMENTS[PROFILES[game].movement]
    assert len(acts) == 4 * len(moves)
    zap = EXPECTED_ZAP[game]
    legal = {a.name for a in ale_py.Action.__members__.values()}
    for index, (name, ale_name, button) in enumerate(zip(acts.names, acts.ale_names, acts.buttons)):
        move, b = moves[index // 4], index % 4
        assert button == b and BUTTONS[b] in ("NOOP", "ZAP", "FIRE", "FIRE+ZAP")
        fire, zapped = b >= 2, b % 2 == 1
        assert ale_name in legal
        assert ("FIRE" in ale_name) == fire, (game, name, ale_name)
        if zapped and zap is not None:
            assert zap in ale_name, (game, name, ale_name)  # the special is pressed
        if not zapped or zap is None:
            # without ZAP (or where it is inert) the action is exactly the movement (+ FIRE)
            assert ale_name == compose(move, None, fire), (game, name, ale_name)
        # the display name says what is pressed
        assert name.split("+")[0] in (move or BUTTONS[b].split("+")[0])


def test_zap_overrides_the_movement_on_its_own_axis_only():
    assert compose("UP", "DOWN", False) == "DOWN"           # asteroids: thrust + hyperspace
    assert compose("UPLEFT", "DOWN", True) == "DOWNLEFTFIRE"
    assert compose("LEFT", "DOWN", False) == "DOWNLEFT"     # phoenix: move + shield
    assert compose("", None, False) == "NOOP"
    assert compose("RIGHT", "UP", True) == "UPRIGHTFIRE"    # beam rider: torpedo while moving


def test_minimal_sets_are_tagged_with_the_buttons_they_press():
    acts = action_set("phoenix", "minimal")
    tags = dict(zip(acts.ale_names, (BUTTONS[b] for b in acts.buttons)))
    assert tags["DOWN"] == "ZAP" and tags["DOWNFIRE"] == "FIRE+ZAP" and tags["LEFTFIRE"] == "FIRE"
    assert tags["NOOP"] == "NOOP" and tags["RIGHT"] == "NOOP"
    inert = action_set("breakout", "minimal")
    assert set(inert.buttons) <= {0, 2}  # no ZAP in a game whose ZAP is inert


def test_unprofiled_games_get_the_default_profile():
    p = games.profile("tetris")
    assert not p.profiled and p.zap is None and p.movement == "eight_way"
    assert len(documented_actions("tetris")) == 36


def test_every_game_ale_py_ships_can_be_looked_up():
    names = games.all_games()
    assert len(names) > 100 and "phoenix" in names
    for name in names:
        assert games.rom_path(name).is_file()


@pytest.mark.parametrize("bad,hint", [("phenix", "phoenix"), ("Space Invaders", "space_invaders"),
                                      ("mspacman", "ms_pacman")])
def test_unknown_game_names_close_matches(bad, hint):
    with pytest.raises(ValueError, match=rf"unknown game '{bad}'.*{hint}"):
        games.check_game(bad)


def test_roms_dropped_into_roms_are_found_by_md5(tmp_path):
    bundled = games.rom_path("pong", user_roms=tmp_path)
    shutil.copy(bundled, tmp_path / "my pong dump.bin")  # the name does not matter
    assert games.rom_path("pong", user_roms=tmp_path) == tmp_path / "my pong dump.bin"
    assert games.identify_rom(tmp_path / "my pong dump.bin") == "pong"


def test_a_bad_rom_file_gives_a_clear_error(tmp_path):
    bad = tmp_path / "broken.bin"
    bad.write_bytes(b"\x00" * 4096)
    md5 = hashlib.md5(b"\x00" * 4096).hexdigest()
    with pytest.raises(ValueError, match=rf"broken.bin \(md5 {md5}, 4096 bytes\) is not a ROM"):
        games.identify_rom(bad)
    with pytest.raises(ValueError, match="is not a ROM that ALE supports"):
        games.rom_path("pong", user_roms=tmp_path)
    with pytest.raises(ValueError, match="cannot read ROM file"):
        games.identify_rom(tmp_path / "missing.bin")


def test_unloadable_roms_are_refused_and_every_listed_game_loads():
    """ALE's loadROM exits the process for some ROMs it lists, so probe in subprocesses."""
    import subprocess
    import sys

    probe = ("import sys, ale_py; ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)\n"
             "for path in sys.argv[1:]:\n"
             "    ale_py.ALEInterface().loadROM(path)\n")
    from ale_py import roms as ale_roms

    for game in sorted(games.UNLOADABLE):
        with pytest.raises(ValueError, match="ALE cannot load it"):
            games.check_game(game)
        path = str(ale_roms.get_rom_path(game))
        proc = subprocess.run([sys.executable, "-c", probe, path], capture_output=True, timeout=60)
        assert proc.returncode != 0, f"{game} loads now: take it out of UNLOADABLE"
    paths = [str(games.rom_path(g)) for g in games.all_games()]
    proc = subprocess.run([sys.executable, "-c", probe, *paths], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-500:] + proc.stderr[-500:]


def test_phoenix_zap_while_moving_plays_as_moving():
    """Phoenix raises its shield only with the stick pulled straight back: from the same
    emulator states, DOWNLEFT plays exactly as LEFT (and so on), while DOWN differs from NOOP
    where the shield is ready. So the documented set's LEFT+ZAP / RIGHT+ZAP (and +FIRE) repeat
    the moves (docs/learning.md, the Phoenix section)."""
    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.setInt("random_seed", 0)
    ale.setFloat("repeat_action_probability", 0.0)
    ale.loadROM(str(games.rom_path("phoenix")))
    a = ale_py.Action
    minimal = ale.getMinimalActionSet()
    rng = np.random.default_rng(0)
    same = {(a.LEFT, a.DOWNLEFT), (a.RIGHT, a.DOWNRIGHT), (a.LEFTFIRE, a.DOWNLEFTFIRE),
            (a.RIGHTFIRE, a.DOWNRIGHTFIRE)}
    differ = {(a.NOOP, a.DOWN): 0, (a.FIRE, a.DOWNFIRE): 0, (a.NOOP, a.LEFT): 0}
    for _ in range(150):
        for _ in range(int(rng.integers(5, 40))):
            ale.act(minimal[int(rng.integers(len(minimal)))])
        if ale.game_over():
            ale.reset_game()
        state = ale.cloneState()
        for pair in (*same, *differ):
            played = []
            for action in pair:
                ale.restoreState(state)
                for _ in range(8):
                    ale.act(action)
                played.append(np.concatenate([ale.getRAM(), ale.getScreenGrayscale().ravel()]))
            if pair in differ:
                differ[pair] += not np.array_equal(*played)
            else:
                assert np.array_equal(*played), pair
        ale.restoreState(state)
    assert all(n > 0 for n in differ.values()), differ
