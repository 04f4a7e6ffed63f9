"""agent/chart.py: round ticks, gaps in lines, and text the fonts can draw (Δ included)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from agent import chart


# ------------------------------------------------------------------------------ text
def _ink(font: chart.Font, text: str, px: int = 40) -> np.ndarray:
    """Mask of the dark pixels of `text` drawn at (10, 60) on white."""
    img = np.full((80, 200, 3), 255, np.uint8)
    font.draw(img, text, 10, 60, px, color=(0, 0, 0))
    return img.min(axis=2) < 128


@pytest.fixture(params=["truetype", "hershey"])
def font(request, monkeypatch):
    """Both text back ends: OpenCV 5's TrueType font and OpenCV 4's Hershey fallback."""
    if request.param == "hershey":
        monkeypatch.setattr(chart.Font, "__init__", lambda self: setattr(self, "face", None))
    elif chart.Font().face is None:
        pytest.skip("this OpenCV has no TrueType font (OpenCV 4)")
    return chart.Font()


def test_delta_is_drawn_as_a_triangle_not_a_question_mark(font):
    """Neither font has Δ (the TrueType one drew 'ClipΔ' as 'Clip?'): it is drawn by hand."""
    delta, question = _ink(font, "Δ"), _ink(font, "?")
    assert delta.any() and not np.array_equal(delta, question)
    rows = np.flatnonzero(delta.any(axis=1))
    width = [np.ptp(np.flatnonzero(delta[r])) for r in (rows[0], rows[-1])]
    assert width[1] > 3 * width[0]  # a point at the top, a wide base
    assert rows[-1] < 60 and rows[-1] - rows[0] > 0.6 * 40  # on the baseline, capital height


def test_delta_takes_its_own_room_in_a_line_of_text(font):
    assert font.width("ClipΔ", 20) > font.width("Clip", 20) + 8
    assert font.width("ΔΔ", 20) == 2 * font.width("Δ", 20)
    ink = _ink(font, "ClipΔ x", px=20)
    clip_only = _ink(font, "Clip", px=20)
    assert ink.sum() > clip_only.sum()
    # right-aligned text ends at x, Δ included
    img = np.full((40, 300, 3), 255, np.uint8)
    font.draw(img, "ClipΔ", 200, 30, 20, color=(0, 0, 0), align="right")
    cols = np.flatnonzero((img.min(axis=2) < 128).any(axis=0))
    assert 190 <= cols[-1] <= 200 and cols[0] >= 200 - font.width("ClipΔ", 20) - 1


def test_fit_shortens_with_an_ellipsis(font):
    text = "a long run name that does not fit"
    short = font.fit(text, 15, 80)
    assert short.endswith("…") and font.width(short, 15) <= 80
    assert font.fit("ok", 15, 80) == "ok"


def test_hershey_text_is_ascii():
    assert chart.Font()._ascii("a — ok…") == "a - ok..."


# ------------------------------------------------------------------------------ lines
def test_segments_break_at_gaps_and_when_steps_go_back():
    x = np.array([0.0, 1, 2, 3, 4, 5, 2, 3, 4])
    y = np.array([1.0, np.nan, 2, 3, 4, np.nan, 5, 6, 7])
    assert [s.tolist() for s in chart.segments(x, y)] == [[0], [2, 3, 4], [6, 7, 8]]
    x = np.array([0.0, 1, 2, 1, 2])  # a resume from an earlier checkpoint
    assert [s.tolist() for s in chart.segments(x, np.ones(5))] == [[0, 1, 2], [3, 4]]
    assert chart.segments(x, np.full(5, np.nan)) == []


def test_nice_ticks_one_million_steps():
    ticks = chart.nice_ticks(0, 1_000_000)
    assert ticks == [0, 200_000, 400_000, 600_000, 800_000, 1_000_000]
    assert [chart.format_tick(t, 200_000) for t in ticks] == ["0", "200k", "400k", "600k",
                                                             "800k", "1M"]


@pytest.mark.parametrize("lo, hi, expected", [
    (0, 400, [0, 100, 200, 300, 400]),
    (0, 1.05, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (-2.5, 102.5, [0, 20, 40, 60, 80, 100]),
    (0, 1_250_000, [0, 200_000, 400_000, 600_000, 800_000, 1_000_000, 1_200_000]),
    (-3, 7, [-2, 0, 2, 4, 6]),
    (5, 5, [5]),
])
def test_nice_ticks(lo, hi, expected):
    assert chart.nice_ticks(lo, hi) == pytest.approx(expected)


def test_nice_ticks_are_round_and_about_target_many():
    rng = np.random.default_rng(0)
    for _ in range(500):
        lo = float(rng.uniform(-1e3, 1e3)) * 10.0 ** int(rng.integers(-6, 6))
        hi = lo + float(rng.uniform(1e-3, 1e3)) * 10.0 ** int(rng.integers(-6, 6))
        if hi - lo < 1e-6 * abs(lo):
            continue  # a range narrower than float precision can resolve into ticks
        ticks = chart.nice_ticks(lo, hi, target=5)
        step = chart.nice_step((hi - lo) / 5)
        mantissa = step / 10.0 ** math.floor(math.log10(step) + 1e-9)
        assert min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-6, (lo, hi, ticks)
        assert 3 <= len(ticks) <= 12, (lo, hi, ticks)
        assert lo - 1e-9 * step <= ticks[0] and ticks[-1] <= hi + 1e-9 * step
        assert np.allclose(np.diff(ticks), step, rtol=1e-6)
        assert all(abs(t / step - round(t / step)) < 1e-6 for t in ticks)


@pytest.mark.parametrize("value, step, text", [
    (1_500_000, 500_000, "1.5M"), (1_250_000, 250_000, "1.25M"), (2_500, 500, "2.5k"),
    (200, 100, "200"), (0.05, 0.05, "0.05"), (0.4, 0.2, "0.4"), (2e-4, 1e-4, "2e-4"),
    (-200_000, 200_000, "-200k"), (3e9, 1e9, "3G"), (1e-9, 0.2, "0"),
])
def test_format_tick(value, step, text):
    assert chart.format_tick(value, step) == text


def test_log_scale_only_for_positive_losses_spanning_more_than_two_decades():
    assert chart.use_log_scale(np.array([1e-3, 0.05, 1.0]))
    assert chart.use_log_scale(np.array([np.nan, 2e-3, 0.5, np.nan]))  # gaps ignored
    assert not chart.use_log_scale(np.array([0.01, 0.5, 0.9]))  # 1.95 decades
    assert not chart.use_log_scale(np.array([0.0, 1e-5, 1.0]))  # a zero cannot be drawn
    assert not chart.use_log_scale(np.array([-1.0, 1e-5, 1.0]))
    assert not chart.use_log_scale(np.array([np.nan]))


def test_y_axis_fixed_data_log_and_empty():
    assert chart.y_axis(np.array([np.nan]), 5) is None
    fixed = chart.y_axis(np.array([np.nan]), 5, fixed=(0.0, 1.05))
    assert (fixed.lo, fixed.hi) == (0.0, 1.05) and fixed.labels[-1] == "1.0"
    log = chart.y_axis(np.array([1e-4, 1.0]), 5, log=True)
    assert log.log and log.labels[0] == "1e-4" and log.labels[-1] == "1"
    # log is asked for, but a zero cannot be drawn on it: linear
    assert not chart.y_axis(np.array([0.0, 1.0]), 5, log=True).log
    data = chart.y_axis(np.array([3.0, 97.0]), 5)
    assert data.lo <= 3 and data.hi >= 97 and not data.log


def test_encode_png_round_trips():
    img = np.zeros((4, 5, 3), np.uint8)
    img[1, 2] = (10, 20, 30)
    back = cv2.imdecode(np.frombuffer(chart.encode_png(img), np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(back, img)


def test_palette_is_bgr_and_cycles():
    assert chart.palette(0) == (178, 114, 0)  # Okabe-Ito blue, in OpenCV's order
    assert chart.palette(len(chart.PALETTE_RGB)) == chart.palette(0)
