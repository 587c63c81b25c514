"""Table tests for :mod:`asyncmig.durations`."""

from __future__ import annotations

import math

import pytest

from asyncmig.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("500ms", 0.5),
        ("5s", 5.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("2min", 120.0),
        ("2m", 120.0),
        ("2 min", 120.0),
        ("2mins", 120.0),
        ("2 minutes", 120.0),
        ("1h", 3600.0),
        ("1hr", 3600.0),
        ("2 hours", 7200.0),
        ("1d", 86400.0),
        ("250us", 0.00025),
        ("10 sec", 10.0),
        ("3 seconds", 3.0),
        ("5S", 5.0),
        ("5MS", 0.005),
        ("1h30m", 5400.0),
        ("1h 30min", 5400.0),
        ("2min 5s", 125.0),
        ("1min 0.5s", 60.5),
        ("  5s  ", 5.0),
        ("300", 300.0),
        ("1.25", 1.25),
    ],
)
def test_parse_duration_accepts(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("-5s", "cannot be negative"),
        ("5x", "cannot read '5x'"),
        ("5sx", "cannot read"),
        ("s", "cannot read 's'"),
        ("five seconds", "cannot read"),
        ("1e3s", "cannot read"),
        ("5s 3", "'3' needs a unit"),
        ("3 5s", "'3' needs a unit"),
        ("1s 2sec", "given twice"),
        ("1m 1min", "given twice"),
        ("5s,", "cannot read ','"),
    ],
)
def test_parse_duration_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="duration") as info:
        parse_duration(text)
    assert fragment in str(info.value)


def test_parse_duration_rejects_overflow() -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_duration("9" * 400 + "d")


def test_parse_duration_error_lists_examples() -> None:
    with pytest.raises(ValueError, match=r"500ms, 5s"):
        parse_duration("soon")


@pytest.mark.parametrize("text", ["0", "0.0", "5s", "500ms", "1h"])
def test_require_unit_accepts_units_and_zero(text: str) -> None:
    parse_duration(text, require_unit=True)


def test_require_unit_rejects_bare_number_and_says_why() -> None:
    with pytest.raises(ValueError, match="add a unit") as info:
        parse_duration("5000", require_unit=True)
    assert "5000s or 5000ms" in str(info.value)
    assert "milliseconds" in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.00001, "0ms"),
        (0.0004, "0.4ms"),
        (0.001, "1ms"),
        (0.35, "350ms"),
        (0.9994, "999ms"),
        (0.9996, "1.0s"),
        (1.0, "1.0s"),
        (1.23, "1.2s"),
        (12.34, "12.3s"),
        (59.94, "59.9s"),
        (59.96, "1min"),
        (60, "1min"),
        (125, "2min 5s"),
        (125.4, "2min 5s"),
        (3600, "1h"),
        (3725, "1h 2min 5s"),
        (3605, "1h 5s"),
        (90000, "25h"),
        (-1.5, "-1.5s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.35, 1.2, 12.3, 125, 3725, 90000])
def test_format_duration_parses_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_format_duration_rejects_non_finite(value: float) -> None:
    with pytest.raises(ValueError, match="cannot format"):
        format_duration(value)
