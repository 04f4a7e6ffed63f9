"""Reference scores for the 57 standard Atari games and human-normalised scores."""

from __future__ import annotations

import dataclasses

import pytest
from ale_py import roms as ale_roms

from agent.references import REFERENCES, SOURCE, Reference, human_normalized, reference

ATARI_57 = frozenset(
    """
    alien amidar assault asterix asteroids atlantis bank_heist battle_zone beam_rider berzerk
    bowling boxing breakout centipede chopper_command crazy_climber defender demon_attack
    double_dunk enduro fishing_derby freeway frostbite gopher gravitar hero ice_hockey jamesbond
    kangaroo krull kung_fu_master montezuma_revenge ms_pacman name_this_game phoenix pitfall pong
    private_eye qbert riverraid road_runner robotank seaquest skiing solaris space_invaders
    star_gunner surround tennis time_pilot tutankham up_n_down venture video_pinball wizard_of_wor
    yars_revenge zaxxon
    """.split()
)

# Values quoted in the issue (random, human).
QUOTED = {
    "pong": (-20.7, 14.6),
    "breakout": (1.7, 30.5),
    "space_invaders": (148.0, 1668.7),
    "seaquest": (68.4, 42054.7),
    "beam_rider": (363.9, 16926.5),
    "phoenix": (761.4, 7242.6),
    "asteroids": (719.1, 47388.7),
    "atlantis": (12850.0, 29028.1),
}


def test_the_57_games() -> None:
    assert len(ATARI_57) == 57
    assert len(REFERENCES) == 57
    assert set(REFERENCES) == ATARI_57


def test_every_key_is_an_ale_py_game_id() -> None:
    ale_ids = set(ale_roms.get_all_rom_ids())
    assert set(REFERENCES) <= ale_ids, sorted(set(REFERENCES) - ale_ids)


@pytest.mark.parametrize("game", sorted(QUOTED))
def test_quoted_values(game: str) -> None:
    random, human = QUOTED[game]
    assert REFERENCES[game] == Reference(random=random, human=human)
    assert reference(game) == Reference(random=random, human=human)


def test_further_published_values() -> None:
    # Entries with negative scores or a narrow gap, where a transcription slip is most likely.
    assert reference("double_dunk") == Reference(random=-18.6, human=-16.4)
    assert reference("fishing_derby") == Reference(random=-91.7, human=-38.7)
    assert reference("ice_hockey") == Reference(random=-11.2, human=0.9)
    assert reference("skiing") == Reference(random=-17098.1, human=-4336.9)
    assert reference("tennis") == Reference(random=-23.8, human=-8.3)
    assert reference("surround") == Reference(random=-10.0, human=6.5)
    assert reference("pitfall") == Reference(random=-229.4, human=6463.7)
    assert reference("video_pinball") == Reference(random=16256.9, human=17667.9)
    assert reference("montezuma_revenge") == Reference(random=0.0, human=4753.3)


@pytest.mark.parametrize("game", sorted(ATARI_57))
def test_random_is_0_and_human_is_100(game: str) -> None:
    ref = REFERENCES[game]
    assert human_normalized(game, ref.random) == pytest.approx(0.0, abs=1e-9)
    assert human_normalized(game, ref.human) == pytest.approx(100.0)


def test_human_beats_random_in_the_published_table() -> None:
    # The no-op-starts table has no game where the human tester scores below random play.
    assert [g for g, r in REFERENCES.items() if r.human <= r.random] == []


def test_hns_increases_with_score() -> None:
    for game, ref in REFERENCES.items():
        low = human_normalized(game, ref.random - 1.0)
        high = human_normalized(game, ref.human + 1.0)
        assert low is not None and high is not None
        assert low < 0.0 < 100.0 < high, game


def test_human_below_random_keeps_the_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    # A reference where human < random (e.g. Video Pinball under human starts: 15,641.1 vs
    # 20,452.0): HNS is still 0 at random and 100 at human, and a score further past the
    # human one than random is scores above 100.
    monkeypatch.setitem(REFERENCES, "pooyan", Reference(random=200.0, human=100.0))
    assert human_normalized("pooyan", 200.0) == pytest.approx(0.0)
    assert human_normalized("pooyan", 100.0) == pytest.approx(100.0)
    assert human_normalized("pooyan", 150.0) == pytest.approx(50.0)
    assert human_normalized("pooyan", 0.0) == pytest.approx(200.0)
    assert human_normalized("pooyan", 300.0) == pytest.approx(-100.0)


def test_no_reference() -> None:
    for game in ("adventure", "pooyan", "pacman", "not_a_game", "Pong", "SpaceInvaders"):
        assert reference(game) is None
        assert human_normalized(game, 123.0) is None


@pytest.mark.parametrize(
    ("game", "score", "expected"),
    [
        ("breakout", 30.5, 100.0),
        ("breakout", 1.7, 0.0),
        ("breakout", 59.3, 200.0),
        ("pong", 0.0, (0.0 + 20.7) / 35.3 * 100.0),
        ("pong", 21.0, (21.0 + 20.7) / 35.3 * 100.0),
        ("pong", -21.0, (-21.0 + 20.7) / 35.3 * 100.0),
        ("space_invaders", 1668.7 * 2 - 148.0, 200.0),
        ("seaquest", 68.4 + (42054.7 - 68.4) / 4, 25.0),
        ("skiing", -10717.5, 50.0),
        ("video_pinball", 16256.9 + 14110.0, 1000.0),
    ],
)
def test_hns_spot_checks(game: str, score: float, expected: float) -> None:
    assert human_normalized(game, score) == pytest.approx(expected)


def test_reference_is_frozen_and_rejects_a_zero_gap() -> None:
    ref = REFERENCES["pong"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.human = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        Reference(random=1.0, human=1.0)


def test_source_is_one_line_naming_the_table() -> None:
    assert SOURCE and "\n" not in SOURCE
    for name in ("Wang", "Hessel", "Badia", "dqn_zoo"):
        assert name in SOURCE
