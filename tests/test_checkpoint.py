"""Checkpoints: atomic, refused cleanly when missing, truncated, foreign or carrying code,
checked against the network and action layout, pruned without losing what a roll-back needs."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from agent import checkpoint
from agent.checkpoint import CheckpointError, CheckpointStore


def payload(steps=1):
    return {"counters": {"steps": steps}, "network": {"architecture": "nature-dqn", "n_actions": 4},
            "layout": {"game": "phoenix", "kind": "documented", "ale_names": ["NOOP", "FIRE"]},
            "weights": torch.arange(10.0) * steps}


def test_round_trip(tmp_path):
    checkpoint.save(tmp_path / "a.pt", payload(3))
    data = checkpoint.load(tmp_path / "a.pt")
    assert torch.equal(data["weights"], torch.arange(10.0) * 3)
    assert data["format"] == checkpoint.FORMAT and data["version"] == checkpoint.VERSION
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "does not exist"),
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated or corrupt"),
    (lambda p: p.write_bytes(os.urandom(4096)), "truncated or corrupt"),
    (lambda p: p.write_bytes(b""), "truncated or corrupt"),
    (lambda p: torch.save({"weights": torch.zeros(3)}, p), "not an atari-agent checkpoint"),
    (lambda p: torch.save({"format": checkpoint.FORMAT, "version": 99}, p), "version 99"),
])
def test_bad_files_give_one_clear_error(tmp_path, damage, message):
    path = tmp_path / "c.pt"
    checkpoint.save(path, payload())
    damage(path)
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    assert message in str(info.value) and str(path) in str(info.value)


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_pickle_carrying_code_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "x": _Boom()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        checkpoint.load(path)
    assert not (tmp_path / "PWNED").exists()
    # the same with a bare pickle file
    path.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(CheckpointError):
        checkpoint.load(path)
    assert not (tmp_path / "PWNED").exists()


def test_verify_names_the_mismatch(tmp_path):
    data = payload()
    other = {"game": "breakout", "kind": "minimal", "ale_names": ["NOOP", "FIRE", "RIGHT"]}
    with pytest.raises(CheckpointError, match="'phoenix'.*'breakout'"):
        checkpoint.verify(data, tmp_path / "x.pt", layout=other)
    with pytest.raises(CheckpointError, match="different network"):
        checkpoint.verify(data, tmp_path / "x.pt", network={"architecture": "nature-dqn",
                                                           "n_actions": 18})


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    checkpoint.save(path, payload(1))

    def full_disk(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="No space left"):
        checkpoint.save(path, payload(2))
    monkeypatch.undo()
    assert torch.equal(checkpoint.load(path)["weights"], torch.arange(10.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_store_keeps_the_last_k_and_the_newest_healthy(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=2)
    store.save(payload(100), 100, healthy=True)
    store.save(payload(200), 200, healthy=False)
    store.save(payload(300), 300, healthy=False)
    names = sorted(p.name for p in store.dir.glob("ckpt-*.pt"))
    # 100 is older than the last 2 but it is the only healthy one: a roll-back needs it
    assert names == ["ckpt-000000000100.pt", "ckpt-000000000200.pt", "ckpt-000000000300.pt"]
    assert store.latest_healthy().name == "ckpt-000000000100.pt"
    store.save(payload(400), 400, healthy=True)
    names = sorted(p.name for p in store.dir.glob("ckpt-*.pt"))
    assert names == ["ckpt-000000000300.pt", "ckpt-000000000400.pt"]
    assert store.save_best(payload(400), 400, eval_score=5.0)
    assert not store.save_best(payload(500), 500, eval_score=4.0)
    assert checkpoint.load(store.dir / "best.pt")["counters"]["steps"] == 400
    # the index is rebuilt from the files when it is lost
    (store.dir / "index.json").unlink()
    again = CheckpointStore(tmp_path, keep_last=2)
    assert again.latest().name == "ckpt-000000000400.pt"
    assert again.index["best"]["eval_score"] == 5.0


def test_a_best_written_after_the_index_keeps_its_own_score(tmp_path):
    """A kill between best.pt's rename and the index rewrite: the file's score still counts, so
    a worse evaluation later never replaces the better best.pt."""
    store = CheckpointStore(tmp_path)
    store.save(payload(100), 100, healthy=True)
    assert store.save_best(payload(100), 100, eval_score=5.0)
    index_before = (store.dir / "index.json").read_bytes()
    store.save_best(payload(200), 200, eval_score=9.0)
    (store.dir / "index.json").write_bytes(index_before)  # as if killed before the rewrite
    os.utime(store.dir / "index.json", ns=(1, 1))  # the index is older than best.pt
    again = CheckpointStore(tmp_path)
    assert again.index["best"] == {"file": "best.pt", "steps": 200, "eval_score": 9.0}
    assert not again.save_best(payload(300), 300, eval_score=7.0)
    assert checkpoint.load(again.dir / "best.pt")["counters"]["steps"] == 200


@pytest.mark.parametrize("text", ["hello world\n", "notes about my run\n" * 50, '{"a": 1}'],
                         ids=["line", "notes", "json"])
def test_a_text_file_is_not_a_checkpoint(tmp_path, text):
    path = tmp_path / "notes.pt"
    path.write_text(text)
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    message = str(info.value)
    assert message == (f"{path} is not an atari-agent checkpoint (expected a torch.save zip "
                       f"file; this one holds text)")


@pytest.mark.parametrize("damage, detail", [
    (lambda p: p.write_bytes(b""), "(an empty file)"),
    (lambda p: p.write_bytes(os.urandom(4096)), "(not a torch.save zip file)"),
])
def test_a_damaged_file_says_what_was_expected_not_the_unpicklers_internals(tmp_path, damage,
                                                                           detail):
    path = tmp_path / "c.pt"
    damage(path)
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    assert str(info.value) == f"checkpoint {path} is truncated or corrupt {detail}"
