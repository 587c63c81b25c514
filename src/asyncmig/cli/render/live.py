"""A terminal: rich live progress while running, tables for results."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, assert_never

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.table import Column, Table
from rich.text import Span, Text

from ...durations import format_duration
from ...events import (
    Event,
    LockAcquired,
    LockReclaimed,
    LockReleased,
    LockRetry,
    LockWaiting,
    Message,
    MigrationFailed,
    MigrationFinished,
    MigrationStarted,
    RunFinished,
    RunStarted,
    ServerNotice,
    StatementFinished,
    StatementPlanned,
    StatementProgress,
    StatementStarted,
)
from ...reports import StatusReport, ValidationReport
from .base import Renderer
from .text import (
    applied_when,
    describe_event,
    error_line,
    error_lines,
    fmt_ms,
    notes,
    progress_line,
    retry_line,
    state_label,
    status_footer,
    validation_footer,
    where,
)

__all__ = ["RichRenderer", "status_table"]


@dataclass
class _Row:
    version: int
    name: str
    direction: str
    statements: int
    done: int = 0
    duration_ms: float | None = None
    result: str = "pending"
    reported: bool = False


_STATE_STYLE = {
    "applied": "green",
    "pending": "yellow",
    "failed": "bold red",
    "rolled_back": "magenta",
    "running": "cyan",
}


class RichRenderer(Renderer):
    """Live progress while running; tables for results."""

    def __init__(self, console: Console, err_console: Console, *, verbose: bool = False) -> None:
        self.console = console
        self.err_console = err_console
        self.verbose = verbose
        self._progress: Progress | None = None
        self._tasks: dict[tuple[int, str], TaskID] = {}
        self._rows: dict[tuple[int, str], _Row] = {}
        self._running: dict[int, tuple[int, str]] = {}  # version -> its task's key
        self._transactional: dict[int, bool] = {}  # version -> runs in a transaction
        # task -> (the running statement's start, its line) under a long statement's
        # progress, so each reading replaces the last rather than adding to it
        self._statement_line: dict[TaskID, tuple[object, str]] = {}

    # progress lifecycle

    @contextmanager
    def live(self) -> Iterator[None]:

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            ElapsedColumn(),
            StatementColumn(table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
            console=self.console,
            refresh_per_second=8,
            transient=False,
            expand=True,
        )
        self._tasks.clear()
        self._rows.clear()
        self._running.clear()
        try:
            with self._progress:
                yield
        finally:
            self._progress = None

    def _print(self, text: Any) -> None:
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            self.console.print(text)

    def _task(self, version: int, name: str, direction: str, total: int) -> TaskID | None:
        key = (version, direction)
        if self._progress is None:
            return None
        if key not in self._tasks:
            arrow = "↓" if direction == "down" else "↑"
            self._tasks[key] = self._progress.add_task(
                f"{arrow} {version} {name}", total=max(total, 1), start=False,
                current="", stmt_t0=None, state="waiting",
            )  # fmt: skip
            self._rows[key] = _Row(version, name, direction, total)
        return self._tasks[key]

    def event(self, event: Event) -> None:

        progress = self._progress
        match event:
            case RunStarted(plan=plan, dry_run=dry):
                if plan and not dry:
                    for item in plan:
                        task = self._task(item.version, item.name, item.direction, item.statements)
                        if task is not None and item.resume_from and progress is not None:
                            progress.update(task, completed=item.resume_from)
                text = describe_event(event)
                if text and (dry or not plan):
                    self._print(f"[bold]{escape(text)}[/]")
            case MigrationStarted(version=v, migration=name, direction=d, statements=n):
                task = self._task(v, name, d, n)
                self._running[v] = (v, d)
                self._transactional[v] = event.transactional
                if task is not None and progress is not None:
                    progress.start_task(task)
                    progress.update(task, state="running")
            case StatementStarted(version=v, line=line, preview=text):
                key = self._key(v)
                if key is not None and progress is not None:
                    progress.update(self._tasks[key], current=f"line {line}: {text}",
                                    stmt_t0=time.monotonic())  # fmt: skip
            case StatementFinished(version=v):
                key = self._key(v)
                if key is not None and progress is not None:
                    progress.update(self._tasks[key], advance=1, stmt_t0=None)
                    self._rows[key].done += 1
                if self.verbose:
                    self._print(f"  [dim]{escape(describe_event(event) or '')}[/]")
            case StatementPlanned(index=i, total=n, line=line, preview=text):
                self._print(f"  [cyan]{event.version}[/] [{i}/{n}] line {line}: {escape(text)}")
            case MigrationFinished(version=v, duration_ms=ms):
                key = self._key(v)
                if key is not None and progress is not None:
                    row = self._rows[key]
                    row.duration_ms, row.result = ms, "ok"
                    task = self._tasks[key]
                    progress.update(task, completed=max(row.statements, 1), state="done",
                                    current="[green]✓ done[/]", stmt_t0=None)  # fmt: skip
                    progress.stop_task(task)
            case MigrationFailed(version=v, duration_ms=ms, error=err):
                key = self._key(v)
                if key is not None and progress is not None:
                    row = self._rows[key]
                    row.duration_ms, row.result = ms, "failed"
                    task = self._tasks[key]
                    progress.update(task, state="failed", stmt_t0=None,
                                    current=f"[red]✗ {escape(error_line(err))}[/]")  # fmt: skip
                    progress.stop_task(task)
            case StatementProgress(version=v):
                key = self._key(v)
                if key is not None and progress is not None:
                    self._live_line(self._tasks[key], progress_line(event))
            case LockRetry(version=v, index=i):
                key = self._key(v)
                if key is not None and progress is not None:
                    task = self._tasks[key]
                    # the unit runs again: a transaction from its start, a no-transaction
                    # file from the statement that waited
                    done = 0 if self._transactional.get(v, True) else max((i or 1) - 1, 0)
                    self._rows[key].done = done
                    progress.update(task, completed=done, stmt_t0=None)
                    self._live_line(task, retry_line(event), replace=True)
                self._print(f"[yellow]{escape(describe_event(event) or '')}[/]")
            case LockWaiting() | LockReclaimed() | ServerNotice() | Message():
                style = {"warning": "yellow", "error": "red"}.get(getattr(event, "level", ""), "")
                text = escape(describe_event(event) or "")
                self._print(f"[{style}]{text}[/]" if style else text)
            case LockAcquired() | LockReleased():
                if self.verbose:
                    self._print(f"[dim]{escape(describe_event(event) or '')}[/]")
            case RunFinished():
                self._finish(event)
            case _:
                assert_never(event)

    def _live_line(self, task_id: TaskID, text: str, *, replace: bool = False) -> None:
        """Show ``text`` on a migration's live line, before the running statement's line
        (``replace``: instead of it, until the next statement starts)."""
        assert self._progress is not None
        task = next((t for t in self._progress.tasks if t.id == task_id), None)
        if task is None:
            return
        t0 = task.fields.get("stmt_t0")
        current = str(task.fields.get("current", ""))
        seen = self._statement_line.get(task_id)
        if seen is None or seen[0] != t0 or t0 is None:
            seen = self._statement_line[task_id] = (t0, current)
        shown = text if replace else f"{text}  {seen[1]}"
        self._progress.update(task_id, current=shown)

    def _key(self, version: int) -> tuple[int, str] | None:
        key = self._running.get(version)
        return key if key in self._tasks else None

    def _finish(self, event: RunFinished) -> None:

        if self._progress is not None:
            self._progress.refresh()
        rows = [r for r in self._rows.values() if not r.reported]
        rows = [r for r in rows if r.result != "pending" or not event.ok]
        if rows and not event.dry_run:
            table = Table(title=None, show_edge=False, pad_edge=False)
            for col in ("Version", "Migration", "Direction", "Statements", "Duration", "Result"):
                right = col in ("Statements", "Duration")
                table.add_column(col, justify="right" if right else "left")
            for r in rows:
                style = {"ok": "green", "failed": "bold red"}.get(r.result, "dim")
                table.add_row(
                    str(r.version), r.name, "down" if r.direction == "down" else "up",
                    f"{r.done}/{r.statements}", fmt_ms(r.duration_ms) if r.duration_ms else "-",
                    f"[{style}]{r.result}[/]",
                )  # fmt: skip
            self._print(table)
        for r in self._rows.values():
            r.reported = True  # reset: the migrate half's table lists only its own rows
        text = describe_event(event) or ""
        style = "green" if event.ok else "bold red"
        if not event.ok or event.applied or event.rolled_back or event.dry_run:
            self._print(f"[{style}]{escape(text)}[/]")

    # results

    def status(self, report: StatusReport) -> None:
        self.console.print(status_table(report), soft_wrap=True)
        self.console.print(status_footer(report), highlight=False)

    def validation(self, report: ValidationReport) -> None:

        for issue in report.issues:
            style = "red" if issue.level == "error" else "yellow"
            loc = escape(where(issue.path, issue.line, issue.column))
            self.console.print(
                f"[{style}]{issue.level}[/] [dim]{issue.code}[/] {loc}{escape(issue.message)}"
            )
        style = "green" if report.ok else "bold red"
        self.console.print(f"[{style}]{escape(validation_footer(report))}[/]")

    def result(self, kind: str, text: str, **data: Any) -> None:

        self.console.print(escape(text))

    def error(self, exc: BaseException, exit_code: int) -> None:

        lines = error_lines(exc, verbose=self.verbose)
        self.err_console.print(f"[bold red]{escape(lines[0])}[/]")
        for line in lines[1:]:
            self.err_console.print(escape(line.rstrip("\n")))

    def interrupted(self, signal_name: str, exit_code: int) -> None:
        self.err_console.print(
            f"[yellow]interrupted by {signal_name}: the running migration was rolled back "
            f"and the lock released[/]"
        )


_COLUMNS = ("Version", "Name", "State", "Applied at (UTC)", "By", "Duration", "Notes")
_RIGHT = frozenset({0, 5})


def status_table(report: StatusReport) -> Text:
    """The ``status`` table as styled, aligned text.

    Laid out by hand rather than with :class:`rich.table.Table`, which measures every
    cell and takes about half a second for 1,000 versions; this stays linear and fast.
    """
    rows: list[list[tuple[str, str]]] = []
    for v in report.versions:
        tags = notes(v)
        note_style = "bold red" if {"modified", "missing file"} & set(tags) else "dim"
        rows.append([
            (str(v.version), ""), (v.name, ""), (state_label(v), _STATE_STYLE.get(v.state, "")),
            (applied_when(v), ""), (v.applied_by or "-", ""),
            (fmt_ms(v.duration_ms) if v.duration_ms is not None else "-", ""),
            (" ".join(tags), note_style),
        ])  # fmt: skip
    widths = [cell_len(h) for h in _COLUMNS]
    for row in rows:
        for i, (cell, _) in enumerate(row):
            widths[i] = max(widths[i], cell_len(cell))
    # One plain string plus style spans: far cheaper than a Text.append per cell.
    parts: list[str] = []
    spans: list[Span] = []
    pos = 0

    def put(text: str, style: str = "") -> None:
        nonlocal pos
        if style and text:
            spans.append(Span(pos, pos + len(text), style))
        parts.append(text)
        pos += len(text)

    put("  ".join(_pad(h, widths[i], i in _RIGHT) for i, h in enumerate(_COLUMNS)).rstrip(), "bold")
    put("\n")
    put("  ".join("─" * w for w in widths), "dim")
    last = len(_COLUMNS) - 1
    for row in rows:
        put("\n")
        for i, (cell, style) in enumerate(row):
            padded = _pad(cell, widths[i], i in _RIGHT)
            put(("  " if i else "") + (padded.rstrip() if i == last else padded), style)
    return Text("".join(parts), spans=spans, no_wrap=True, end="\n")


def _pad(text: str, width: int, right: bool) -> str:
    gap = " " * (width - cell_len(text))
    return gap + text if right else text + gap


class ElapsedColumn(ProgressColumn):
    """How long the migration has been running (frozen when it ends)."""

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        if elapsed is None:
            return Text("     ", style="dim")
        return Text(f"{format_duration(elapsed):>7}", style="cyan")


class StatementColumn(ProgressColumn):
    """The running statement's first line and how long it has been running."""

    def render(self, task: Task) -> Text:
        current = str(task.fields.get("current", ""))
        t0 = task.fields.get("stmt_t0")
        text = Text.from_markup(current) if current.startswith("[") else Text(current)
        if t0 is not None:
            text.append(f"  {format_duration(time.monotonic() - t0)}", style="yellow")
        return text
