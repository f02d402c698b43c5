"""Run blocking target calls from the async engine without letting them hold it hostage.

Targets are synchronous (database drivers, subprocesses). Each call runs in
its own daemon thread, so a call stuck on a dead database can be abandoned at
a deadline: the engine moves on (and unpauses) instead of waiting for it, and
the process can still exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def in_thread(
    fn: Callable[[], T], name: str = "txbackup-target", started: list[threading.Thread] | None = None
) -> T:
    """Await ``fn()`` run in a fresh daemon thread (appended to ``started`` if given)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return  # abandoned at a deadline
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def hand_over(result: T | None, error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    def work() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting task
            hand_over(None, exc)
        else:
            hand_over(result, None)

    thread = threading.Thread(target=work, name=name, daemon=True)
    if started is not None:
        started.append(thread)
    thread.start()
    return await future
