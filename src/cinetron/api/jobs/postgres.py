"""The shared job store: PostgreSQL (``CINETRON_DATABASE_URL=postgresql://…``), any number
of API replicas.

- Claims: ``UPDATE … WHERE job_id = (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1)``, so two
  replicas never take the same job, and a job whose owner's lease expired is claimable.
- Leases and times are the database's clock (``now()``), never a replica's.
- Events: ``PostgresEvents`` LISTENs on one channel and publishes with ``pg_notify``
  (progress, state changes, cancel requests, "a job was queued"), so a ``WatchJob`` on
  any replica streams a job another replica runs.
- Every connection failure becomes ``StoreUnavailable`` (gRPC UNAVAILABLE); the pool
  checks a connection before lending it, so RPCs recover as soon as the server is back.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import psycopg
from psycopg import conninfo
from psycopg_pool import ConnectionPool

from cinetron.api.jobs.store import (
    CANCELLED,
    COLUMNS,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    UNFINISHED,
    DuplicateKey,
    JobRow,
    JobStore,
    StoreUnavailable,
    migrations,
    page_after_query,
    page_query,
)
from cinetron.api.logs import log

CHANNEL = "cinetron_jobs"
_MIGRATION_LOCK = 0x63696E65  # pg_advisory_xact_lock key: one replica migrates at a time
_EPOCH = ("created_at", "updated_at")


def _cols(table: str = "") -> str:
    """The JobRow columns as a select list (times as epoch seconds)."""
    p = f"{table}." if table else ""
    return ", ".join(
        f"extract(epoch FROM {p}{c})::float8" if c in _EPOCH else f"{p}{c}" for c in COLUMNS
    )


_COLS = _cols()
_SELECT = f"SELECT {_COLS} FROM jobs"
_OPEN = f"state IN ({', '.join(str(s) for s in UNFINISHED)})"
_FINISHED = f"state IN ({', '.join(str(s) for s in TERMINAL)})"
_LEASE = "now() + make_interval(secs => %s)"
_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


def redact(dsn: str) -> str:
    """``postgresql://user@host:port/db`` without the password, for logs and messages."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable DSN)"
    host = parts.get("host", "localhost")
    port = parts.get("port", "5432")
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"postgresql://{user}{host}:{port}/{parts.get('dbname', '')}"


def _row(values: tuple[Any, ...] | None) -> JobRow | None:
    if values is None:
        return None
    fields = dict(zip(COLUMNS, values, strict=True))
    fields["request"] = bytes(fields["request"])
    if fields["result"] is not None:
        fields["result"] = bytes(fields["result"])
    return JobRow(**fields)


def _connect_kwargs() -> dict[str, Any]:
    # Short timeouts: a dead server answers UNAVAILABLE in seconds, not after TCP's minutes.
    return {
        "autocommit": True,
        "connect_timeout": 3,
        "options": "-c statement_timeout=10000",
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 3,
        "keepalives_count": 3,
    }


class PostgresJobStore(JobStore):
    shared = True

    def __init__(self, dsn: str, startup_timeout_s: float = 30.0, pool_size: int = 8) -> None:
        self.dsn = dsn
        self.describe = redact(dsn)
        self._pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            kwargs=_connect_kwargs(),
            timeout=5.0,
            check=ConnectionPool.check_connection,
            open=False,
            name="cinetron-jobs",
        )
        self._pool.open(wait=False)
        deadline = time.monotonic() + startup_timeout_s
        while True:
            try:
                self._migrate()
                break
            except StoreUnavailable as e:
                if time.monotonic() > deadline:
                    self._pool.close()
                    raise SystemExit(
                        f"cannot reach the job database {self.describe} within "
                        f"{startup_timeout_s:.0f} s ({e.message}); check CINETRON_DATABASE_URL "
                        "and that PostgreSQL is up"
                    ) from None
                time.sleep(1.0)

    # -- plumbing ------------------------------------------------------------------------

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except _CONNECTION_ERRORS as e:
            raise StoreUnavailable(self.describe, e) from e

    def _fetch(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._conn() as conn:
            cur = conn.execute(sql, args)
            return cur.fetchall() if cur.description else []

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[JobRow]:
        return [r for r in map(_row, self._fetch(sql, args)) if r is not None]

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> JobRow | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    def _migrate(self) -> None:
        with self._conn() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, sql in migrations("postgres"):
                if version not in done:
                    conn.execute(sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (version, name),
                    )
                    log("job_store_migrated", store=self.describe, version=version, name=name)

    @property
    def schema_version(self) -> int:
        return int(self._fetch("SELECT max(version) FROM schema_migrations")[0][0] or 0)

    def close(self) -> None:
        self._pool.close()

    def events(self, on_event: Callable[[dict[str, Any]], None]) -> PostgresEvents:
        return PostgresEvents(self.dsn, on_event)

    # -- JobStore ------------------------------------------------------------------------

    def insert(
        self,
        request: bytes,
        seed: int,
        key: str | None,
        total: int,
        owner: str | None,
        lease_s: float = 0.0,
    ) -> JobRow:
        try:
            row = self._one(
                "INSERT INTO jobs (job_id, idempotency_key, request, seed, state, total, owner, "
                f"fence, lease_until) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
                f"CASE WHEN %s::text IS NULL THEN NULL ELSE {_LEASE} END) RETURNING {_COLS}",
                (uuid.uuid4().hex, key, request, seed, QUEUED, total, owner,
                 int(owner is not None), owner, lease_s),
            )  # fmt: skip
        except psycopg.errors.UniqueViolation:
            existing = self.by_key(key) if key else None
            if existing is None:
                raise
            raise DuplicateKey(existing) from None
        assert row is not None
        return row

    def row(self, job_id: str) -> JobRow | None:
        return self._one(f"{_SELECT} WHERE job_id = %s", (job_id,))

    def by_key(self, key: str) -> JobRow | None:
        return self._one(f"{_SELECT} WHERE idempotency_key = %s", (key,))

    def page(self, size: int, before_seq: int | None, state: int) -> list[JobRow]:
        return self._rows(*page_query(_SELECT, "%s", size, before_seq, state))

    def page_after(self, size: int, after_seq: int | None, ascending: bool) -> list[JobRow]:
        return self._rows(*page_after_query(_SELECT, "%s", size, after_seq, ascending))

    def unfinished(self) -> list[JobRow]:
        return self._rows(f"{_SELECT} WHERE {_OPEN} ORDER BY seq")

    _CLAIMABLE = "(owner IS NULL OR lease_until < now())"

    def _claim(
        self, where: str, args: tuple[Any, ...], owner: str, lease_s: float
    ) -> JobRow | None:
        rows = self._fetch(
            f"WITH picked AS (SELECT job_id, owner AS previous FROM jobs WHERE {_OPEN} AND "
            f"{self._CLAIMABLE} AND {where} ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) "
            f"UPDATE jobs SET owner = %s, fence = fence + 1, state = {QUEUED}, "
            f"lease_until = {_LEASE}, updated_at = now() FROM picked "
            f"WHERE jobs.job_id = picked.job_id RETURNING {_cols('jobs')}, picked.previous",
            (*args, owner, lease_s),
        )  # fmt: skip
        if not rows:
            return None
        row = _row(rows[0][:-1])
        assert row is not None
        return replace(row, previous_owner=rows[0][-1])

    def claim(self, job_id: str, owner: str, lease_s: float) -> JobRow | None:
        return self._claim("job_id = %s", (job_id,), owner, lease_s)

    def claim_next(self, owner: str, lease_s: float) -> JobRow | None:
        return self._claim("TRUE", (), owner, lease_s)

    def renew(self, owner: str, lease_s: float) -> dict[str, tuple[int, bool]]:
        rows = self._fetch(
            f"UPDATE jobs SET lease_until = {_LEASE} WHERE owner = %s AND {_OPEN} "
            "RETURNING job_id, fence, cancel_requested",
            (lease_s, owner),
        )
        return {r[0]: (int(r[1]), bool(r[2])) for r in rows}

    def _fenced(
        self, sets: str, args: tuple[Any, ...], job_id: str, owner: str, fence: int
    ) -> bool:
        rows = self._fetch(
            f"UPDATE jobs SET {sets}, updated_at = now() "
            f"WHERE job_id = %s AND owner = %s AND fence = %s AND {_OPEN} RETURNING seq",
            (*args, job_id, owner, fence),
        )
        return bool(rows)

    def started(self, job_id: str, owner: str, fence: int) -> bool:
        # A new attempt starts from step 0: the stored progress is this run's.
        sets = f"state = {RUNNING}, attempts = attempts + 1, step = 0, elapsed = 0"
        return self._fenced(sets, (), job_id, owner, fence)

    def progress(
        self, job_id: str, owner: str, fence: int, step: int, total: int, elapsed: float
    ) -> bool:
        return self._fenced(
            "step = %s, total = %s, elapsed = %s", (step, total, elapsed), job_id, owner, fence
        )

    def succeed(
        self, job_id: str, owner: str, fence: int, result: bytes, video_key: str, step: int
    ) -> bool:
        return self._fenced(
            f"state = {SUCCEEDED}, result = %s, video_key = %s, step = %s, lease_until = NULL",
            (result, video_key, step),
            job_id,
            owner,
            fence,
        )

    def end(
        self,
        job_id: str,
        state: int,
        code: str,
        reason: str,
        owner: str | None = None,
        fence: int | None = None,
        step: int | None = None,
    ) -> bool:
        sets = (
            "state = %s, error_code = %s, error_reason = %s, step = COALESCE(%s, step), "
            "lease_until = NULL"
        )
        args = (state, code, reason, step)
        if fence is not None and owner is not None:
            return self._fenced(sets, args, job_id, owner, fence)
        rows = self._fetch(
            f"UPDATE jobs SET {sets}, updated_at = now() WHERE job_id = %s AND {_OPEN} "
            "RETURNING seq",
            (*args, job_id),
        )
        return bool(rows)

    def release(self, job_id: str, owner: str, fence: int, step: int) -> bool:
        return self._fenced(
            f"state = {QUEUED}, owner = NULL, lease_until = NULL, step = %s",
            (step,),
            job_id,
            owner,
            fence,
        )

    def request_cancel(self, job_id: str, reason: str) -> JobRow | None:
        # Nobody runs it (unclaimed, or its owner's lease expired): it ends here and now.
        # Otherwise the flag is set and the owner stops it within a step.
        nobody = f"({self._CLAIMABLE})"
        self._fetch(
            f"UPDATE jobs SET cancel_requested = true, updated_at = now(), "
            f"state = CASE WHEN {nobody} THEN {CANCELLED} ELSE state END, "
            f"error_code = CASE WHEN {nobody} THEN 'CANCELLED' ELSE error_code END, "
            f"error_reason = CASE WHEN {nobody} THEN %s ELSE error_reason END "
            f"WHERE job_id = %s AND {_OPEN} RETURNING seq",
            (reason, job_id),
        )
        return self.row(job_id)

    def delete(self, job_id: str) -> JobRow | None:
        return self._one(
            f"DELETE FROM jobs WHERE job_id = %s AND {_FINISHED} RETURNING {_COLS}", (job_id,)
        )

    def expired(self, ttl_s: float, limit: int) -> list[JobRow]:
        return self._rows(
            f"{_SELECT} WHERE {_FINISHED} AND "
            "updated_at < now() - make_interval(secs => %s) ORDER BY updated_at LIMIT %s",
            (ttl_s, limit),
        )

    def counts(self) -> tuple[int, int]:
        q, r = self._fetch(
            f"SELECT count(*) FILTER (WHERE state = {QUEUED}), "
            f"count(*) FILTER (WHERE state = {RUNNING}) FROM jobs WHERE {_OPEN}"
        )[0]
        return int(q), int(r)

    def position(self, seq: int) -> int:
        return int(
            self._fetch(f"SELECT count(*) FROM jobs WHERE state = {QUEUED} AND seq < %s", (seq,))[
                0
            ][0]
        )

    def ping(self) -> None:
        self._fetch("SELECT 1")


class PostgresEvents:
    """LISTEN/NOTIFY on one channel, each direction on its own thread and connection.

    ``publish`` never blocks: payloads go to a queue that the sender thread drains in
    batches (one transaction, ``synchronous_commit = off``: a notification is a hint, the
    row is the truth). The listener calls ``on_event`` (in its thread) for each payload,
    and with ``{"k": "resync"}`` after it reconnected, since notifications sent meanwhile
    are lost: subscribers re-read the rows then.
    """

    def __init__(self, dsn: str, on_event: Callable[[dict[str, Any]], None]) -> None:
        self.dsn = dsn
        self.describe = redact(dsn)
        self._on_event = on_event
        self._outbox: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=10_000)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._listen, name="cinetron-listen", daemon=True),
            threading.Thread(target=self._send, name="cinetron-notify", daemon=True),
        ]
        self.connected = threading.Event()

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def publish(self, payload: dict[str, Any]) -> None:
        with contextlib.suppress(queue.Full):  # the database is away; watchers poll rows
            self._outbox.put_nowait(payload)

    def close(self) -> None:
        self._stop.set()
        self._outbox.put(None)
        for t in self._threads:
            t.join(5)

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, **_connect_kwargs())

    def _listen(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    self._on_event({"k": "resync"})
                    backoff = 0.2
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            try:
                                payload = json.loads(note.payload)
                            except ValueError:
                                continue
                            self._on_event(payload)
            except _CONNECTION_ERRORS as e:
                if self.connected.is_set():
                    log("job_events_disconnected", store=self.describe, error=str(e).strip())
                self.connected.clear()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)

    def _send(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            first = self._outbox.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < 200:
                try:
                    item = self._outbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._stop.set()
                    break
                batch.append(item)
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                    conn.execute("SET synchronous_commit = off")
                with conn.transaction():
                    for payload in batch:
                        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps(payload)))
            except _CONNECTION_ERRORS:
                if conn is not None:
                    conn.close()
                conn = None  # dropped: the rows still say where each job is
        if conn is not None:
            conn.close()
