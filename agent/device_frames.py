"""A copy of the replay's frame ring on the learner's device, so batches are gathered there.

Why: with the frames only on the host, every update gathers 2 x B stacks of 4 frames into pinned
memory and copies them to the GPU (7 MB at batch 128): on the H200 a 15-env run spent 18% of its
learning phase sampling, and each update then waited for that copy. With a copy of the ring on
the GPU each frame crosses once, 7 KB when it is written, and a batch is its 2 KB of ring rows
(`FrameReplay.sample(..., rows=...)`): the learner gathers the stacks on the device, inside its
captured update (`Learner.use_frames`).

`sync()` copies the rows written since the last call, read from the replay's own counters (each
stream's frames written), so it serves every writer alike: the in-process env, the env workers,
Ray actors and a replay snapshot loaded on resume. A row below a stream's count is final until
the stream wraps, and the replay never samples the row being written, so syncing before each
draw is enough, also while the env workers write the next round's frames (run.overlap).
"""

from __future__ import annotations

import numpy as np
import torch

CHUNK_ROWS = 16_384  # rows per upload: a whole ring (on resume) goes in 115 MB pieces
HEADROOM = 1.25  # the ring must fit the GPU's free memory this many times over


def device_frames_fit(capacity: int, frame_shape: tuple[int, int], device: torch.device) -> bool:
    """Whether a ring of `capacity` frames fits the free memory of `device` with headroom for
    the networks and the updates (always true on a CPU)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return capacity * frame_shape[0] * frame_shape[1] * HEADROOM <= free


class DeviceFrames:
    """`replay.ring` mirrored in `ring`, a uint8 tensor (capacity, H, W) on `device`."""

    def __init__(self, replay, device: torch.device):
        capacity, h, w = replay.ring.shape
        if not device_frames_fit(capacity, (h, w), device):
            free = torch.cuda.mem_get_info(device)[0]
            raise ValueError(
                f"learner.device_frames: a copy of the replay's {capacity:,} frames needs "
                f"{capacity * h * w / 2**30:.1f} GiB of {device}'s memory ({HEADROOM:g}x that "
                f"free), and {free / 2**30:.1f} GiB is free; lower replay.capacity or set "
                f"learner.device_frames = \"off\" (batches then gathered on the host)")
        self.replay = replay
        self.device = device
        self.ring = torch.zeros((capacity, h, w), dtype=torch.uint8, device=device)
        self.synced = [0] * replay.streams  # each stream's frames copied so far
        self.uploaded = 0  # rows copied in all (for tests and the benchmark)

    def sync(self) -> int:
        """Copy the frames the replay's streams wrote since the last call; returns how many."""
        P = self.replay.stream_capacity
        pieces = []
        for s, (done, total) in enumerate(zip(self.synced, self.replay.stream_totals)):
            if total == done:
                continue
            # Only the live range: the row below it is the one being written next. A stream
            # that went back (a reset replay) is copied again.
            start = max(done if total > done else 0, self.replay.stream_live_start(s))
            pieces.append(s * P + np.arange(start, total, dtype=np.int64) % P)
            self.synced[s] = total
        if not pieces:
            return 0
        rows = np.concatenate(pieces)
        for i in range(0, rows.size, CHUNK_ROWS):
            self._upload(rows[i:i + CHUNK_ROWS])
        self.uploaded += rows.size
        return rows.size

    def _upload(self, rows: np.ndarray) -> None:
        ring = self.replay.ring
        pin = self.device.type == "cuda"
        # Fresh pinned blocks from torch's caching host allocator, which reuses a block only once
        # the copy that read it is done: the copies need no wait here.
        frames = torch.empty((rows.size, *ring.shape[1:]), dtype=torch.uint8, pin_memory=pin)
        np.take(ring, rows, axis=0, out=frames.numpy())
        index = torch.empty(rows.size, dtype=torch.int64, pin_memory=pin)
        index.numpy()[:] = rows
        self.ring.index_copy_(0, index.to(self.device, non_blocking=True),
                              frames.to(self.device, non_blocking=True))
