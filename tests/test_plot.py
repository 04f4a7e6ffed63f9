"""agent/plot.py: reading metrics.jsonl and drawing learning curves (agent/chart.py draws)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent import chart, plot
from agent.plot import PlotError, default_output, load_metrics, plot_runs

BUTTONS = ("noop", "ZAP", "FIRE", "FIRE+ZAP")


def _row(steps: int, **fields) -> dict:
    """A diagnostics row as agent/report.py writes it, with every learner field set."""
    row = {"time": 1.0 + steps, "steps": steps, "updates": steps // 4, "sps": 1000.0,
           "epsilon": 0.5, "episodes": steps // 100, "score_mean100": 10.0 + steps / 100,
           "loss": 0.5, "agree": 50.0,
           "greedy_dist": {"noop": 0.1, "ZAP": 0.2, "FIRE": 0.3, "FIRE+ZAP": 0.4},
           "replay_dist": {"noop": 0.25, "ZAP": 0.25, "FIRE": 0.25, "FIRE+ZAP": 0.25},
           "q_min": -1.0, "q_mean": 0.5, "q_max": 2.0, "grad_norm": 3.0, "clip_delta": 1.0,
           "td_clip_frac": 0.0, "target_age": 7}
    row.update(fields)
    return row


def _curve_rows(n: int = 120, total: int = 1_000_000, seed: int = 0) -> list[dict]:
    """`n` rows of a plausible run: learner fields null at first, a noisy rising score."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        frac = i / n
        learner = i >= 5
        share = rng.dirichlet([1, 2, 3, 2]).tolist()
        rows.append(_row(
            int((i + 1) * total / n),
            score_mean100=None if i < 3 else 100 + 1000 * frac + 30 * rng.standard_normal(),
            loss=0.2 * (1 + 0.1 * rng.random()) if learner else None,
            agree=20 + 60 * frac if learner else None,
            greedy_dist=dict(zip(BUTTONS, share)) if learner else None,
            q_min=frac - 1 if learner else None, q_mean=frac if learner else None,
            q_max=frac + 1 if learner else None,
            grad_norm=2 + rng.random() if learner else None,
            clip_delta=0.8 + 0.2 * frac if learner else None))
    return rows


def _write_run(run_dir: Path, rows: list[dict] = (), events: list[dict] = (),
               tail: str = "", game: str | None = "phoenix") -> Path:
    """A run directory with metrics.jsonl (rows, then events, then `tail` verbatim)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in [*rows, *events]]
    text = "".join(line + "\n" for line in lines) + tail
    (run_dir / "metrics.jsonl").write_text(text, encoding="utf-8")
    if game is not None:
        (run_dir / "config.toml").write_text(f'[env]\ngame = "{game}"\n', encoding="utf-8")
    return run_dir


def _event(kind: str, steps: int) -> dict:
    return {"event": kind, "time": 0.0, "steps": steps, "message": f"{kind} at {steps}"}


def _bgr(i: int) -> np.ndarray:
    return np.array(chart.palette(i))


def _near(img: np.ndarray, bgr: np.ndarray, tol: int = 12) -> np.ndarray:
    """Mask of the pixels within `tol` of `bgr` in every channel."""
    return (np.abs(img.astype(int) - bgr).max(axis=2) <= tol)


def _colours(img: np.ndarray) -> int:
    """How many distinct colours the image has."""
    packed = (img[..., 0].astype(np.int32) << 16) | (img[..., 1].astype(np.int32) << 8) \
        | img[..., 2]
    return len(np.unique(packed))


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------------------ the image
def test_two_runs_png_has_width_is_not_blank_and_shows_both_colours(tmp_path):
    a = _write_run(tmp_path / "a", _curve_rows(seed=1))
    b = _write_run(tmp_path / "b", _curve_rows(seed=2, total=700_000))
    out = plot_runs([a, b], tmp_path / "curves.png")
    assert out == tmp_path / "curves.png"
    img = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[1] == 1600 and img.shape[0] > 800
    assert _colours(img) > 300  # anti-aliased curves and text
    assert (img == 255).all(axis=2).mean() > 0.5  # a white figure
    # both runs' curves, not just their legend swatches (a swatch is ~100 pixels)
    assert _near(img, _bgr(0)).sum() > 3000
    assert _near(img, _bgr(1)).sum() > 3000


@pytest.mark.parametrize("width", [800, 1199, 2400])
def test_requested_width_at_two_and_three_columns(tmp_path, width):
    run = _write_run(tmp_path / "run", _curve_rows(n=30))
    img = cv2.imread(str(plot_runs([run], tmp_path / "c.png", width=width)))
    assert img.shape[1] == width
    assert _near(img, _bgr(0)).sum() > 500


def test_q_band_is_alpha_blended(tmp_path):
    run = _write_run(tmp_path / "run", _curve_rows())
    img = cv2.imread(str(plot_runs([run], tmp_path / "c.png")))
    tint = 0.2 * _bgr(0) + 0.8 * 255  # the band colour over white
    assert _near(img, np.round(tint), tol=4).sum() > 5000


def test_run_without_data_gets_a_legend_entry_only(tmp_path):
    good = _write_run(tmp_path / "good", _curve_rows())
    empty = _write_run(tmp_path / "empty")  # an empty metrics.jsonl
    events_only = _write_run(tmp_path / "starting", events=[_event("resume", 0)])
    img = cv2.imread(str(plot_runs([good, empty, events_only], tmp_path / "c.png")))
    assert _near(img, _bgr(0)).sum() > 3000
    for i in (1, 2):  # a legend swatch, no curve
        assert 0 < _near(img, _bgr(i)).sum() < 400
    runs = plot._load_runs([good, empty, events_only])
    labels = [plot._legend_label(r) for r in runs]
    assert "(no data yet)" not in labels[0] and "phoenix" in labels[0]
    assert labels[1].endswith("(no data yet)") and labels[2].endswith("(no data yet)")


def test_nothing_to_plot_is_an_error_and_writes_nothing(tmp_path):
    empty = _write_run(tmp_path / "empty")
    nulls = _write_run(tmp_path / "early", [_row(s, score_mean100=None, loss=None, agree=None,
                                                 greedy_dist=None, q_min=None, q_mean=None,
                                                 q_max=None, grad_norm=None, clip_delta=None)
                                            for s in (1, 2, 3)])
    with pytest.raises(PlotError, match="nothing to plot yet") as err:
        plot_runs([empty, nulls], tmp_path / "c.png")
    assert str(empty / "metrics.jsonl") in str(err.value)
    assert not (tmp_path / "c.png").exists()


def test_watchdog_event_draws_a_dashed_column_in_the_run_colour(tmp_path):
    # a flat line: the curve puts few pixels in any one column, the event line many
    rows = [_row(s, score_mean100=50.0) for s in range(0, 10_001, 100)]
    plain = _write_run(tmp_path / "plain" / "run", rows)
    marked = _write_run(tmp_path / "marked" / "run", rows, [_event("rollback", 5_000)])
    other = _write_run(tmp_path / "other" / "run", rows, [_event("checkpoint", 5_000)])
    images = {}
    for name, run in (("plain", plain), ("marked", marked), ("other", other)):
        images[name] = cv2.imread(str(plot_runs([run], tmp_path / f"{name}.png")))
    colour = _bgr(0)
    in_plain = _near(images["plain"], colour).sum(axis=0)
    in_marked = _near(images["marked"], colour).sum(axis=0)
    extra = in_marked - in_plain
    col = int(np.argmax(extra))
    assert extra[col] > 300, "no column gained run-coloured pixels"
    assert in_plain[col] < 0.2 * in_marked[col]
    # the column sits mid-way across a panel: step 5,000 of 0..10,000
    assert (extra > 300).sum() <= 3 * 2  # one column per grid column (2 with rounding)
    # non-watchdog events (checkpoint, eval, ...) are not drawn
    assert np.array_equal(images["plain"], images["other"])


def test_many_runs_cycle_colours_and_move_the_legend_under_the_grid(tmp_path):
    small = [_write_run(tmp_path / f"r{i:02d}", _curve_rows(n=8, seed=i)) for i in range(2)]
    many = [_write_run(tmp_path / f"r{i:02d}", _curve_rows(n=8, seed=i)) for i in range(40)]
    h_small = cv2.imread(str(plot_runs(small, tmp_path / "small.png"))).shape[0]
    h_many = cv2.imread(str(plot_runs(many, tmp_path / "many.png"))).shape[0]
    assert h_many > h_small + 100  # a legend band added below the panels


def test_hershey_fallback_font_for_opencv_4(tmp_path, monkeypatch):
    """OpenCV 4 has no FontFace: text falls back to the Hershey font, ASCII only."""
    monkeypatch.setattr(chart.Font, "__init__", lambda self: setattr(self, "face", None))
    run = _write_run(tmp_path / "run", _curve_rows(n=20))
    img = cv2.imread(str(plot_runs([run], tmp_path / "c.png", title="ClipΔ — test")))
    assert img.shape[1] == 1600 and _colours(img) > 100


def test_every_character_in_the_figure_is_one_the_font_can_draw(tmp_path, monkeypatch):
    """The TrueType font draws '?' for a glyph it lacks: the ClipΔ panel was titled 'Clip?'."""
    sent: list[str] = []
    put_text = cv2.putText

    def spy(img, text, *args):
        sent.append(text)
        return put_text(img, text, *args)

    monkeypatch.setattr(cv2, "putText", spy)
    run = _write_run(tmp_path / "run", _curve_rows(n=20))
    plot_runs([run], tmp_path / "c.png")
    monkeypatch.undo()
    text = "".join(sent)
    assert "Clip" in text and "clipped / unclipped gradient norm" in text
    assert "?" not in text
    face = chart.Font().face
    if face is None:
        return  # OpenCV 4: the Hershey font draws only ASCII, and is only sent ASCII
    missing = np.full((40, 40, 3), 255, np.uint8)
    cv2.putText(missing, "?", (8, 30), (0, 0, 0), face, 24)
    for char in sorted(set(text) - {" "}):
        img = np.full((40, 40, 3), 255, np.uint8)
        cv2.putText(img, char, (8, 30), (0, 0, 0), face, 24)
        assert not np.array_equal(img, missing), f"{char!r} is drawn as '?'"


def test_real_training_run(trained_run, tmp_path):
    rows, events = load_metrics(trained_run)
    assert rows and all("event" not in r for r in rows)
    assert any(r["loss"] is not None for r in rows)
    out = plot_runs([trained_run], tmp_path / "real.png", title=None)
    img = cv2.imread(str(out))
    assert img.shape[1] == 1600
    assert _near(img, _bgr(0)).sum() > 1000
    label = plot._legend_label(plot._load_runs([trained_run])[0])
    assert label.startswith(f"{trained_run.name}: phoenix, 400 steps")


# ------------------------------------------------------------------------------ reading
def test_nulls_nan_and_a_truncated_last_line(tmp_path):
    rows = [_row(100), _row(200, loss="nan", q_min="nan", greedy_dist=None, score_mean100=None),
            _row(300, agree="inf", grad_norm=float("nan"))]  # json.dumps writes a bare NaN
    run = _write_run(tmp_path / "run", rows, [_event("divergence", 250)],
                     tail='{"time": 9.0, "steps": 400, "loss": 0.')  # being written
    got, events = load_metrics(run)
    assert [r["steps"] for r in got] == [100, 200, 300]
    assert got[1]["loss"] == "nan"  # as written
    assert [e["event"] for e in events] == ["divergence"]
    series = plot._series(got)
    assert series["loss"][0] == 0.5 and math.isnan(series["loss"][1])  # a gap, not a zero
    assert math.isnan(series["score_mean100"][1]) and math.isnan(series["agree"][2])
    assert series["grad_norm"][1] == 3.0 and math.isnan(series["grad_norm"][2])
    assert math.isnan(series["greedy:FIRE"][1]) and series["greedy:FIRE"][0] == pytest.approx(30)
    out = plot_runs([run], tmp_path / "c.png")
    assert cv2.imread(str(out)).shape[1] == 1600


@pytest.mark.parametrize("bad, line", [
    ('{"steps": 5, "loss": }', 2),  # malformed JSON
    ("[1, 2]", 2),  # not an object
    ('{"loss": 0.5}', 2),  # a row without steps
    ('{"steps": "many"}', 2),
])
def test_a_bad_middle_line_names_file_and_line(tmp_path, bad, line):
    run = tmp_path / "run"
    run.mkdir()
    good = json.dumps(_row(100))
    (run / "metrics.jsonl").write_text(f"{good}\n{bad}\n{good}\n")
    with pytest.raises(PlotError, match=f"metrics.jsonl, line {line}:"):
        load_metrics(run)
    with pytest.raises(PlotError, match=f"line {line}"):
        plot_runs([run], tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_a_bad_complete_last_line_is_an_error(tmp_path):
    """Only a line without its newline is one being written; a finished bad line is damage."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps(_row(1)) + '\n{"steps": 2, \n')
    with pytest.raises(PlotError, match="line 2"):
        load_metrics(run)


def test_truncated_multibyte_last_line_and_blank_lines(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    good = json.dumps(_row(1)).encode()
    cut = b'{"event": "eval", "message": "\xc3'  # cut inside a UTF-8 character
    (run / "metrics.jsonl").write_bytes(good + b"\n\n" + good + b"\n" + cut)
    rows, events = load_metrics(run)
    assert len(rows) == 2 and events == []


def test_missing_and_non_run_directories(tmp_path):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "not-a-run").mkdir()
    cases = {tmp_path / "nope": "does not exist", tmp_path / "a-file": "is not a directory",
             tmp_path / "not-a-run": "is not a run directory: no metrics.jsonl"}
    for path, message in cases.items():
        with pytest.raises(PlotError, match=message) as err:
            load_metrics(path)
        assert str(path) in str(err.value) and "atari-agent train" in str(err.value)
        good = _write_run(tmp_path / "good", _curve_rows(n=10))
        with pytest.raises(PlotError, match=message):
            plot_runs([good, path], tmp_path / "c.png")
        assert not (tmp_path / "c.png").exists()


# ------------------------------------------------------------------------------ output
def test_bad_outputs_fail_before_reading_and_write_nothing(tmp_path, monkeypatch):
    run = _write_run(tmp_path / "run", _curve_rows(n=10))
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir.png").mkdir()

    def no_reading(run_dir):
        raise AssertionError("metrics read before the output path was checked")

    monkeypatch.setattr(plot, "load_metrics", no_reading)
    cases = {tmp_path / "curves.jpg": "must end in .png",
             tmp_path / "curves": "must end in .png",
             tmp_path / "missing" / "c.png": "does not exist",
             tmp_path / "file" / "c.png": "does not exist",
             tmp_path / "dir.png": "is a directory"}
    before = _files(tmp_path)
    for out, message in cases.items():
        with pytest.raises(PlotError, match=message) as err:
            plot_runs([run], out)
        assert str(out) in str(err.value)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(PlotError, match="is not writable"):
        plot_runs([run], tmp_path / "c.png")
    assert _files(tmp_path) == before


def test_a_missing_run_is_named_not_its_default_output(tmp_path):
    """`plot runs/nope` once said the directory of runs/nope/curves.png did not exist."""
    good = _write_run(tmp_path / "good", _curve_rows(n=10))
    for runs in ([tmp_path / "nope"], [good, tmp_path / "nope"]):
        with pytest.raises(PlotError) as err:
            plot_runs(runs, default_output(runs))
        assert str(err.value) == (f"{tmp_path / 'nope'} does not exist (expected a directory "
                                  "made by `atari-agent train`)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_directory(tmp_path):
    run = _write_run(tmp_path / "run", _curve_rows(n=10))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PlotError, match="not writable"):
            plot_runs([run], locked / "c.png")
        assert _files(locked) == []
    finally:
        locked.chmod(0o700)


def test_bad_width_and_no_runs(tmp_path):
    run = _write_run(tmp_path / "run", _curve_rows(n=10))
    for width in (100, 0, 1600.0, True):
        with pytest.raises(PlotError, match="width"):
            plot_runs([run], tmp_path / "c.png", width=width)
    with pytest.raises(PlotError, match="no run directories"):
        plot_runs([], tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_replaces_atomically_and_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    run = _write_run(tmp_path / "run", _curve_rows(n=10))
    out = run / "curves.png"
    out.write_bytes(b"old")
    plot_runs([run], out)
    assert cv2.imread(str(out)) is not None
    assert sorted(p.name for p in run.iterdir()) == ["config.toml", "curves.png",
                                                     "metrics.jsonl"]
    data = out.read_bytes()

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(PlotError, match="No space left"):
        plot_runs([run], out)
    assert out.read_bytes() == data  # untouched, and no temporary file left behind
    assert sorted(p.name for p in run.iterdir()) == ["config.toml", "curves.png",
                                                     "metrics.jsonl"]


def test_png_encoding_failure_is_reported(tmp_path, monkeypatch):
    run = _write_run(tmp_path / "run", _curve_rows(n=10))
    monkeypatch.setattr(cv2, "imencode", lambda ext, img: (False, None))
    with pytest.raises(PlotError, match="could not encode"):
        plot_runs([run], tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_default_output(tmp_path):
    assert default_output([tmp_path / "run"]) == tmp_path / "run" / "curves.png"
    assert default_output([tmp_path / "a", tmp_path / "b"]) == Path("curves.png")


def test_run_names_are_directory_names_made_unique(tmp_path):
    names = plot._run_names([tmp_path / "x" / "dqn", tmp_path / "y" / "dqn", tmp_path / "solo"])
    assert names == ["x/dqn", "y/dqn", "solo"]
    deeper = plot._run_names([tmp_path / "a" / "s" / "run", tmp_path / "b" / "s" / "run"])
    assert deeper == ["a/s/run", "b/s/run"]
    assert plot._run_names([tmp_path / "r", tmp_path / "r"]) == ["r", "r #2"]


# ------------------------------------------------------------------------------ panels
def test_loss_panel_title_says_the_scale(tmp_path):
    wide = _write_run(tmp_path / "wide", [_row(s, loss=10.0 ** -(s / 100)) for s in range(400)])
    narrow = _write_run(tmp_path / "narrow", [_row(s, loss=1 + s / 100) for s in range(400)])
    loss_panel = plot._panels()[1]
    panel = plot._chart_panel(loss_panel, plot._load_runs([wide]))
    assert panel.log and panel.title == "Loss (log scale)"
    axis = chart.y_axis(panel.values(), 5, panel.fixed, panel.log)
    assert axis.log and axis.labels[0] == "1e-4" and axis.labels[-1] == "1"
    panel = plot._chart_panel(loss_panel, plot._load_runs([narrow]))
    assert not panel.log and panel.title == "Loss (linear scale)"
    # both runs together span > 2 decades: the shared panel goes log
    assert plot._chart_panel(loss_panel, plot._load_runs([wide, narrow])).log


def test_a_panel_holds_each_runs_line_band_and_watchdog_events(tmp_path):
    a = _write_run(tmp_path / "a", _curve_rows(n=10), [_event("rollback", 500)])
    b = _write_run(tmp_path / "b", _curve_rows(n=10), [_event("checkpoint", 500)])
    runs = plot._load_runs([a, b])
    q = plot._chart_panel(plot._panels()[3], runs)
    assert [ln.color for ln in q.lines] == [chart.palette(0), chart.palette(1)]
    assert np.array_equal(q.lines[0].y, runs[0].series["q_mean"], equal_nan=True)
    assert np.array_equal(q.bands[1].hi, runs[1].series["q_max"], equal_nan=True)
    assert [(m.x, m.color) for m in q.marks] == [(500.0, chart.palette(0))]
    clip = plot._chart_panel(plot._panels()[5], runs)
    assert clip.fixed == (0.0, 1.05) and not clip.bands


def test_panel_order():
    from agent.diagnostics import BUTTON_KEYS

    keys = [p.key for p in plot._panels()]
    assert keys == ["score_mean100", "loss", "agree", "q_mean", "grad_norm", "clip_delta",
                    *(f"greedy:{k}" for k in BUTTON_KEYS)]


def test_the_plot_command(trained_run, tmp_path, capsys):
    from agent.cli import main

    out = tmp_path / "both.png"
    assert main(["plot", str(trained_run), str(trained_run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"plot: {out}"
    assert cv2.imread(str(out)).shape[1] == 1600
    assert main(["plot", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err == (f"atari-agent plot: {tmp_path / 'nope'} does not exist (expected a "
                   "directory made by `atari-agent train`)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["both.png"]
