"""The demo bank: money moved between accounts that live in different databases.

Each database holds ``accounts(id, balance)`` and ``transfers(transfer_id,
account_id, amount)``. A transfer from an account of database X to one of
database Y is **two local transactions**: on X, debit the account and record
the transfer (negative amount); a short sleep; on Y, credit the account and
record the transfer (positive amount). Nothing makes the two atomic: like an
application over several databases, its consistency across them relies on
the pause. A backup taken inside the pause sees every transfer whole; copies
of the databases taken one after the other see some transfers half applied.

The books balance when the money in all accounts equals the opening money and
every transfer id appears in exactly two databases with amounts summing to zero
(``check_books``).

The service is ``/bank.Bank/Transfer`` (request and answer: JSON bytes) behind a
``PauseGate``, so pausing waits for in-flight transfers to finish, plus
``rpc.Admin`` on the same port. ``LoadDriver`` keeps N clients calling it.

The databases themselves are reached through ``txbackup.demo.stores``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from txbackup.admin.gate import PauseGate
from txbackup.admin.server import (
    SERVER_OPTIONS,
    GateInterceptor,
    add_admin_servicer,
    bind,
    format_address,
)
from txbackup.demo.stores import OPENING_BALANCE, Ledger, Store

log = logging.getLogger(__name__)

ACCOUNTS_PER_STORE = 100
SERVICE = "bank.Bank"
TRANSFER_METHOD = f"/{SERVICE}/Transfer"
GAP_MS = (1.0, 3.0)
"""The sleep between the debit and the credit of a transfer (ms, uniform)."""

T = TypeVar("T")


# -- the books --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BooksReport:
    """Do the books balance? (Computed from ledgers read one database at a time.)"""

    total: int
    expected: int
    transfers: int
    """Transfers present whole (both sides)."""
    half_applied: list[str]
    """Transfer ids that do not appear exactly twice with amounts summing to zero."""
    local_errors: list[str]
    """Databases whose balances disagree with their own transfer rows."""

    @property
    def ok(self) -> bool:
        return self.total == self.expected and not self.half_applied and not self.local_errors

    def summary(self) -> str:
        if self.ok:
            return f"books balance: total {self.total} = expected {self.expected}"
        relation = "=" if self.total == self.expected else "!="
        parts = [f"books BROKEN: total {self.total} {relation} expected {self.expected}"]
        if self.half_applied:
            count = len(self.half_applied)
            parts.append(f"{count} transfer{'s' if count != 1 else ''} half applied")
        parts += self.local_errors
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "total": self.total,
            "expected": self.expected,
            "transfers": self.transfers,
            "half_applied": len(self.half_applied),
            "half_applied_ids": self.half_applied[:20],
            "local_errors": self.local_errors,
        }


def books_of(ledgers: Sequence[Ledger], opening: int = OPENING_BALANCE) -> BooksReport:
    sides: dict[str, list[int]] = {}
    local_errors = []
    for ledger in ledgers:
        moved = sum(ledger.transfers.values())
        if ledger.balance != ledger.accounts * opening + moved:
            local_errors.append(
                f"{ledger.store}: balances {ledger.balance} != opening "
                f"{ledger.accounts * opening} + transfers {moved}"
            )
        for tid, amount in ledger.transfers.items():
            sides.setdefault(tid, []).append(amount)
    half = sorted(tid for tid, amounts in sides.items() if len(amounts) != 2 or sum(amounts) != 0)
    return BooksReport(
        total=sum(ledger.balance for ledger in ledgers),
        expected=sum(ledger.accounts for ledger in ledgers) * opening,
        transfers=len(sides) - len(half),
        half_applied=half,
        local_errors=local_errors,
    )


def check_books(stores: Sequence[Store], opening: int = OPENING_BALANCE) -> BooksReport:
    """Read every store and check the invariant: total money constant, no transfer half applied."""
    return books_of([store.ledger() for store in stores], opening)


# -- the service ------------------------------------------------------------------------------------


class Bank:
    """Accounts split across ``stores``: store i holds ids [i*K, (i+1)*K)."""

    def __init__(
        self,
        stores: Sequence[Store],
        accounts_per_store: int = ACCOUNTS_PER_STORE,
        gap_ms: tuple[float, float] = GAP_MS,
        workers: int = 16,
    ) -> None:
        if len(stores) < 2:
            raise ValueError("the bank needs at least two databases")
        self.stores = list(stores)
        self.accounts_per_store = accounts_per_store
        self.gap_ms = gap_ms
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bank")
        self._running: set[asyncio.Task[None]] = set()
        self.applied = 0
        self.failed = 0

    def accounts(self, index: int) -> range:
        k = self.accounts_per_store
        return range(index * k, (index + 1) * k)

    def all_accounts(self) -> list[range]:
        return [self.accounts(i) for i in range(len(self.stores))]

    def store_of(self, account: int) -> Store | None:
        index = account // self.accounts_per_store
        return self.stores[index] if account >= 0 and index < len(self.stores) else None

    def create(self, opening: int = OPENING_BALANCE) -> None:
        """Create the tables and open the accounts in every store (blocking)."""
        for i, store in enumerate(self.stores):
            store.create(self.accounts(i), opening)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _apply(self, tid: str, src: Store, dst: Store, source: int, dest: int, amount: int) -> None:
        await self._run(src.move, tid, source, -amount)
        await asyncio.sleep(random.uniform(*self.gap_ms) / 1000)
        try:
            await self._run(dst.move, tid, dest, amount)
        except Exception:
            self.failed += 1
            log.exception("transfer %s HALF APPLIED: credit on %s failed", tid, dst.name)
            raise
        self.applied += 1

    async def transfer(self, source: int, dest: int, amount: int) -> str:
        """Move ``amount`` from ``source`` to ``dest`` (accounts of different databases).

        Once started, a transfer always runs to its end, even if the caller is
        cancelled (a client gone, a server stopping): the caller then waits for it.
        """
        src, dst = self.store_of(source), self.store_of(dest)
        if src is None or dst is None or src is dst or amount <= 0:
            raise ValueError(
                f"a transfer needs accounts in two different databases and a positive amount, "
                f"not {source} -> {dest}: {amount}"
            )
        tid = uuid.uuid4().hex
        task = asyncio.create_task(self._apply(tid, src, dst, source, dest, amount))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                await asyncio.wait([task])
            raise
        return tid

    async def finish(self) -> None:
        """Wait for transfers still running (after the server stopped taking requests)."""
        if self._running:
            await asyncio.wait(set(self._running))

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        for store in self.stores:
            store.close()


def _transfer_handler(bank: Bank) -> Callable[[bytes, Any], Any]:
    async def transfer(request: bytes, context: Any) -> bytes:
        try:
            body = json.loads(request)
            source, dest, amount = int(body["from"]), int(body["to"]), int(body["amount"])
        except (ValueError, KeyError, TypeError):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, 'expected JSON {"from": id, "to": id, "amount": n}'
            )
        try:
            tid = await bank.transfer(source, dest, amount)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception as exc:
            await context.abort(grpc.StatusCode.INTERNAL, f"transfer failed: {exc}")
        return json.dumps({"transfer_id": tid}).encode()

    return transfer


@dataclass
class BankServer:
    """A running bank service; ``stop()`` it when done."""

    server: Any
    gate: PauseGate
    bank: Bank
    host: str
    port: int

    @property
    def target(self) -> str:
        return format_address(self.host, self.port)

    async def stop(self, grace: float | None = 2.0) -> None:
        """Stop taking requests, let running transfers end, unpause, close the stores."""
        try:
            await self.server.stop(grace)
            await self.bank.finish()
        finally:
            await self.gate.unpause()  # also cancels a pending lease timer
            await asyncio.get_running_loop().run_in_executor(None, self.bank.close)


async def start_bank_server(
    bank: Bank, host: str = "127.0.0.1", port: int = 0, *, lease_seconds: float | None = 60.0
) -> BankServer:
    """Serve ``Transfer`` through a pause gate, plus ``rpc.Admin``, on ``host:port``."""
    gate = PauseGate(lease_seconds=lease_seconds)
    server = grpc.aio.server(interceptors=[GateInterceptor(gate)], options=SERVER_OPTIONS)
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Transfer": grpc.unary_unary_rpc_method_handler(_transfer_handler(bank))}
    )
    server.add_generic_rpc_handlers((handler,))
    add_admin_servicer(server, gate)
    bound = bind(server, host, port)
    await server.start()
    return BankServer(server, gate, bank, host, bound)


# -- load -------------------------------------------------------------------------------------------


@dataclass
class LoadStats:
    ok: int = 0
    failed: int = 0
    longest_ms: float = 0.0
    """The slowest successful transfer, as the client saw it (a pause shows here)."""
    last_error: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failed": self.failed,
            "longest_ms": round(self.longest_ms, 1),
            "seconds": round(self.seconds, 2),
            "last_error": self.last_error,
        }


@dataclass
class LoadDriver:
    """``clients`` concurrent clients calling Transfer in a loop until ``stop()``."""

    target: str
    accounts: Sequence[range]
    clients: int = 8
    timeout: float = 60.0
    seed: int | None = None
    stats: LoadStats = field(default_factory=LoadStats)

    def __post_init__(self) -> None:
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._channel: Any = None
        self._random = random.Random(self.seed)
        self._started = 0.0

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.target)
        call = self._channel.unary_unary(TRANSFER_METHOD)
        self._started = time.monotonic()
        self._tasks = [asyncio.create_task(self._client(call)) for _ in range(self.clients)]

    def _request(self) -> bytes:
        src, dst = self._random.sample(range(len(self.accounts)), 2)
        body = {
            "from": self._random.choice(self.accounts[src]),
            "to": self._random.choice(self.accounts[dst]),
            "amount": self._random.randint(1, 100),
        }
        return json.dumps(body).encode()

    async def _client(self, call: Any) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await call(self._request(), timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                self.stats.failed += 1
                self.stats.last_error = f"{exc.code().name}: {exc.details()}"
                await asyncio.sleep(0.05)
                continue
            self.stats.ok += 1
            self.stats.longest_ms = max(self.stats.longest_ms, (time.monotonic() - started) * 1000)

    async def stop(self, timeout: float = 30.0) -> LoadStats:
        """Stop the clients (each finishes its current call) and return the counts."""
        self._stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._started:
            self.stats.seconds = time.monotonic() - self._started
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        return self.stats
