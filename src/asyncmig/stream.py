"""Events as an async iterable: run an operation and ``async for`` over what it does.

::

    async with migrator.stream("migrate", steps=1) as events:
        async for event in events:
            print(event.to_json())
    report = events.result            # the operation's return value

The operation runs in a task beside the consumer; its events arrive in order. If it
fails, iteration ends and leaving the ``async with`` raises its error (the same typed
error the plain call would raise). Leaving the block early cancels the operation, which
then rolls back, records and releases the lock like any cancelled run.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from .events import Event

__all__ = ["EventStream", "run_streamed"]

T = TypeVar("T")


class EventStream(Generic[T]):
    """Async iterator over a running operation's events; ``result`` once it is done."""

    def __init__(self, receive: MemoryObjectReceiveStream[Event]) -> None:
        self._receive = receive
        self._result: T | None = None
        self._done = False

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._receive.__aiter__()

    @property
    def result(self) -> T:
        if not self._done:
            raise RuntimeError("the operation has not finished yet")
        return self._result  # type: ignore[return-value]


@asynccontextmanager
async def run_streamed(
    operation: Callable[..., Awaitable[T]], **kwargs: Any
) -> AsyncIterator[EventStream[T]]:
    """Run ``operation(on_event=..., **kwargs)`` and stream its events."""
    send, receive = anyio.create_memory_object_stream[Event](math.inf)
    stream: EventStream[T] = EventStream(receive)
    failure: BaseException | None = None

    async def runner() -> None:
        nonlocal failure
        async with send:
            try:
                stream._result = await operation(on_event=send.send, **kwargs)
                stream._done = True
            except Exception as exc:  # re-raised when the caller leaves the block
                failure = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(runner)
        try:
            async with receive:
                yield stream
                # the caller stopped iterating early: let the operation finish on its own
                # only if it already has; otherwise cancel it (it cleans up and records)
        finally:
            if not stream._done and failure is None:
                tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
