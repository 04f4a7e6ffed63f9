"""Configuration: one frozen dataclass per part, every field documented with its unit and why.

Defaults live here and nowhere else. `validate()` rejects a bad value with a message that names
the field, the value and what is accepted.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

ACTION_SETS = ("documented", "minimal")
PRECISIONS = ("auto", "fp32", "bf16")
SAVE_ERROR_ACTIONS = ("stop", "continue")
OVERLAP_MODES = ("auto", "on", "off")
_ADDRESS = re.compile(r"(ray://)?[A-Za-z0-9_.\-]+:[0-9]{1,5}")


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


@dataclass(frozen=True)
class LearnerConfig:
    """The clipped-gradient DQN update. Defaults follow Dopamine's DQN where they leave Nature's."""

    lr: float = 1e-4
    """Adam step size. Nature used RMSProp at 2.5e-4; Adam at 1e-4 is steadier (CleanRL)."""
    lr_decay_steps: int = 0
    """Agent steps of linear decay of the step size from lr to lr_end, counted from
    learning_starts, then lr_end; 0 keeps lr throughout (Nature, Dopamine). A smaller late step
    lets a good policy settle instead of swinging from one update to the next."""
    lr_end: float = 0.0
    """The step size at the end of the decay (with lr_decay_steps > 0)."""
    adam_eps: float = 1.5e-4
    """Adam's epsilon (Rainbow's value: larger than the 1e-8 default, so tiny second moments
    do not turn into huge steps)."""
    gamma: float = 0.99
    """Discount per agent step."""
    n_step: int = 3
    """Steps in the bootstrapped return. Nature used 1; 3 (Rainbow) carries rewards back faster."""
    batch_size: int = 32
    """Transitions per update."""
    huber_delta: float = 1.0
    """Huber loss threshold: quadratic below, linear above (Nature's error clipping)."""
    max_grad_norm: float = 10.0
    """Clip the global gradient norm to this before each step; 0 turns clipping off. Not in
    Nature; the system we learn from diverged without it."""
    td_clip: float = 50.0
    """Clip each bootstrapped TD target to [-td_clip, td_clip]; 0 turns it off. Sized for
    clipped rewards: with env.clip_rewards false a run must set it (and watchdog.q_limit) for
    its game's scores, and q_limit must lie above it."""
    double_dqn: bool = True
    """Pick the next action with the online network, value it with the target network (van
    Hasselt et al. 2016); Nature used the target network's max."""
    dueling: bool = False
    """Dueling head (Wang et al. 2016): separate value and advantage streams."""
    shared_outputs: bool = True
    """One network output per distinct ALE action played: action indices that press the same
    ALE action (the documented set's +ZAP twins on a game whose ZAP is inert: Breakout's 12
    indices press 6 actions), or that play alike (Phoenix: moving with ZAP plays as the move,
    12 indices, 8 distinct), read the same output, so their Q-value learns from all their
    samples and the greedy policy picks the twin without ZAP. No effect where no action repeats
    (minimal sets). On by default since it measured better on both games (docs/learning.md:
    Phoenix and Breakout, 500,000 steps); false gives one output per action index."""
    target_update: int = 2_000
    """Learner updates between hard target-network syncs (8,000 agent steps at train_freq 4,
    as in Dopamine; Nature synced every 10,000)."""
    train_freq: int = 4
    """Agent steps per learner update, counted over all envs: one update of batch_size per
    train_freq steps whatever run.envs is, so the replay ratio (batch_size / train_freq = 8
    gradient samples per agent step) does not change with the number of envs."""
    learning_starts: int = 20_000
    """Agent steps of experience before the first update (Dopamine's 20k; Nature waited 50k)."""
    precision: str = "auto"
    """"auto": bf16 autocast for updates on CPUs for which oneDNN has bf16 kernels (AVX-512 and
    newer: 1.64x more updates/s on such a CPU; on an AVX2-only CPU bf16 is emulated, 7.7x slower, so
    fp32 there; scripts/bench_learner.py measures both; fp32 master weights and loss) and on
    CUDA GPUs that support bf16; "fp32": no autocast; "bf16": always autocast."""
    device: str = "auto"
    """"auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N"."""
    threads: int = 0
    """Torch CPU threads. 0 ("auto"): torch's default (one per core) for a learner on the CPU;
    1 for a learner on a GPU, whose process does little CPU tensor work while the env workers
    need every core (idle OpenMP threads spinning beside them slowed a 15-env run)."""
    channels_last: bool = True
    """Keep the networks' weights, and gather replay batches, in channels-last (NHWC) order:
    oneDNN's and cuDNN's convolutions run faster so (an update 69 ms against 76 ms in NCHW on
    an AVX2-only CPU in fp32; scripts/bench_learner.py measures both). false: NCHW."""
    cuda_graph: bool = True
    """On a CUDA device, capture the whole update (both forward passes, TD targets, Huber,
    backward, gradient clip, fused Adam) in one CUDA graph and replay it: one launch instead of
    hundreds per update. Ignored on CPU."""
    act_graph: bool = False
    """On a CUDA device, capture batched acting too (`act_batch`: the forward pass for the N
    envs' stacks and the argmax) in a CUDA graph, one launch instead of one per layer. Off until
    it is measured on a GPU (docs/gpu.md). Ignored on CPU."""
    device_frames: str = "off"
    """"on": keep a copy of the replay's frame ring on the learner's device (replay.capacity x
    7 KB: 7 GB for a million frames), each frame copied once when it is written, and gather
    every batch's stacks there from their ring rows inside the update (agent/device_frames.py),
    so a batch's frames (7 MB at batch 128) no longer cross from the host; "auto": on with a
    CUDA learner when the copy fits its free memory with 25% to spare; "off": batches are
    gathered on the host and copied. Off by default until it is measured on a GPU
    (docs/gpu.md); on a CPU "on" only costs a second copy (it is there for the tests)."""

    def validate(self) -> LearnerConfig:
        _float_range("learner.lr", self.lr, 0.0, 1.0, low_open=True)
        _int_range("learner.lr_decay_steps", self.lr_decay_steps, 0, 10**12)
        _float_range("learner.lr_end", self.lr_end, 0.0, 1.0)
        if self.lr_decay_steps and self.lr_end > self.lr:
            raise ValueError(f"learner.lr_end must not exceed learner.lr ({self.lr:g}) for a "
                             f"decay, got {self.lr_end:g}")
        _float_range("learner.adam_eps", self.adam_eps, 0.0, 1.0, low_open=True)
        _float_range("learner.gamma", self.gamma, 0.0, 1.0)
        _int_range("learner.n_step", self.n_step, 1, 100)
        _int_range("learner.batch_size", self.batch_size, 1, 65_536)
        _float_range("learner.huber_delta", self.huber_delta, 0.0, 1e9, low_open=True)
        _float_range("learner.max_grad_norm", self.max_grad_norm, 0.0, 1e12)
        _float_range("learner.td_clip", self.td_clip, 0.0, 1e12)
        _bool("learner.double_dqn", self.double_dqn)
        _bool("learner.dueling", self.dueling)
        _bool("learner.shared_outputs", self.shared_outputs)
        _int_range("learner.target_update", self.target_update, 1, 10**9)
        _int_range("learner.train_freq", self.train_freq, 1, 10**6)
        _int_range("learner.learning_starts", self.learning_starts, 0, 10**12)
        _choice("learner.precision", self.precision, PRECISIONS)
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        ):
            raise ValueError(
                f"learner.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )
        _int_range("learner.threads", self.threads, 0, 1024)
        _bool("learner.cuda_graph", self.cuda_graph)
        _bool("learner.act_graph", self.act_graph)
        _choice("learner.device_frames", self.device_frames, ("auto", "on", "off"))
        return self

    def lr_at(self, step: int) -> float:
        """The step size after `step` agent steps (lr_decay_steps' linear decay)."""
        if not self.lr_decay_steps:
            return self.lr
        frac = min(max(step - self.learning_starts, 0) / self.lr_decay_steps, 1.0)
        return self.lr + (self.lr_end - self.lr) * frac


@dataclass(frozen=True)
class ExploreConfig:
    """epsilon-greedy acting."""

    eps_start: float = 1.0
    """epsilon when learning starts; before that every action is uniformly random (the network
    is untrained: acting with it would only cost time), as in Dopamine."""
    eps_end: float = 0.01
    """epsilon after the decay (Dopamine's 0.01; Nature kept 0.1)."""
    eps_decay_steps: int = 250_000
    """Agent steps of linear decay from eps_start to eps_end, counted from learning_starts
    (Nature's 1M frames)."""
    eval_epsilon: float = 0.001
    """epsilon of evaluation episodes (Dopamine/Rainbow's 0.001): small but not zero, so a
    policy that stalls cannot stall forever. Distinct from training's."""

    def validate(self) -> ExploreConfig:
        _float_range("explore.eps_start", self.eps_start, 0.0, 1.0)
        _float_range("explore.eps_end", self.eps_end, 0.0, 1.0)
        _int_range("explore.eps_decay_steps", self.eps_decay_steps, 0, 10**12)
        _float_range("explore.eval_epsilon", self.eval_epsilon, 0.0, 1.0)
        return self

    def epsilon(self, step: int, learning_starts: int = 0) -> float:
        """Training epsilon after `step` agent steps: 1 before learning starts, then linear."""
        if step < learning_starts:
            return 1.0
        step -= learning_starts
        if step >= self.eps_decay_steps:
            return self.eps_end
        return self.eps_start + (self.eps_end - self.eps_start) * step / self.eps_decay_steps


@dataclass(frozen=True)
class ReplayConfig:
    """The frame-ring replay (each frame stored once: about 7.1 KB per transition at 84x84)."""

    capacity: int = 1_000_000
    """Transitions kept (Nature's 1M: about 7 GB here, frames stored once)."""
    prioritized: bool = False
    """Proportional prioritized replay (Schaul et al. 2016) instead of uniform."""
    alpha: float = 0.6
    """PER: priority exponent."""
    beta_start: float = 0.4
    """PER: importance-weight exponent at the first update, annealed linearly..."""
    beta_end: float = 1.0
    """...to this at agent step beta_steps."""
    beta_steps: int = 0
    """PER: the agent step at which beta reaches beta_end; 0: the run's last (run.total_steps).
    A run stopped by the clock well before total_steps sets it to the steps it expects."""
    priority_eps: float = 1e-6
    """PER: added to |TD error| so that no transition gets priority 0."""

    def validate(self) -> ReplayConfig:
        _int_range("replay.capacity", self.capacity, 2, 10**10)
        _bool("replay.prioritized", self.prioritized)
        _float_range("replay.alpha", self.alpha, 0.0, 10.0)
        _float_range("replay.beta_start", self.beta_start, 0.0, 1.0)
        _float_range("replay.beta_end", self.beta_end, 0.0, 1.0)
        _int_range("replay.beta_steps", self.beta_steps, 0, 10**12)
        _float_range("replay.priority_eps", self.priority_eps, 0.0, 1.0, low_open=True)
        return self

    def beta(self, step: int, total_steps: int) -> float:
        """PER's importance-weight exponent after `step` agent steps of a run of total_steps."""
        frac = min(step / (self.beta_steps or total_steps), 1.0)
        return self.beta_start + (self.beta_end - self.beta_start) * frac


@dataclass(frozen=True)
class WatchdogConfig:
    """Divergence detection, checked every `check_every` learner updates."""

    check_every: int = 250
    """Learner updates between health checks (1,000 agent steps at train_freq 4)."""
    loss_factor: float = 50.0
    """Alarm when a check's mean loss exceeds this times the median of earlier checks."""
    loss_history: int = 50
    """Checks in that running median."""
    loss_floor: float = 1.0
    """...and exceeds this too. Before a game's first rewards the loss is near 0 (Breakout's
    first checks read 1e-4), and the first rewarded transitions raise it a hundredfold with
    nothing wrong; a diverging run's loss passes 1 on its way up (the seed's: 0.126 to 5,193).
    With clipped rewards and the Huber loss a mean above 1 means TD errors above 1.5."""
    min_history: int = 5
    """Checks needed before the loss and agreement rules may fire; at most loss_history and
    agree_window (the histories those rules keep), or a rule could never fire."""
    q_limit: float = 100.0
    """Alarm when any |Q| on the probe batch exceeds this: twice the TD-clip bound (and the
    1/(1-gamma) = 100 ceiling of clipped rewards at gamma 0.99)."""
    agree_drop: float = 30.0
    """Alarm when Agree% falls this many points below its plateau (its best median so far)."""
    dead_q_std: float = 1e-6
    """Alarm when the probe's Q-values vary across its observations by at most this (std over
    the probe, mean over actions): a dead network, whose output no longer depends on what it
    sees (every unit of a layer off: ReLUs killed by too large steps). Such a run neither
    blows up nor learns: Pong at 10x the learning rate without clips lost every conv unit and
    scored -21 for 216,000 steps (docs/learning.md). 0 turns the check off."""
    agree_window: int = 5
    """Checks in the median that smooths Agree% before comparing with the plateau."""
    on_divergence: str = "rollback"
    """"rollback": restore the last healthy checkpoint (target re-synced) and go on;
    "halt": save an incident and stop."""
    max_rollbacks: int = 3
    """Roll-backs in a row (without a healthy checkpoint in between) before the run halts."""

    def validate(self) -> WatchdogConfig:
        _int_range("watchdog.check_every", self.check_every, 1, 10**9)
        _float_range("watchdog.loss_factor", self.loss_factor, 1.0, 1e12, low_open=True)
        _float_range("watchdog.dead_q_std", self.dead_q_std, 0.0, 1.0)
        _int_range("watchdog.loss_history", self.loss_history, 1, 10**6)
        _float_range("watchdog.loss_floor", self.loss_floor, 0.0, 1e12)
        _int_range("watchdog.min_history", self.min_history, 1, 10**6)
        _float_range("watchdog.q_limit", self.q_limit, 0.0, 1e12, low_open=True)
        _float_range("watchdog.agree_drop", self.agree_drop, 0.0, 100.0, low_open=True)
        _int_range("watchdog.agree_window", self.agree_window, 1, 10**6)
        _choice("watchdog.on_divergence", self.on_divergence, ("rollback", "halt"))
        _int_range("watchdog.max_rollbacks", self.max_rollbacks, 0, 10**6)
        # A rule that needs more checks than its history keeps could never fire: refuse it.
        for rule, keeps in (("loss", "loss_history"), ("agreement", "agree_window")):
            if self.min_history > getattr(self, keeps):
                raise ValueError(
                    f"watchdog.min_history ({self.min_history}) exceeds watchdog.{keeps} "
                    f"({getattr(self, keeps)}): the {rule} rule needs min_history checks in a "
                    f"history that keeps only {keeps}, so it could never fire; lower "
                    f"min_history or raise {keeps}")
        return self


@dataclass(frozen=True)
class RunConfig:
    """The run: budget, seed, reporting, checkpoints and periodic evaluation."""

    total_steps: int = 10_000_000
    """Agent steps to train, summed over all envs (40M emulator frames at frameskip 4; Nature
    trained 50M frames). With N envs a run stops at the first round that reaches it."""
    envs: int = 0
    """Environments stepped at once (one process each beyond the first; one batched forward
    pass acts for all). 0 = "auto": one per CPU core this process may use. 1 runs the single
    env in this process, with no worker pool. With ray.address set: the envs of each actor
    ("auto": 1)."""
    overlap: str = "auto"
    """With several envs, whether the learner's updates run while the env workers emulate
    ("on": every env in a worker, the round's updates between sending the actions and
    collecting the frames) or after each round ("off": env 0 steps in this process, in lock
    step with the others). "auto": "on" when the learner is on a GPU, "off" on a CPU, where the
    update already keeps every core busy (scripts/bench_train.py --overlap measures both)."""
    seed: int = 0
    """One seed, split into the emulator, replay, torch and exploration streams."""
    runs_dir: str = "runs"
    """Where run directories are created."""
    name: str = ""
    """Run directory name; empty: <game>-<YYYYmmdd-HHMMSS>."""
    report_seconds: float = 10.0
    """Seconds between diagnostic rows (also on demand: send SIGUSR1)."""
    checkpoint_every: int = 100_000
    """Agent steps between checkpoints (also saved at the end and on Ctrl-C / SIGTERM)."""
    keep_last: int = 3
    """Periodic checkpoints kept (the best-by-evaluation one is kept besides)."""
    eval_every: int = 250_000
    """Agent steps between evaluations that pick the best checkpoint; 0 turns them off."""
    eval_episodes: int = 5
    """Episodes per periodic evaluation (at explore.eval_epsilon)."""
    save_replay: bool = False
    """Also snapshot the replay with each checkpoint (about 7 KB per stored transition) so that
    --resume continues bit-exactly; without it a resume refills learning_starts steps first."""
    probe_size: int = 128
    """Observations in the fixed probe batch that Q-range is measured on."""
    diag_batch: int = 256
    """Replay transitions sampled at each health check for Agree% and the distributions."""
    on_save_error: str = "stop"
    """What a failed checkpoint write (a full disk, a write error) does; the previous checkpoint
    is always left intact. "stop" (the default: a run that cannot save is training that a crash
    would lose): end the run at once, state "failed", so that space can be freed and the run
    continued with --resume. "continue": train on and try again at the next checkpoint_every,
    stopping anyway after max_save_failures failures in a row."""
    max_save_failures: int = 3
    """With on_save_error "continue": failed checkpoint writes in a row after which the run
    stops anyway (state "failed"), so a disk that stays full never means hours of unsaved
    training; a successful checkpoint resets the count."""

    def validate(self) -> RunConfig:
        _int_range("run.total_steps", self.total_steps, 1, 10**12)
        _int_range("run.envs", self.envs, 0, 1024)
        _choice("run.overlap", self.overlap, OVERLAP_MODES)
        _int_range("run.seed", self.seed, 0, 2**31 - 1)
        if not isinstance(self.runs_dir, str) or not self.runs_dir:
            raise ValueError(f"run.runs_dir must be a non-empty path, got {self.runs_dir!r}")
        if not isinstance(self.name, str) or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"run.name must be a directory name without '/', got {self.name!r}")
        _float_range("run.report_seconds", self.report_seconds, 0.0, 1e9, low_open=True)
        _int_range("run.checkpoint_every", self.checkpoint_every, 1, 10**12)
        _int_range("run.keep_last", self.keep_last, 1, 10**6)
        _int_range("run.eval_every", self.eval_every, 0, 10**12)
        _int_range("run.eval_episodes", self.eval_episodes, 1, 10**6)
        _bool("run.save_replay", self.save_replay)
        _int_range("run.probe_size", self.probe_size, 1, 65_536)
        _int_range("run.diag_batch", self.diag_batch, 1, 65_536)
        _choice("run.on_save_error", self.on_save_error, SAVE_ERROR_ACTIONS)
        _int_range("run.max_save_failures", self.max_save_failures, 1, 10**6)
        return self


@dataclass(frozen=True)
class RayConfig:
    """Ape-X-style distributed acting on Ray (the optional extra: pip install -e ".[ray]"):
    actors with their own epsilon fill the learner's replay, which learns as a one-machine
    run does (docs/distributed.md)."""

    address: str = ""
    """Empty: no Ray (the envs of run.envs run here). "local": start a Ray instance inside this
    run and shut it down with it (tests, one big machine). "auto" or "HOST:PORT": join a running
    cluster (`ray start --head`); "ray://HOST:PORT": join one through Ray Client."""
    actors: int = 2
    """Actor processes; each steps run.envs envs (run.envs "auto" is one per actor) and acts
    with a CPU copy of the online network."""
    eps_base: float = 0.4
    """Ape-X's epsilon ladder: actor i of N explores with eps_base ** (1 + eps_alpha * i /
    (N - 1)) (Horgan et al. 2018: 0.4 and 7), fixed for the whole run; one actor: eps_base.
    Before learner.learning_starts every actor acts uniformly at random, as a one-machine run."""
    eps_alpha: float = 7.0
    """The ladder's exponent (see eps_base)."""
    chunk: int = 50
    """Agent steps per env in one message from an actor (Ape-X's local buffer of 50)."""
    sync_every: int = 400
    """Agent steps, summed over all actors, between publishing the online network's weights;
    an actor takes the newest with its next chunk (Ape-X: every 400 frames)."""
    actor_cpus: float = 1.0
    """CPUs Ray reserves for each actor (the learner is this process)."""
    max_restarts: int = 3
    """Times Ray restarts an actor that died (its process killed, a crash) or was stopped as
    hung; past that the run goes on without it, and fails only when no actor is left."""
    actor_timeout: float = 120.0
    """Seconds an acting actor may send nothing before it counts as hung: it is killed, and Ray
    restarts it. (Starting the actors may take the longer of this and 120 s.)"""

    def validate(self) -> RayConfig:
        if not isinstance(self.address, str) or not (
                self.address in ("", "local", "auto") or _ADDRESS.fullmatch(self.address)):
            raise ValueError(f"ray.address must be 'local', 'auto', HOST:PORT or "
                             f"ray://HOST:PORT (empty: no Ray), got {self.address!r}")
        _int_range("ray.actors", self.actors, 1, 4096)
        _float_range("ray.eps_base", self.eps_base, 0.0, 1.0)
        _float_range("ray.eps_alpha", self.eps_alpha, 0.0, 1e3)
        _int_range("ray.chunk", self.chunk, 1, 100_000)
        _int_range("ray.sync_every", self.sync_every, 1, 10**9)
        _float_range("ray.actor_cpus", self.actor_cpus, 0.0, 1024.0)
        _int_range("ray.max_restarts", self.max_restarts, 0, 10**6)
        _float_range("ray.actor_timeout", self.actor_timeout, 0.0, 1e6, low_open=True)
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def epsilons(self) -> list[float]:
        """Each actor's fixed epsilon (the Ape-X ladder)."""
        n = self.actors
        if n == 1:
            return [self.eps_base]
        return [self.eps_base ** (1 + self.eps_alpha * i / (n - 1)) for i in range(n)]


SECTIONS = ("env", "learner", "explore", "replay", "watchdog", "run", "ray")


@dataclass(frozen=True)
class Config:
    """Everything a training run needs; saved as config.toml in the run directory."""

    env: EnvConfig = EnvConfig()
    learner: LearnerConfig = LearnerConfig()
    explore: ExploreConfig = ExploreConfig()
    replay: ReplayConfig = ReplayConfig()
    watchdog: WatchdogConfig = WatchdogConfig()
    run: RunConfig = RunConfig()
    ray: RayConfig = RayConfig()

    def validate(self) -> Config:
        for name in SECTIONS:
            getattr(self, name).validate()
        need = self.env.stack + self.learner.n_step
        if self.replay.capacity <= need:
            raise ValueError(
                f"replay.capacity must be greater than env.stack + learner.n_step = {need}, "
                f"got {self.replay.capacity}"
            )
        if self.learner.batch_size > self.replay.capacity:
            raise ValueError(
                f"learner.batch_size ({self.learner.batch_size}) must not exceed "
                f"replay.capacity ({self.replay.capacity})"
            )
        self._check_value_bounds()
        if self.learner.learning_starts < self.learner.batch_size:
            raise ValueError(
                f"learner.learning_starts ({self.learner.learning_starts}) must be at least "
                f"learner.batch_size ({self.learner.batch_size}): the first update samples a batch"
            )
        return self

    def _check_value_bounds(self) -> None:
        """learner.td_clip and watchdog.q_limit bound values, so they must fit the reward scale.

        Their defaults are sized for clipped rewards (|r| <= 1, so |Q| <= 1/(1-gamma) = 100 at
        gamma 0.99). With raw game points (env.clip_rewards false) they would silently cap every
        target at 50 and raise Q alarms, and roll-backs, on values that are right: such a run
        must set both for its game. And Q may reach the TD clip, so the alarm must lie above it.
        """
        td, q = self.learner.td_clip, self.watchdog.q_limit
        if not self.env.clip_rewards:
            sized = [f"{name} = {value:g}" for name, value, default in (
                ("learner.td_clip", td, LearnerConfig.td_clip),
                ("watchdog.q_limit", q, WatchdogConfig.q_limit)) if value == default]
            if sized:
                raise ValueError(
                    f"env.clip_rewards is false (rewards are raw game points) but "
                    f"{' and '.join(sized)} {'is' if len(sized) == 1 else 'are'} sized for "
                    f"clipped rewards (|Q| <= 100); set them for this game's scores (e.g. "
                    f"--td-clip 0 to turn the TD clip off, --q-limit 1e6), or keep clip_rewards")
        if td > 0 and q <= td:
            raise ValueError(
                f"watchdog.q_limit ({q:g}) must exceed learner.td_clip ({td:g}): Q-values may "
                f"reach the TD clip, and an alarm below it would roll back a healthy run")

    def replace(self, **sections) -> Config:
        """`cfg.replace(learner={"lr": 3e-4}, run={"seed": 1})`: a validated copy."""
        return from_dict({**to_dict(self), **{k: {**to_dict(self)[k], **v}
                                                for k, v in sections.items()}})


def field_docs(cls) -> dict[str, str]:
    """{field: its docstring} of a config dataclass (the string literal under each field)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def to_dict(config: Config) -> dict:
    """{section: {field: value}} with tuples as lists (TOML- and JSON-ready)."""
    out = {}
    for name in SECTIONS:
        section = getattr(config, name)
        out[name] = {f.name: (list(v) if isinstance(v := getattr(section, f.name), tuple) else v)
                     for f in dataclasses.fields(section)}
    return out


def from_dict(data: dict, source: str = "config") -> Config:
    """Build and validate a Config from {section: {field: value}}; missing fields keep defaults.

    Unknown sections or keys and values of the wrong type raise ValueError naming them.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a table of sections, got {type(data).__name__}")
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ValueError(f"{source}: unknown section(s) {', '.join(sorted(map(repr, unknown)))}; "
                         f"sections are {', '.join(SECTIONS)}")
    sections = {}
    for name in SECTIONS:
        cls = type(getattr(Config(), name))
        values = data.get(name, {})
        if not isinstance(values, dict):
            raise ValueError(f"{source}: [{name}] must be a table, got {values!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        bad = set(values) - set(fields)
        if bad:
            raise ValueError(
                f"{source}: unknown key(s) {', '.join(sorted(f'{name}.{k}' for k in bad))}; "
                f"[{name}] accepts {', '.join(fields)}"
            )
        try:
            kwargs = {k: _coerce(f"{name}.{k}", v, fields[k].default) for k, v in values.items()}
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        sections[name] = cls(**kwargs)
    try:
        return Config(**sections).validate()
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


CHANGED_DEFAULTS = {"learner": {"shared_outputs": False}}
"""Defaults that changed, with their value before: a run's config.toml written before the key
existed ran with that value, so a resume of it keeps the value (load_toml(saved_run=True))."""


def load_toml(path, overrides: dict | None = None, saved_run: bool = False) -> Config:
    """A Config from a TOML file ([env], [learner], ... tables), then `overrides` on top.
    `saved_run`: the file is a run's own config.toml, whose missing keys take CHANGED_DEFAULTS'
    old values (what the run trained with) before the current defaults."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    if saved_run:
        for section, old in CHANGED_DEFAULTS.items():
            if isinstance(data.setdefault(section, {}), dict):
                data[section] = {**old, **data[section]}
    for section, values in (overrides or {}).items():
        data.setdefault(section, {})
        if isinstance(data[section], dict):
            data[section].update(values)
    source = str(path) + (" with the command line's settings" if overrides else "")
    return from_dict(data, source=source)


def dump_toml(config: Config) -> str:
    """The config as TOML text (what the run directory's config.toml holds)."""
    lines = ["# The effective configuration of this run (fields documented in agent/config.py)."]
    for name, values in to_dict(config).items():
        lines.append(f"\n[{name}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _coerce(name: str, value, default):
    """Check a TOML/CLI value against the field's default's type; ints are accepted as floats."""
    if name == "run.envs" and value == "auto":
        value = 0  # "auto" is spelled 0 in the dataclass (see RunConfig.envs)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, tuple):
        ok = isinstance(value, (list, tuple))
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        kind = {bool: "true or false", float: "a number", int: "an integer", tuple: "an array",
                str: "a string"}[type(default)]
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return value


def _bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def _choice(name: str, value, options) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")


def _int_range(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")


def _float_range(name: str, value, low: float, high: float, low_open: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and low <= value <= high
    if not ok or (low_open and value == low):
        lo = f"({low}" if low_open else f"[{low}"
        raise ValueError(f"{name} must be a number in {lo}, {high}], got {value!r}")
