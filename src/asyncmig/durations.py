"""Human-readable durations: ``500ms``, ``5s``, ``2min``, ``1h``, ``1h 30min``.

One grammar serves the command line (``--lock-timeout 5min``), the config file and the
``-- asyncmig: lock-timeout=5s`` directive, so a value that works in one place works in
all of them. Decisions:

* Units follow PostgreSQL's own (``us``, ``ms``, ``s``, ``min``, ``h``, ``d``) plus
  their spelled-out forms (``sec``, ``seconds``, ``minutes``, ``hours`` …).
* ``m`` means *minutes*, as in Go, Kubernetes and systemd. There is no month unit and
  nobody writes a lock timeout in metres, so the only other reading (milliseconds) is
  the one we rule out; ``ms`` is always spelled ``ms``.
* Units are case-insensitive, and whitespace between number and unit or between parts
  is allowed: ``1h30m``, ``1h 30min``, ``1.5 s``.
* Parts may be combined (``2min 5s``) so that :func:`format_duration`'s output parses
  back. Each unit may appear once.
* A bare number is seconds (``300`` = 5 min), matching the library's numeric
  ``lock_timeout=300``. Callers that read SQL files pass ``require_unit=True``:
  PostgreSQL reads ``SET lock_timeout = 5000`` as *milliseconds*, so a bare number in a
  migration file is ambiguous and rejected — except ``0``, which means the same in
  every unit.
* Negative, infinite and NaN durations are errors; ``0`` is valid (callers decide what
  it means — usually "no limit").
"""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration"]

_UNIT_SECONDS: dict[str, float] = {}
for _names, _factor in (
    (("us", "µs", "usec", "usecs", "microsecond", "microseconds"), 1e-6),
    (("ms", "msec", "msecs", "millisecond", "milliseconds"), 1e-3),
    (("s", "sec", "secs", "second", "seconds"), 1.0),
    (("m", "min", "mins", "minute", "minutes"), 60.0),
    (("h", "hr", "hrs", "hour", "hours"), 3600.0),
    (("d", "day", "days"), 86400.0),
):
    for _name in _names:
        _UNIT_SECONDS[_name] = _factor

# Longest unit names first, so that "ms" is not read as "m" followed by "s".
_UNIT_ALTERNATION = "|".join(
    re.escape(name) for name in sorted(_UNIT_SECONDS, key=len, reverse=True)
)
_PART = re.compile(
    rf"\s*(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>{_UNIT_ALTERNATION})?(?![a-zµ])",
    re.IGNORECASE,
)

_EXAMPLES = "500ms, 5s, 1.5s, 2min, 1h, 1h 30min"


def parse_duration(text: str, *, require_unit: bool = False) -> float:
    """Parse a duration such as ``"500ms"``, ``"2min 5s"`` or ``"1h"`` into seconds.

    A bare number is seconds unless ``require_unit`` is true, in which case only ``0``
    may be written without a unit. Raises :class:`ValueError` with a message that quotes
    the input and lists examples of what is accepted.
    """
    source = text.strip()
    if not source:
        raise ValueError(f"empty duration; write one like {_EXAMPLES}")
    if source.startswith("-"):
        raise ValueError(f"invalid duration {text!r}: a duration cannot be negative")

    total = 0.0
    seen_units: set[float] = set()
    position = 0
    parts = 0
    while position < len(source):
        match = _PART.match(source, position)
        if match is None:
            raise ValueError(
                f"invalid duration {text!r}: cannot read {source[position:].strip()!r}; "
                f"write a number followed by a unit (us, ms, s, min or m, h, d), "
                f"e.g. {_EXAMPLES}"
            )
        number = float(match["number"])
        unit = match["unit"]
        if unit is None:
            if parts or match.end() < len(source):
                raise ValueError(
                    f"invalid duration {text!r}: {match['number']!r} needs a unit "
                    f"(us, ms, s, min or m, h, d)"
                )
            if require_unit and number != 0:
                raise ValueError(
                    f"invalid duration {text!r}: add a unit (e.g. {match['number']}s or "
                    f"{match['number']}ms); a bare number is ambiguous here because "
                    f"PostgreSQL would read it as milliseconds"
                )
            factor = 1.0
        else:
            factor = _UNIT_SECONDS[unit.lower()]
            if factor in seen_units:
                raise ValueError(f"invalid duration {text!r}: unit {unit!r} given twice")
            seen_units.add(factor)
        total += number * factor
        parts += 1
        position = match.end()

    if not math.isfinite(total):
        raise ValueError(f"invalid duration {text!r}: too large")
    return total


def format_duration(seconds: float) -> str:
    """Render seconds for people: ``"350ms"``, ``"1.2s"``, ``"2min 5s"``, ``"1h 2min"``.

    Below a second: whole milliseconds (one decimal below 1 ms, ``"0ms"`` for zero).
    Below a minute: seconds with one decimal. From a minute on: whole seconds split into
    ``h``/``min``/``s``, omitting zero parts. Rounding happens before choosing the form,
    so 59.96 s is ``"1min"``, never ``"60.0s"``. The output parses back with
    :func:`parse_duration`. Negative values (a clock that stepped back) are rendered
    with a leading ``-``; NaN and infinity raise :class:`ValueError`.
    """
    if not math.isfinite(seconds):
        raise ValueError(f"cannot format duration {seconds!r}")
    if seconds < 0:
        return "-" + format_duration(-seconds)

    millis = seconds * 1000
    if millis < 0.05:
        return "0ms"
    if millis < 1:
        return f"{millis:.1f}ms"
    if round(millis) < 1000:
        return f"{round(millis)}ms"
    tenths = round(seconds, 1)
    if tenths < 60:
        return f"{tenths:.1f}s"

    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}min")
    if secs:
        parts.append(f"{secs}s")
    return " ".join(parts)
