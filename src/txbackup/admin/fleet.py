"""Many scalar-admin endpoints paused as one.

``Fleet.pause`` pauses every endpoint in parallel. If any pause fails or times
out, every endpoint is unpaused at once (a pause that timed out may still have
taken effect, so the unpause goes to all of them) and a ``PauseError`` names
each failed endpoint with its reason.

Pause hardening (issue 13; the rules per ErrorInfo reason are in ``outcomes``):
every Pause that succeeds is followed by CheckPaused on that endpoint, because
ScalarDB Cluster before 3.15.9 / 3.16.6 / 3.17.4 / 3.18.1 could report a pause as
done while the node stayed unpaused; one that says "not paused" (or cannot answer)
fails the pause and everything is unpaused. ABORTED is retried by the client. When
the fleet unpauses to recover from a failed pause, it unpauses only the endpoints
that may hold a pause of ours: not one whose answer says the gate is another
pause's (``TIMED_OUT_STILL_PAUSED``, ``PAUSE_IN_PROGRESS``: unpausing would revoke
that pause) or that it reopened itself (``TIMED_OUT``, ``GATE_OPEN``).

The pause window: it starts when the *last* endpoint confirmed it is paused
and ends when the *first* unpause is sent. Inside it, no application serves a
request; its midpoint is the restore point for point-in-time-restore services.
``paused()`` wraps it all so that unpause always runs: on success, on error,
on cancellation and on SIGINT/SIGTERM.

The window is verified, not assumed: before it is closed, ``verify_window``
asks every endpoint CheckPaused. One that is no longer paused (unpaused by
someone else, its lease expired, restarted) or cannot answer fails the window,
naming it: a restore point there would lie in time when it served requests.
The window then ends when the check was sent. An older server without
CheckPaused cannot be asked: the window is kept, and the endpoint is listed
in ``PauseWindow.unverified`` so callers can warn and record it. Beside
CheckPaused run the fleet's ``window_checks`` (Kubernetes: did a pod restart,
get replaced, appear or vanish?): anything they report breaks the window too.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from txbackup.admin.client import AdminClient, ClientOptions, Endpoint, PauseRefused
from txbackup.clock import floor_ms, iso_ms, moment_fields, utc_now
from txbackup.errors import PauseError, TxbackupError


class PauseWindowBroken(PauseError):
    """An endpoint was no longer paused (or could not confirm it) when the window closed."""


class Interrupted(TxbackupError):
    """The command was stopped by SIGINT (exit 130) or SIGTERM (exit 143), after cleaning up."""

    def __init__(self, signum: int | None, what: str = "") -> None:
        name = signal.Signals(signum).name if signum else "a cancellation"
        super().__init__(f"interrupted by {name}{what}")
        self.exit_code = 128 + signum if signum else 1


@dataclass
class PauseWindow:
    """When the whole fleet was paused: [last pause confirmed, pause verified (or first unpause sent)]."""

    started_at: datetime | None = None
    ended_at: datetime | None = None
    unverified: list[str] = field(default_factory=list)
    """Endpoints (older servers without CheckPaused) that could not confirm the window."""
    attempts: dict[str, int] = field(default_factory=dict)
    """Endpoints whose Pause took more than one call (ABORTED retried), and how many."""

    @property
    def midpoint(self) -> datetime | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return floor_ms(self.started_at + (self.ended_at - self.started_at) / 2)

    @property
    def duration_ms(self) -> int | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return round((self.ended_at - self.started_at).total_seconds() * 1000)

    def to_json(self, zone: ZoneInfo | None = None) -> dict[str, Any]:
        """The window: UTC ISO-8601 times, the same in epoch ms (``*_ms``) and, with
        ``zone``, in that zone with its offset (``*_local``, and ``time_zone``)."""
        moments = {"started_at": self.started_at, "ended_at": self.ended_at, "restore_point": self.midpoint}
        data: dict[str, Any] = {name: iso_ms(moment) for name, moment in moments.items()}
        for name, moment in moments.items():
            data |= moment_fields(name, moment, zone)
        if zone is not None:
            data["time_zone"] = zone.key
        return data | {
            "duration_ms": self.duration_ms,
            "verified": not self.unverified,
            "unverified": list(self.unverified),
            "attempts": dict(self.attempts),
        }


@dataclass
class EndpointStatus:
    endpoint: Endpoint
    paused: bool | None = None  # None: unknown (an older server without CheckPaused)
    error: str | None = None

    @property
    def state(self) -> str:
        if self.error is not None:
            return "error"
        if self.paused is None:
            return "unknown (old server)"
        return "paused" if self.paused else "serving"


WindowCheck = Callable[[], Awaitable[list[str]]]
"""A check run beside CheckPaused before the window closes: what broke the pause, one item
each (``[]``: nothing). Kubernetes discovery adds one per release (pods restarted, replaced,
added or vanished: :class:`txbackup.admin.kubernetes.Watch`)."""


@dataclass
class Fleet:
    """A set of scalar-admin endpoints, paused and unpaused together."""

    endpoints: Sequence[Endpoint]
    options: ClientOptions = field(default_factory=ClientOptions)
    window: PauseWindow = field(default_factory=PauseWindow)
    window_checks: Sequence[WindowCheck] = ()
    names: dict[Endpoint, str] = field(default_factory=dict)
    """What each endpoint is, where discovery knows (a pod's name), for status and output."""

    def __post_init__(self) -> None:
        self.endpoints = sorted(set(self.endpoints))
        self._clients: dict[Endpoint, AdminClient] = {}
        self._maybe_ours: set[Endpoint] = set()

    def label(self, endpoint: Endpoint) -> str:
        """``endpoint`` as messages name it: with its pod's name when discovery knows it."""
        name = self.names.get(endpoint)
        return f"{endpoint} (pod {name})" if name else str(endpoint)

    def _client(self, endpoint: Endpoint) -> AdminClient:
        if endpoint not in self._clients:
            self._clients[endpoint] = AdminClient(endpoint, self.options)
        return self._clients[endpoint]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    async def pause(self, wait_outstanding: bool = True, max_pause_wait_ms: int | None = None) -> PauseWindow:
        """Pause every endpoint, each confirmed by CheckPaused; on any failure unpause
        every endpoint that may hold our pause, and raise."""
        self.window = PauseWindow()
        confirmed: dict[Endpoint, datetime] = {}
        # --- pause hardening (issue 13, parts 3): which endpoints may hold our pause ---
        self._maybe_ours = set()

        async def pause_one(endpoint: Endpoint) -> None:
            client = self._client(endpoint)
            self._maybe_ours.add(endpoint)  # from the first Pause sent: its outcome may be unknown
            try:
                attempts = await client.pause(wait_outstanding, max_pause_wait_ms)
            except PauseRefused as exc:
                if exc.not_ours:  # the server said so: the gate is not ours to reopen
                    self._maybe_ours.discard(endpoint)
                raise
            if attempts > 1:
                self.window.attempts[str(endpoint)] = attempts
            # a node may answer "paused" and serve on (a race fixed in ScalarDB Cluster 3.15.9,
            # 3.16.6, 3.17.4, 3.18.1): believe CheckPaused, and start the window at its answer
            try:
                state = await client.check_paused()
            except TxbackupError as exc:
                why = _reason(exc, endpoint)
                raise PauseError(f"pause {endpoint}: paused, but CheckPaused failed: {why}") from exc
            if state is False:
                raise PauseError(
                    f"pause {endpoint}: answered that it paused, but CheckPaused says it is serving"
                    " (a ScalarDB Cluster before 3.15.9/3.16.6/3.17.4/3.18.1?)"
                )
            confirmed[endpoint] = utc_now()

        # --- end of pause hardening ---

        tasks = {asyncio.create_task(pause_one(e)): e for e in self.endpoints}
        failures: dict[Endpoint, str] = {}
        try:
            pending = set(tasks)
            while pending and not failures:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    exc = task.exception()
                    if exc is not None:
                        failures[tasks[task]] = _reason(exc, tasks[task])
            for task in pending:  # a failure elsewhere: stop waiting for the rest
                task.cancel()
                failures.setdefault(tasks[task], "cancelled: another endpoint failed to pause")
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.shield(self._unpause_all(quiet=True, only=self._maybe_ours))
            raise
        if failures:
            await asyncio.shield(self._unpause_all(quiet=True, only=self._maybe_ours))
            failed = "; ".join(f"{self.label(e)}: {r}" for e, r in sorted(failures.items()))
            raise PauseError(f"pause failed: {failed}")
        self.window.started_at = max(confirmed.values()) if confirmed else utc_now()
        return self.window

    async def unpause(self) -> None:
        """Unpause every endpoint; raise naming each one that may still be paused."""
        failures = await self._unpause_all(quiet=False)
        if failures:
            raise PauseError(
                "unpause failed, these may STILL BE PAUSED until their lease expires: "
                + "; ".join(f"{self.label(e)}: {r}" for e, r in sorted(failures.items()))
            )

    async def _unpause_all(self, quiet: bool, only: set[Endpoint] | None = None) -> dict[Endpoint, str]:
        """Unpause every endpoint (``only``: those of them)."""
        if self.window.ended_at is None:
            self.window.ended_at = utc_now()
        targets = [e for e in self.endpoints if only is None or e in only]
        results = await asyncio.gather(*(self._client(e).unpause() for e in targets), return_exceptions=True)
        failures = {
            e: _reason(r, e)
            for e, r in zip(targets, results, strict=True)
            if isinstance(r, BaseException)
        }
        return {} if quiet else failures

    async def verify_window(self) -> None:
        """Close the window only if every endpoint is still paused (call before unpausing).

        The window ends when the checks are sent: each endpoint answering
        "paused" was paused then. Raises ``PauseWindowBroken`` naming each
        endpoint that is not (or cannot say); endpoints of older servers without
        CheckPaused are listed in ``window.unverified``. The ``window_checks`` run at the
        same time; what they report is broken too.
        """
        ended = utc_now()
        checks = asyncio.gather(*(check() for check in self.window_checks))
        statuses, checked = await asyncio.gather(self.status(), checks)
        if self.window.ended_at is None:
            self.window.ended_at = ended
        broken = [
            f"{self.label(s.endpoint)}: no longer paused (unpaused by someone else, its pause lease expired,"
            " or it restarted)"
            for s in statuses
            if s.paused is False
        ]
        broken += [
            f"{self.label(s.endpoint)}: cannot confirm it is still paused ({s.error})"
            for s in statuses
            if s.error
        ]
        broken += [item for items in checked for item in items]
        self.window.unverified = [str(s.endpoint) for s in statuses if s.paused is None and s.error is None]
        if broken:
            raise PauseWindowBroken("pause window not held, the set is not consistent: " + "; ".join(broken))

    async def status(self) -> list[EndpointStatus]:
        async def check(endpoint: Endpoint) -> EndpointStatus:
            try:
                return EndpointStatus(endpoint, await self._client(endpoint).check_paused())
            except TxbackupError as exc:
                return EndpointStatus(endpoint, error=_reason(exc, endpoint))

        return list(await asyncio.gather(*(check(e) for e in self.endpoints)))


def _reason(exc: BaseException, endpoint: Endpoint) -> str:
    """The failure reason without the endpoint prefix the client already put in."""
    text = str(exc) or type(exc).__name__
    for verb in ("pause", "unpause", "check"):
        prefix = f"{verb} {endpoint}: "
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


_SIGNALS_GUARDED: contextvars.ContextVar[bool] = contextvars.ContextVar("signals_guarded", default=False)
_received: list[int] = []


def received_signal() -> int | None:
    """The signal that ``cancel_on_signals`` last turned into a cancellation, if any."""
    return _received[-1] if _received else None


@contextlib.contextmanager
def cancel_on_signals(task: asyncio.Task[Any]) -> Iterator[None]:
    """Turn the first SIGINT/SIGTERM into a cancellation of ``task``.

    Nested uses are no-ops (the outer one already cancels the task); on exit
    the handlers that were there before are put back. Off the main thread it
    does nothing: there the caller owns the signals.
    """
    if _SIGNALS_GUARDED.get():
        yield
        return
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    installed: list[signal.Signals] = []
    fired = False

    def on_signal(sig: int) -> None:
        nonlocal fired
        if not fired:
            fired = True
            _received.append(sig)
            task.cancel()

    for sig in previous:
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread
    _received.clear()  # what a previous guarded run received is not this run's
    token = _SIGNALS_GUARDED.set(True)
    try:
        yield
    finally:
        _SIGNALS_GUARDED.reset(token)
        for sig in installed:
            loop.remove_signal_handler(sig)
            if previous[sig] is not None:
                signal.signal(sig, previous[sig])


@contextlib.asynccontextmanager
async def paused(
    fleet: Fleet, wait_outstanding: bool = True, max_pause_wait_ms: int | None = None
) -> AsyncIterator[PauseWindow]:
    """Hold the fleet paused for the body; unpause always runs.

    When the body ends normally the window is verified first (``verify_window``:
    ``PauseWindowBroken`` if an endpoint no longer holds the pause).
    SIGINT/SIGTERM during the pause cancel the body and unpause; the body's
    error (or the cancellation) propagates after the unpause.
    """
    task = asyncio.current_task()
    assert task is not None
    with cancel_on_signals(task):
        window = await fleet.pause(wait_outstanding, max_pause_wait_ms)
        try:
            yield window
            await fleet.verify_window()
        finally:
            await asyncio.shield(fleet.unpause())
