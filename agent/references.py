"""Random and human reference scores for the 57 standard Atari games, and human-normalised scores.

The human-normalised score (HNS) of a raw game score is

    HNS = (score - random) / (human - random) * 100   (percent)

so the random agent's score maps to 0 % and the human tester's score to 100 %.

Source: the "no-op starts" random / human table used across the Atari-57 literature — Wang et al.
2016 (Dueling Network Architectures), van Hasselt et al. 2016 (Double DQN), Hessel et al. 2018
(Rainbow) and Badia et al. 2020 (Agent57, appendix tables).
The values are transcribed from DeepMind's ``dqn_zoo/atari_data.py`` (google-deepmind/dqn_zoo,
identical in google-deepmind/sketch_dqn) and cross-checked entry by entry against:

* seungjaeryanlee/rldb, ``paper__dueling_network_architectures_for_deep_reinforcement_learning``
  ``algo__random`` / ``algo__human`` "No-op start" entries (the Dueling paper's table);
* a third-party copy of the same table (an ``AtariBaselineScores(human=..., random=...)`` map),
  and google-research/reincarnating_rl ``atari_scores.py`` (random scores only).

All agree exactly on all 57 games except one entry, noted at ``video_pinball`` below. The
(rounded) random/human columns of the Agent57 table reproduced in doi:10.1007/s10458-021-09497-8
(Table 3, 15 games) agree as well.

Protocol (as described in ``atari_data.py``): each episode starts after a uniformly random number
(1-30) of no-op actions; episodes are capped at 108,000 frames (30 minutes); "human" is a
professional game tester, "random" picks actions uniformly at random.

Not the Nature DQN table: Mnih et al. 2015 evaluated only 49 games, with its own human-tester
table (not checked against this one here); nor the "human starts" table of Nair et al. 2015
(Gorila), whose random/human numbers differ from these throughout.

In this table the human score exceeds the random score for every game, so every HNS increases with
the raw score. ``human_normalized`` does not rely on that: the formula is applied as is, so for a
reference with human < random (as happens for Video Pinball under the human-starts protocol) a
score between the two still falls between 0 % and 100 %, and a score beyond the human one still
maps above 100 %.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = (
    "Atari-57 no-op-starts random/human scores of Wang et al. 2016 (Dueling), as used by "
    "Hessel et al. 2018 (Rainbow) and Badia et al. 2020 (Agent57); "
    "transcribed from DeepMind dqn_zoo atari_data.py"
)
"""One line naming where the reference scores come from."""


@dataclass(frozen=True)
class Reference:
    """The random-agent and human-tester scores of one game."""

    random: float
    human: float

    def __post_init__(self) -> None:
        if self.human == self.random:
            raise ValueError("human and random reference scores must differ")


REFERENCES: dict[str, Reference] = {
    "alien": Reference(random=227.8, human=7127.7),
    "amidar": Reference(random=5.8, human=1719.5),
    "assault": Reference(random=222.4, human=742.0),
    "asterix": Reference(random=210.0, human=8503.3),
    "asteroids": Reference(random=719.1, human=47388.7),
    "atlantis": Reference(random=12850.0, human=29028.1),
    "bank_heist": Reference(random=14.2, human=753.1),
    "battle_zone": Reference(random=2360.0, human=37187.5),
    "beam_rider": Reference(random=363.9, human=16926.5),
    "berzerk": Reference(random=123.7, human=2630.4),
    "bowling": Reference(random=23.1, human=160.7),
    "boxing": Reference(random=0.1, human=12.1),
    "breakout": Reference(random=1.7, human=30.5),
    "centipede": Reference(random=2090.9, human=12017.0),
    "chopper_command": Reference(random=811.0, human=7387.8),
    "crazy_climber": Reference(random=10780.5, human=35829.4),
    "defender": Reference(random=2874.5, human=18688.9),
    "demon_attack": Reference(random=152.1, human=1971.0),
    "double_dunk": Reference(random=-18.6, human=-16.4),
    "enduro": Reference(random=0.0, human=860.5),
    "fishing_derby": Reference(random=-91.7, human=-38.7),
    "freeway": Reference(random=0.0, human=29.6),
    "frostbite": Reference(random=65.2, human=4334.7),
    "gopher": Reference(random=257.6, human=2412.5),
    "gravitar": Reference(random=173.0, human=3351.4),
    "hero": Reference(random=1027.0, human=30826.4),
    "ice_hockey": Reference(random=-11.2, human=0.9),
    "jamesbond": Reference(random=29.0, human=302.8),
    "kangaroo": Reference(random=52.0, human=3035.0),
    "krull": Reference(random=1598.0, human=2665.5),
    "kung_fu_master": Reference(random=258.5, human=22736.3),
    "montezuma_revenge": Reference(random=0.0, human=4753.3),
    "ms_pacman": Reference(random=307.3, human=6951.6),
    "name_this_game": Reference(random=2292.3, human=8049.0),
    "phoenix": Reference(random=761.4, human=7242.6),
    "pitfall": Reference(random=-229.4, human=6463.7),
    "pong": Reference(random=-20.7, human=14.6),
    "private_eye": Reference(random=24.9, human=69571.3),
    "qbert": Reference(random=163.9, human=13455.0),
    "riverraid": Reference(random=1338.5, human=17118.0),
    "road_runner": Reference(random=11.5, human=7845.0),
    "robotank": Reference(random=2.2, human=11.9),
    "seaquest": Reference(random=68.4, human=42054.7),
    "skiing": Reference(random=-17098.1, human=-4336.9),
    "solaris": Reference(random=1236.3, human=12326.7),
    "space_invaders": Reference(random=148.0, human=1668.7),
    "star_gunner": Reference(random=664.0, human=10250.0),
    "surround": Reference(random=-10.0, human=6.5),
    "tennis": Reference(random=-23.8, human=-8.3),
    "time_pilot": Reference(random=3568.0, human=5229.2),
    "tutankham": Reference(random=11.4, human=167.6),
    "up_n_down": Reference(random=533.4, human=11693.2),
    "venture": Reference(random=0.0, human=1187.5),
    # Sources disagree on the random score here. dqn_zoo, sketch_dqn, rldb (Dueling paper, no-op
    # starts) and the other copies checked give 16,256.9; google-research/reincarnating_rl's
    # RANDOM_SCORES gives 0.0. The no-op-starts table (16,256.9) is kept, matching every other
    # entry's provenance. Note the narrow human-random gap (1,411.0): Video Pinball HNS values
    # are very large for good agents. (Under the human-starts protocol of Nair et al. 2015 the
    # random score, 20,452.0, even exceeds the human one, 15,641.1; not used here.)
    "video_pinball": Reference(random=16256.9, human=17667.9),
    "wizard_of_wor": Reference(random=563.5, human=4756.5),
    "yars_revenge": Reference(random=3092.9, human=54576.9),
    "zaxxon": Reference(random=32.5, human=9173.3),
}
"""Reference scores of the 57 standard games, keyed by ale-py game id."""


def reference(game: str) -> Reference | None:
    """The reference scores of ``game`` (an ale-py id), or None if it has none."""
    return REFERENCES.get(game)


def human_normalized(game: str, score: float) -> float | None:
    """``score`` as a percentage of the human-random gap of ``game``; None without a reference.

    0 % is the random agent's score and 100 % the human tester's. The ratio is taken with the
    signs as they are, so it stays correct for a reference whose human score is below the random
    one (none in the table at present).
    """
    ref = REFERENCES.get(game)
    if ref is None:
        return None
    return (score - ref.random) / (ref.human - ref.random) * 100.0
