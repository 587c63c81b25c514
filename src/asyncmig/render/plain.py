"""Not a terminal (CI logs, ``kubectl logs``): one timestamped line per event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import IO, Any

from ..events import Event
from ..reports import StatusReport, ValidationReport
from .base import Renderer, Scrub, ScrubbingWriter, identity
from .text import (
    applied_when,
    describe_event,
    error_lines,
    fmt_ms,
    notes,
    state_label,
    status_footer,
    validation_footer,
    where,
)

__all__ = ["PlainRenderer"]


class PlainRenderer(Renderer):
    """One line per event on ``out``; errors on ``err``."""

    def __init__(
        self, out: IO[str], err: IO[str], *, scrub: Scrub = identity, verbose: bool = False
    ) -> None:
        self.out = ScrubbingWriter(out, scrub)
        self.err = ScrubbingWriter(err, scrub)
        self.verbose = verbose

    def _line(
        self, text: str, *, ts: datetime | None = None, stream: ScrubbingWriter | None = None
    ) -> None:
        stamp = (ts or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        target = stream or self.out
        target.write(f"{stamp}Z {text}" + "\n")
        target.flush()

    def event(self, event: Event) -> None:
        text = describe_event(event)
        if text is not None:
            self._line(text, ts=event.ts)

    def status(self, report: StatusReport) -> None:
        rows = [("VERSION", "NAME", "STATE", "APPLIED AT", "BY", "DURATION", "NOTES")]
        rows += [
            (str(v.version), v.name, state_label(v), applied_when(v), v.applied_by or "-",
             fmt_ms(v.duration_ms) if v.duration_ms is not None else "-",
             ", ".join(notes(v)) or "-")
            for v in report.versions
        ]  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        out = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        out.append(status_footer(report))
        self.out.write("\n".join(out) + "\n")
        self.out.flush()

    def validation(self, report: ValidationReport) -> None:
        for issue in report.issues:
            loc = where(issue.path, issue.line, issue.column)
            self.out.write(f"{issue.level}: {issue.code}: {loc}{issue.message}" + "\n")
        self.out.write(validation_footer(report) + "\n")
        self.out.flush()

    def result(self, kind: str, text: str, **data: Any) -> None:
        self._line(text)

    def error(self, exc: BaseException, exit_code: int) -> None:
        for line in error_lines(exc, verbose=self.verbose):
            self.err.write(line.rstrip("\n") + "\n")
        self.err.flush()

    def interrupted(self, signal_name: str, exit_code: int) -> None:
        self.err.write(
            f"interrupted by {signal_name}: the running migration was rolled back and the "
            f"lock released\n"
        )
        self.err.flush()
