"""The clipped-gradient DQN update: a pure TD-target function and the `Learner` that steps.

One update: sample (done by the caller) -> TD targets from the target network (double DQN: the
online network picks the next action), each clipped to +-td_clip -> Huber loss (importance
weighted under PER) -> gradients clipped to max_norm -> Adam step -> a hard target sync every
`target_update` updates. These clips exist because the system we learn from collapsed without
them (loss 0.126 -> 5,193, Q-values up to 9,827).

On CPU the forward and backward passes run under bf16 autocast when `LearnerConfig.precision`
asks ("auto" does only on CPUs with native bf16 kernels; fp32 master weights, fp32 loss). A
learner with channels_last weights wants channels_last batches (`Learner.channels_last`): the
replay then gathers each stack straight into (B, H, W, stack) memory, and no pass permutes the
bytes.

On a CUDA device (with `LearnerConfig.cuda_graph`) the whole update -- both forward passes, the
TD targets, the loss, backward, the gradient clip and the fused Adam step -- is captured once in
a CUDA graph and replayed: one launch instead of hundreds, which is what bounds a small-batch
update on a GPU. A replay reads and writes fixed memory, so nothing the graph touches is ever
reallocated: the batch is copied into static input tensors, the gradients and Adam's state stay
where the capture found them, the learning rate is a device tensor, the target sync and
`load_state_dict` copy in place. CPU training runs the same update eagerly, unchanged.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from agent.config import LearnerConfig
from agent.network import QNetwork

STAT_NAMES = ("loss", "grad_norm", "clip_delta", "td_clip_frac")
"""The order of the per-update statistics in `UpdateResult.stats`."""

INPUTS = ("obs", "next_obs", "action", "reward", "discount", "weight")
"""The batch fields one update reads, in `Learner.train_step`'s argument order."""

ROW_INPUTS = ("rows", *INPUTS[2:])
"""What one update reads when its stacks are gathered on the device (`Learner.use_frames`): the
ring rows of obs and next_obs instead of their frames."""

GRAPH_WARMUP = 3
"""Eager updates run on a side stream before a capture (PyTorch's whole-network recipe): they
let cuDNN/cuBLAS pick their kernels and allocate workspaces outside the graph. Their effect on
the weights and Adam's state is undone before the first replay."""


def resolve_device(name: str) -> torch.device:
    """"auto" -> CUDA when present, else CPU; anything else as torch reads it (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"learner.device is {name!r} but CUDA is not available here; "
                         f"use 'auto' or 'cpu'")
    return device


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (AVX-512 and newer). Without them, bf16
    convolutions are emulated: measured 7.7x slower than fp32 on an AVX2-only EPYC (531 ms
    against 69 ms an update at batch 32, scripts/bench_learner.py), where a CPU with AVX-512 BF16
    ran them 1.7x faster."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether to autocast to bf16: "auto" does on CUDA GPUs with bf16 support and on CPUs
    that run bf16 natively (`cpu_has_fast_bf16`)."""
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_fast_bf16()


def td_targets(reward: torch.Tensor, discount: torch.Tensor, next_q_target: torch.Tensor,
               next_q_online: torch.Tensor | None, td_clip: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bootstrapped n-step targets y = R + discount * Q_target(s', a*), clipped to +-td_clip.

    `discount` is gamma^k for a transition that bootstraps after k steps and 0 after a terminal
    (the replay computes both). a* is argmax of `next_q_online` (double DQN) or, when that is
    None, of `next_q_target` itself. Returns the targets and the share that was clipped.
    """
    if next_q_online is not None:
        best = next_q_online.argmax(dim=1, keepdim=True)
        next_v = next_q_target.gather(1, best).squeeze(1)
    else:
        next_v = next_q_target.max(dim=1).values
    y = reward + discount * next_v
    if td_clip > 0:
        clipped = (y.abs() > td_clip).float().mean()
        y = y.clamp(-td_clip, td_clip)
    else:
        clipped = torch.zeros((), device=y.device)
    return y, clipped


@dataclass
class UpdateResult:
    stats: torch.Tensor
    """(4,) float32 on the learner's device: loss, grad_norm (pre-clip), clip_delta
    (post-clip / pre-clip norm, 1.0 = not clipped), td_clip_frac. Kept on the device so that
    an update does not wait for the GPU; the caller reduces many at once."""
    td_abs: np.ndarray | None
    """|TD error| per sample (for PER priorities), or None when not asked for."""


def graph_capable(device: torch.device) -> bool:
    """Whether updates on `device` can be captured in a CUDA graph."""
    return device.type == "cuda"


def capture_graph(step: Callable[[], tuple[torch.Tensor, ...]], device: torch.device,
                  warmup: int = GRAPH_WARMUP):
    """PyTorch's whole-network capture: `warmup` eager calls of `step` on a side stream, then
    one call captured in a CUDA graph (captured, not run). Returns (graph, step's outputs): each
    `graph.replay()` reruns the captured kernels on the same memory and refreshes the outputs.
    """
    with torch.cuda.device(device):
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), warnings.catch_warnings():
            # Adam warns when a capturable instance steps outside a capture: the warm-up does.
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            for _ in range(warmup):
                step()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            outputs = step()
    return graph, outputs


class _UpdateGraph:
    """One captured update: its static inputs (filled before each replay), its outputs and what
    it was captured for (the batch's obs shape and the learner's config)."""

    def __init__(self, inputs: dict[str, torch.Tensor], obs_shape: tuple, config: LearnerConfig):
        # obs_shape: the batch's stacks' shape, or ("rows", B) for stacks gathered on the device
        self.inputs, self.obs_shape, self.config = inputs, obs_shape, config
        self.graph = None
        self.stats: torch.Tensor | None = None  # (4,), as UpdateResult.stats
        self.td_abs: torch.Tensor | None = None  # (B,) |q - y|
        self.tensors: list[tuple[torch.Tensor, int]] = []  # what it reads/writes, and where

    def fits(self, obs_shape: tuple, config: LearnerConfig) -> bool:
        if obs_shape != self.obs_shape:
            return False
        if config is not self.config:
            if config != self.config:
                return False
            self.config = config  # equal: the identity check passes from now on
        return True


def _host_tensor(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor sharing `array`'s memory and strides (negative strides, which torch cannot
    view, are copied)."""
    if any(s < 0 for s in array.strides):
        array = np.ascontiguousarray(array)
    return torch.from_numpy(array)


class Learner:
    """Online and target Q-networks, Adam, and the update step."""

    def __init__(self, config: LearnerConfig, n_actions: int, stack: int = 4,
                 frame_shape: tuple[int, int] = (84, 84), device: torch.device | None = None,
                 outputs: tuple[int, ...] | None = None):
        """`outputs`: per action, its network output (QNetwork's), given with
        config.shared_outputs (ActionSet.network_outputs)."""
        self.config = config
        self.device = device if device is not None else resolve_device(config.device)
        self.bf16 = use_bf16(config.precision, self.device)
        self.online = QNetwork(n_actions, stack, frame_shape, config.dueling,
                               outputs).to(self.device)
        self._channels_last = config.channels_last  # (see LearnerConfig.channels_last)
        if self._channels_last:
            self.online = self.online.to(memory_format=torch.channels_last)
        # The target network only runs forward: under bf16 it is stored in bf16, so autocast
        # does not cast its weights again on every update.
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        if self.bf16:
            self.target = self.target.to(torch.bfloat16)
        # Fused Adam: one kernel for all parameters (about 10x faster than the per-tensor loop
        # on this CPU, which otherwise costs as much as the backward pass). A learner that can
        # graph its updates makes it capturable, with the learning rate as a device tensor
        # (float32, what the fused kernel reads), so `set_lr` needs no new capture.
        fused = self.device.type in ("cpu", "cuda")
        self._graph_capable = graph_capable(self.device) and config.cuda_graph
        self._act_graphed = graph_capable(self.device) and config.act_graph
        self._act_graph: SimpleNamespace | None = None  # the captured act_batch, for one N
        lr = (torch.tensor(config.lr, dtype=torch.float32, device=self.device)
              if self._graph_capable else config.lr)
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=lr,
                                          eps=config.adam_eps, fused=fused,
                                          capturable=self._graph_capable)
        self.updates = 0
        self.target_synced_at = 0
        self._graph: _UpdateGraph | None = None
        # Recorded once an update's inputs are on the device: the update returns only after
        # it, so the caller may refill the batch's (pinned) arrays at once.
        self._inputs_copied = torch.cuda.Event() if self.device.type == "cuda" else None
        self._acted = torch.cuda.Event() if self.device.type == "cuda" else None
        self._act_buffers: dict = {}  # act_batch's pinned staging, by obs shape
        self._frames: torch.Tensor | None = None  # the device's copy of the replay's ring
    @property
    def n_actions(self) -> int:
        return self.online.n_actions

    @property
    def channels_last(self) -> bool:
        """Whether the networks' weights are channels_last (`LearnerConfig.channels_last`):
        then batches in channels_last layout (``FrameReplay.sample(..., channels_last=True)``)
        reach the first conv without a permute of their bytes; other batches are permuted in
        `QNetwork.forward`.
        """
        return self._channels_last

    @property
    def target_age(self) -> int:
        """Updates since the target network was last synced."""
        return self.updates - self.target_synced_at

    @property
    def graphed(self) -> bool:
        """Whether `update` replays a CUDA graph (a CUDA device and `config.cuda_graph`)."""
        return self._graph_capable and self.config.cuda_graph

    @property
    def act_graphed(self) -> bool:
        """Whether `act_batch` replays a CUDA graph (a CUDA device and `config.act_graph`)."""
        return self._act_graphed

    def _autocast(self, cache: bool = True):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16,
                              cache_enabled=cache)

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        """A tensor on the learner's device sharing `array`'s memory and strides where it can.

        A view with non-negative strides (e.g. a channels_last replay batch, a (B, stack, H, W)
        view of (B, H, W, stack) bytes) is taken as it is: no copy, and its memory format
        survives the move to a GPU. Only negative strides, which torch cannot view, are copied.
        """
        return _host_tensor(array).to(self.device, non_blocking=True)

    def batch_buffers(self, batch_size: int, frames: bool = True) -> dict[str, np.ndarray]:
        """Arrays for a replay `Batch(..., buffers=...)` of `batch_size` in the layout this
        learner reads: obs and next_obs (B, H, W, stack) when `channels_last`, else
        (B, stack, H, W). On CUDA they are pinned host memory, so the copies to the GPU are
        truly asynchronous (and `update` returns only once they are done, so the replay may
        refill them at once); on CPU plain numpy arrays. frames=False leaves out obs and
        next_obs (for a learner that gathers them on the device: see `rows_buffer`)."""
        stack, (h, w) = self.online.stack, self.online.frame_shape
        shape = (batch_size, h, w, stack) if self.channels_last else (batch_size, stack, h, w)
        spec = {"obs": (torch.uint8, shape), "next_obs": (torch.uint8, shape)} if frames else {}
        spec.update({
            "action": (torch.int64, (batch_size,)), "reward": (torch.float32, (batch_size,)),
            "discount": (torch.float32, (batch_size,)), "index": (torch.int64, (batch_size,)),
            "weight": (torch.float32, (batch_size,))})
        return self._host_arrays(spec)

    def rows_buffer(self, batch_size: int) -> np.ndarray:
        """An int64 (B, 2, stack) array for `FrameReplay.sample(..., rows=...)` and
        `update(..., rows=...)`, pinned on CUDA as `batch_buffers`."""
        spec = {"rows": (torch.int64, (batch_size, 2, self.online.stack))}
        return self._host_arrays(spec)["rows"]

    def _host_arrays(self, spec: dict) -> dict[str, np.ndarray]:
        pin = self.device.type == "cuda"
        return {key: torch.empty(shape, dtype=dtype, pin_memory=pin).numpy()
                for key, (dtype, shape) in spec.items()}

    @torch.no_grad()
    def q_values(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Online Q-values (float32) of a uint8 batch (B, stack, H, W).

        Inference runs in fp32 whatever the training precision: acting is one observation at a
        time, where bf16 autocast would cast every weight on every call (measured slower), and
        diagnostics then judge exactly the network that acts."""
        x = obs if isinstance(obs, torch.Tensor) else self.to_device(obs)
        return self.online(x).float()

    def act(self, obs: np.ndarray) -> int:
        """Greedy joint action for one stack (stack, H, W)."""
        return int(self.q_values(obs[None]).argmax(dim=1).item())

    @torch.no_grad()
    def act_batch(self, obs: np.ndarray) -> np.ndarray:
        """Greedy joint actions, int64 (N,), for N uint8 stacks (N, stack, H, W) in one forward
        pass (fp32, as `q_values`). On CUDA the stacks go in through pinned memory and the
        actions come back the same way, with one wait for the GPU."""
        if self.device.type != "cuda" and not self._act_graphed:
            return self.q_values(obs).argmax(dim=1).numpy()
        # Reused pinned buffers (the call waits for its copies, so the next may refill them),
        # filled by numpy: one plain memcpy, no parallel region (whose idle threads would spin
        # beside the env workers).
        staged = self._act_buffers.get(obs.shape)
        if staged is None:
            pin = self.device.type == "cuda"
            staged = (torch.empty(obs.shape, dtype=torch.uint8, pin_memory=pin),
                      torch.empty(obs.shape[0], dtype=torch.int64, pin_memory=pin))
            self._act_buffers = {obs.shape: staged}
        src, out = staged
        np.copyto(src.numpy(), obs)
        if self._act_graphed:  # learner.act_graph: the forward pass and argmax as one replay
            graph = self._act_graph
            if graph is None or graph.shape != obs.shape:
                graph = self._capture_act(src)
            graph.obs.copy_(src, non_blocking=True)
            graph.graph.replay()
            best = graph.best
        else:
            best = self.q_values(src.to(self.device, non_blocking=True)).argmax(dim=1)
        out.copy_(best, non_blocking=True)
        if self._acted is not None:
            self._acted.record(torch.cuda.current_stream(self.device))
            self._acted.synchronize()
        return out.numpy().copy()

    def _capture_act(self, src: torch.Tensor) -> SimpleNamespace:
        """act_batch for stacks of src's shape, captured: it reads the online weights where they
        are, which every update and state load writes in place."""
        self._act_graph = None
        obs = src.to(self.device, copy=True)

        def step():
            return (self.online(obs).float().argmax(dim=1),)

        try:
            graph, (best,) = capture_graph(step, self.device)
        except RuntimeError as exc:
            raise RuntimeError(f"capturing act_batch in a CUDA graph failed ({exc}); set "
                               f"learner.act_graph = false to act eagerly") from exc
        self._act_graph = SimpleNamespace(graph=graph, obs=obs, best=best,
                                          shape=tuple(src.shape))
        return self._act_graph

    def train_step(self, obs: torch.Tensor, next_obs: torch.Tensor, action: torch.Tensor,
                   reward: torch.Tensor, discount: torch.Tensor, weight: torch.Tensor,
                   graphed: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The whole update on device tensors: forward passes, TD targets, weighted Huber loss,
        backward, gradient clip, Adam step. Returns (stats (4,), q (B,), y (B,)).

        graphed: the step is captured in (or warms up for) a CUDA graph. Then autocast keeps
        no cache (each forward pass casts the weights it reads: no cached tensor outlives the
        capture), the gradients are zeroed in place rather than dropped (they stay where the
        capture found them) and the clip scale is applied whatever the norm (no host read).
        Eager, the gradients are dropped before backward and, on CPU, the norm is read to skip
        the scale when clipping does not bite.
        """
        cfg = self.config
        # One autocast region: eager, the bf16 copies of the online weights are made once and
        # reused by both of its forward passes; the target network is kept in bf16 already.
        with self._autocast(cache=not graphed):
            with torch.no_grad():
                next_q_target = self.target(next_obs).float()
                next_q_online = self.online(next_obs).float() if cfg.double_dqn else None
            q_all = self.online(obs)
        y, td_clip_frac = td_targets(reward, discount, next_q_target, next_q_online, cfg.td_clip)
        q = q_all.float().gather(1, action.unsqueeze(1)).squeeze(1)  # fp32 loss
        per_sample = F.huber_loss(q, y, reduction="none", delta=cfg.huber_delta)
        loss = (per_sample * weight).mean()
        self.optimizer.zero_grad(set_to_none=not graphed)
        loss.backward()
        grads = [p.grad for p in self.online.parameters()]
        grad_norm = torch.nn.utils.get_total_norm(grads)
        if cfg.max_grad_norm > 0:
            clip_delta = torch.clamp(cfg.max_grad_norm / (grad_norm + 1e-6), max=1.0)
            # Scale only when clipping bites. On CPU reading the norm costs nothing and skips a
            # pass over every gradient (about 0.8 ms of a 13 ms update here); on a GPU the scale
            # is always applied (by 1.0 when not clipping) so the update never waits for it.
            if graphed or self.device.type != "cpu" or float(grad_norm) > cfg.max_grad_norm:
                torch._foreach_mul_(grads, clip_delta)
        else:
            clip_delta = torch.ones((), device=self.device)
        self.optimizer.step()
        stats = torch.stack([loss.detach(), grad_norm, clip_delta, td_clip_frac]).float()
        return stats, q.detach(), y

    def use_frames(self, ring: torch.Tensor | None) -> None:
        """Gather the stacks of `update(..., rows=...)` from `ring`, a uint8 (capacity, H, W)
        tensor on this learner's device holding the replay's ring (agent/device_frames.py),
        filled in place from then on; None: no ring."""
        if ring is not None:
            h, w = self.online.frame_shape
            if ring.device != self.device or ring.dtype != torch.uint8 or ring.dim() != 3 \
                    or tuple(ring.shape[1:]) != (h, w):
                raise ValueError(f"the frame ring must be a uint8 (capacity, {h}, {w}) tensor on "
                                 f"{self.device}, got {ring.dtype} {tuple(ring.shape)} on "
                                 f"{ring.device}")
        if ring is not self._frames:
            self._graph = None  # a captured update reads the ring it was captured with
        self._frames = ring

    def _gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs and next_obs (B, stack, H, W) of a batch's ring rows (B, 2, stack)."""
        B, _, stack = rows.shape
        h, w = self.online.frame_shape
        return tuple(torch.index_select(self._frames, 0, rows[:, k].reshape(-1))
                     .view(B, stack, h, w) for k in (0, 1))

    def update(self, batch, want_td: bool = False, rows: np.ndarray | None = None) -> UpdateResult:
        """One gradient step on a replay `Batch`; syncs the target every `target_update`.

        rows: the batch's ring rows (`FrameReplay.sample(..., rows=...)`, an array from
        `rows_buffer`): its stacks are then gathered from the ring given to `use_frames`, and
        its obs and next_obs are not read.

        On a GPU it returns once the batch's arrays have been copied to the device (the step
        itself may still be running): the caller may sample the next batch into the same
        (pinned) arrays at once. `want_td` waits for the step, to read |TD| back."""
        if rows is not None:
            if self._frames is None:
                raise ValueError("update(rows=...) needs the replay's frames on the device: call "
                                 "use_frames(ring) first")
            # An index out of the ring would be a device-side assert on a GPU, which ends the
            # process's CUDA context: checked here (2 KB at batch 128).
            if rows.size and (rows.min() < 0 or rows.max() >= self._frames.shape[0]):
                raise ValueError(f"rows must be ring rows in [0, {self._frames.shape[0]}), got "
                                 f"values in [{rows.min()}, {rows.max()}]")
        host = {"rows": rows} if rows is not None else {}
        if self.graphed:
            graph = self._graph_for(batch, rows)
            for name, static in graph.inputs.items():
                array = host[name] if name in host else getattr(batch, name)
                static.copy_(_host_tensor(array), non_blocking=True)
            self._mark_inputs_copied()
            graph.graph.replay()
            stats = graph.stats.clone()  # the graph's own tensor is rewritten by the next replay
            td_abs = graph.td_abs.to("cpu", copy=True).numpy() if want_td else None
        else:
            # The eager step reallocates the gradients a captured graph writes into.
            self._graph = None
            inputs = [self.to_device(host[name] if name in host else getattr(batch, name))
                      for name in (INPUTS if rows is None else ROW_INPUTS)]
            if rows is not None:
                inputs[:1] = self._gather(inputs[0])
            self._mark_inputs_copied()
            stats, q, y = self.train_step(*inputs)
            td_abs = (q - y).abs().cpu().numpy() if want_td else None
        if self._inputs_copied is not None:
            self._inputs_copied.synchronize()
        self.updates += 1
        if self.updates - self.target_synced_at >= self.config.target_update:
            self.sync_target()
        return UpdateResult(stats, td_abs)

    def _mark_inputs_copied(self) -> None:
        if self._inputs_copied is not None:
            self._inputs_copied.record(torch.cuda.current_stream(self.device))

    # ------------------------------------------------------------------ CUDA graph
    def _graph_for(self, batch, rows: np.ndarray | None = None) -> _UpdateGraph:
        """The captured update for this batch's shape (and its rows or frames) and the current
        config (captured now if there is none yet, or if any changed)."""
        key = tuple(batch.obs.shape) if rows is None else ("rows", batch.batch_size)
        graph = self._graph
        if graph is None or not graph.fits(key, self.config):
            graph = self._capture(batch, rows, key)
        return graph

    def _capture(self, batch, rows: np.ndarray | None, key: tuple) -> _UpdateGraph:
        self._graph = None  # free the previous capture's memory before making a new one
        obs_shape = tuple(batch.obs.shape)
        if obs_shape[1:] != (self.online.stack, *self.online.frame_shape):
            raise ValueError(f"batch obs of shape {obs_shape} do not fit this learner's "
                             f"(batch, {self.online.stack}, {self.online.frame_shape[0]}, "
                             f"{self.online.frame_shape[1]}) stacks")
        if rows is not None and rows.shape != (obs_shape[0], 2, self.online.stack):
            raise ValueError(f"rows of shape {rows.shape} do not fit a batch of "
                             f"{obs_shape[0]}: expected {(obs_shape[0], 2, self.online.stack)}")
        fmt = torch.channels_last if self._channels_last else torch.contiguous_format
        inputs = {}
        for name in (INPUTS if rows is None else ROW_INPUTS):
            host = _host_tensor(rows if name == "rows" else getattr(batch, name))
            if name == "rows":
                static = torch.empty(rows.shape, dtype=torch.int64, device=self.device)
            elif name in ("obs", "next_obs"):
                static = torch.empty(obs_shape, dtype=torch.uint8, device=self.device,
                                     memory_format=fmt)
            else:
                dtype = torch.int64 if name == "action" else torch.float32
                static = torch.empty((obs_shape[0],), dtype=dtype, device=self.device)
            inputs[name] = static.copy_(host)  # the warm-up steps on real, finite values
        graph = _UpdateGraph(inputs, key, self.config)

        def step():
            if rows is None:
                stats, q, y = self.train_step(**inputs, graphed=True)
            else:  # the gather from the device's ring is part of the captured update
                obs, next_obs = self._gather(inputs["rows"])
                fields = {k: v for k, v in inputs.items() if k != "rows"}
                stats, q, y = self.train_step(obs, next_obs, **fields, graphed=True)
            return stats, (q - y).abs()

        self._init_optimizer_state()  # the graph steps existing state, never creates it
        saved = self._snapshot()
        try:
            graph.graph, (graph.stats, graph.td_abs) = capture_graph(step, self.device)
        except RuntimeError as exc:
            raise RuntimeError(
                f"capturing the learner update in a CUDA graph failed ({exc}); set "
                f"learner.cuda_graph = false to train with eager updates") from exc
        finally:
            self._restore(saved)  # undo the warm-up steps: the first replay is the first update
        graph.tensors = [(t, t.data_ptr()) for t in self._graph_tensors()]
        self._graph = graph
        return graph

    def _graph_tensors(self) -> list[torch.Tensor | None]:
        """Every persistent tensor a captured update reads or writes: online and target weights,
        gradients, Adam's state and learning rate. A replay uses them where the capture found
        them, so none may be replaced (only written in place)."""
        params = list(self.online.parameters())
        tensors: list[torch.Tensor | None] = [*params, *self.target.parameters()]
        tensors += [p.grad for p in params]
        for p in params:
            tensors += [t for _, t in sorted(self.optimizer.state[p].items())]
        tensors += [g["lr"] for g in self.optimizer.param_groups
                    if isinstance(g["lr"], torch.Tensor)]
        return tensors

    def _graph_intact(self) -> bool:
        """Whether the captured update still reads and writes the learner's own tensors."""
        graph = self._graph
        if graph is None:
            return False
        now = self._graph_tensors()
        return len(now) == len(graph.tensors) and all(
            t is then and t.data_ptr() == ptr for t, (then, ptr) in zip(now, graph.tensors))

    def _init_optimizer_state(self) -> None:
        """Adam's state for every parameter, made now as its first step would make it (zero
        moments, step 0), so that neither the warm-up nor the capture allocates it."""
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                state = self.optimizer.state[p]
                if len(state) == 0:
                    on_device = group["capturable"] or group["fused"]
                    state["step"] = torch.zeros((), dtype=torch.float32,
                                                device=p.device if on_device else "cpu")
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p,
                                                           memory_format=torch.preserve_format)

    @torch.no_grad()
    def _snapshot(self) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        params = list(self.online.parameters())
        return ([p.detach().clone() for p in params],
                [{k: v.clone() for k, v in self.optimizer.state[p].items()} for p in params])

    @torch.no_grad()
    def _restore(self, saved) -> None:
        weights, states = saved
        for p, w, state in zip(self.online.parameters(), weights, states, strict=True):
            p.copy_(w)
            for k, v in state.items():
                self.optimizer.state[p][k].copy_(v)

    # ------------------------------------------------------------------ state
    def sync_target(self) -> None:
        # load_state_dict copies in place (and casts to a bf16 target): the target's tensors
        # keep their memory, which a captured update reads.
        self.target.load_state_dict(self.online.state_dict())
        self.target_synced_at = self.updates

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)  # in place: a captured step reads this tensor
            else:
                group["lr"] = lr

    def weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.online.parameters())

    def state_dict(self) -> dict:
        """Networks, Adam and counters. The tensors are the live ones (as `Module.state_dict`):
        save or copy them before training on. The learning rate is saved as a float, whichever
        form this learner keeps it in, so any learner loads it."""
        optimizer = self.optimizer.state_dict()
        optimizer["param_groups"] = [{**g, "lr": float(g["lr"])}
                                     for g in optimizer["param_groups"]]
        return {"online": self.online.state_dict(), "target": self.target.state_dict(),
                "optimizer": optimizer, "updates": self.updates,
                "target_synced_at": self.target_synced_at}

    def load_state_dict(self, state: dict, resync_target: bool = False) -> None:
        """Restore `state_dict()` output, wherever its tensors live (a checkpoint loaded to the
        CPU, another GPU): every value is copied into this learner's own tensors on its device,
        in their dtype and layout, so a captured update stays valid."""
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["online"] if resync_target else state["target"])
        self._load_optimizer(state["optimizer"])
        self.updates = int(state["updates"])
        self.target_synced_at = self.updates if resync_target else int(state["target_synced_at"])
        if self._graph is not None and not self._graph_intact():
            self._graph = None  # never replay onto tensors the learner no longer uses
            self._act_graph = None

    @torch.no_grad()
    def _load_optimizer(self, saved: dict) -> None:
        """`Optimizer.load_state_dict`, then this learner's own state tensors again, holding the
        loaded values: the loaded tensors may alias the caller's payload, sit on its device or in
        its memory layout, and a captured step reads the old ones. The groups keep this
        learner's flags (fused, capturable) and learning-rate tensor, holding the loaded rate."""
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        own = {p: dict(self.optimizer.state[p]) for p in params if self.optimizer.state.get(p)}
        flags = [{k: g[k] for k in ("lr", "fused", "capturable", "foreach", "differentiable")}
                 for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(saved)
        for group, mine in zip(self.optimizer.param_groups, flags, strict=True):
            lr = float(group["lr"])
            group.update(mine)
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        for group in self.optimizer.param_groups:
            on_device = group["capturable"] or group["fused"]
            for p in group["params"]:
                loaded, mine = self.optimizer.state[p], own.get(p, {})
                state = {}
                for key, value in loaded.items():
                    if key == "step":
                        value = value.to(torch.float32)
                        target = mine.get(key, torch.zeros((), dtype=torch.float32,
                                                           device=p.device if on_device else "cpu"))
                    else:
                        target = mine.get(key)
                        if target is None or target.shape != value.shape:
                            target = torch.empty_like(p, memory_format=torch.preserve_format)
                    state[key] = target.copy_(value)
                for key, value in mine.items():  # absent from the payload (it never stepped)
                    if key not in state:
                        state[key] = value.zero_()
                self.optimizer.state[p] = state
