"""``--json``: one JSON object per line on stdout — events, results, errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import IO, Any

from ...errors import AsyncmigError
from ...events import Event
from ...reports import StatusReport, ValidationReport
from .base import Renderer, Scrub, ScrubbingWriter, identity

__all__ = ["JsonRenderer"]


class JsonRenderer(Renderer):
    def __init__(self, out: IO[str], *, scrub: Scrub = identity, verbose: bool = False) -> None:
        self.out = ScrubbingWriter(out, scrub)
        self.verbose = verbose

    def _emit(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)
        self.out.write(line + "\n")
        self.out.flush()

    def _head(self, name: str) -> dict[str, Any]:
        return {"event": name, "ts": datetime.now(UTC).isoformat()}

    def event(self, event: Event) -> None:
        self._emit(event.to_dict())

    def status(self, report: StatusReport) -> None:
        self._emit({**self._head("status"), **report.to_dict()})

    def validation(self, report: ValidationReport) -> None:
        self._emit({**self._head("validation"), **report.to_dict()})

    def result(self, kind: str, text: str, **data: Any) -> None:
        self._emit({**self._head(kind), "message": text, **data})

    def error(self, exc: BaseException, exit_code: int) -> None:
        fields = (
            exc.to_dict()
            if isinstance(exc, AsyncmigError)
            else {"type": type(exc).__name__, "message": str(exc)}
        )
        self._emit({**self._head("error"), "exit_code": exit_code, **fields})

    def interrupted(self, signal_name: str, exit_code: int) -> None:
        self._emit({**self._head("interrupted"), "signal": signal_name, "exit_code": exit_code})
