"""Shared fixtures: a short real-ROM training run whose checkpoints play and evaluate."""

from __future__ import annotations

import signal

import pytest
import torch

from agent.config import Config
from agent.train import Trainer

# A suite started from a shell's background job (`cmd &` without job control) inherits SIGINT
# ignored, and so would every process it starts: the Ctrl-C tests would test nothing. Python's
# own handler makes the suite's processes behave as from a terminal (a handler, unlike an
# ignore, is reset to the default in the children it execs).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (its default, one per core, slows many times over on
    a shared machine), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def trainers():
    """Trainers made by a test, closed afterwards (their env workers stopped)."""
    made: list[Trainer] = []
    yield made
    for t in made:
        t.close()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A 400-step Phoenix run (documented actions) with checkpoints at steps 200 and 400."""
    run_dir = tmp_path_factory.mktemp("runs") / "phoenix-short"
    config = Config().replace(
        env={"game": "phoenix"},
        learner={"learning_starts": 128, "train_freq": 4, "threads": 1},
        replay={"capacity": 2_000},
        watchdog={"check_every": 20},
        run={"total_steps": 400, "report_seconds": 1e-9, "checkpoint_every": 200,
             "eval_every": 0, "probe_size": 16, "diag_batch": 64, "seed": 5},
    )
    with open("/dev/null", "w") as out:
        result = Trainer(config, run_dir, tensorboard=False, out=out).run()
    assert result.state == "finished"
    return run_dir


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` need a CUDA GPU: skipped here without one (run them on a GPU box)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
