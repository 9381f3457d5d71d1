"""The embedded store: one SQLite file in WAL mode.

sqlite3 is blocking, and the event loop must never wait: not for another process's write lock,
not for an fsync. So the store has a worker thread with a connection of its own, and the short
calls of a turn (a message, the window, a summary, a counter) go to the worker only when they
would wait:

- A short call runs at once on the loop, on a second connection that never waits: its busy
  timeout is 0 and it never checkpoints. If SQLite answers "busy" (another process or the
  checkpoint thread holds the write lock), nothing was done and the call goes to the worker,
  which waits for the lock. A hop to a thread and back cost more CPU than the statements
  themselves, and under load a call waited for the worker for milliseconds (21 ms at p99).
- A write that would start the log over also goes to the worker: SQLite syncs the log's header
  to disk in that write (`_LogIndex` tells from the log's shared index).
- While a call is queued on the worker, later calls with the same order key (the conversation,
  the counter's scope) queue behind it, so they run in the order they were made. Other
  conversations' calls go on on the loop: had one call on the worker held every later call back,
  a busy app would send most of its calls to the worker, as each new call found another queued.
- Long calls (admin lists, transcripts, exports, deletions, the retention purge) always run on
  the worker.

Read-modify-write updates run inside `BEGIN IMMEDIATE`, which keeps them atomic even when
several app processes share the file; "busy" is answered at the `BEGIN`, before anything changed.

Committed pages go to the write-ahead log. Copying them into the database file (a checkpoint,
which ends with an fsync) is done by a third thread with its own connection, a few times a
second; once the log holds 1,000 pages it also waits until the log can start over (RESTART), so
the log stays a few MB long. Left to the writer (SQLite's default, in the commit that fills the log
past 1,000 pages), it stalled every store call queued behind it for 5-20 ms every second or so
under load. Without a checkpoint thread (it could not open the file, or the store was made
without one) every call runs on the worker, whose own checkpoints keep the log bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import random
import re
import sqlite3
import struct
import threading
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from config import ConfigurationError
from storage.base import ETagMismatch, StoreError, StoreUnavailable, UserDataKind
from storage.botstate import (
    LEGACY_OWNERS_SEARCHED,
    OWNER_CANDIDATES,
    conversation_state_prefix,
    legacy_owners,
    names_conversation,
    report_legacy_owners,
)
from storage.cursors import decode_keyset, encode_cursor
from storage.late import (
    LATE_UNREADABLE_MESSAGE,
    feedback_from_before,
    state_from_before,
    stems_from_before,
    summary_after,
)
from storage.models import (
    SKIPPED,
    TAKEN_AS_MISSING,
    AuditQuery,
    AuditRecord,
    ConversationCount,
    ConversationSummary,
    CounterResult,
    Feedback,
    FeedbackChange,
    FeedbackUpdate,
    Message,
    MessageDecoder,
    MessageStatus,
    Page,
    SummaryDelta,
    SummaryQuery,
    UsageChange,
    UsageCounts,
    UsageResult,
    apply_usage,
    as_utc,
    conversation_ref,
    readable_audit_record,
    readable_message,
    readable_messages,
    readable_summary,
)
from storage.pages import in_pages
from storage.ratings import FEEDBACK_CLEARED, exported_message, given_feedback
from storage.revisions import (
    UNREVISED_UNREADABLE,
    MessageRevision,
    RevisionOutcome,
    outcome_of,
    retitled,
    revised,
)
from storage.summaries import (
    COUNTED_UNREADABLE,
    ERASED_UNREADABLE,
    ERASED_UNREADABLE_MESSAGE,
    EXPORTED_UNREADABLE,
    EXPORTED_UNREADABLE_MESSAGE,
    RESTARTED_UNREADABLE,
    UNATTRIBUTED_SHARED_MESSAGES,
    UNATTRIBUTED_UNREADABLE_MESSAGE,
    UNLOWERED_UNREADABLE,
    UNREADABLE_SHARED_SUMMARIES,
    Erased,
    answers_without_prompt,
    apply_delta,
    erased,
    matches,
    new_summary,
    prompts_by_conversation,
    title_to_clear,
    without_erased,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
_OPEN_ATTEMPTS = 50
# How long a connection waits for another's lock (SQLite's busy timeout), and how long opening
# goes on retrying "locked" answers: each retry of a lock another process holds waits this long.
_BUSY_TIMEOUT_SECONDS = 5.0
# Parsed window messages kept by their stored text: a full window (40 messages) for each of about
# a hundred conversations in use at once; a few kB each.
_DECODED_MESSAGES = 4096
# Order keys of the calls that have no conversation or scope. A key shared by chance only
# keeps more calls in order than needed.
_AUDIT = "audit"
_BOT_STATE = "botstate"
CHECKPOINT_EVERY_SECONDS = 0.2
# The log length (pages) at which the checkpoint thread starts it over: SQLite's own default.
RESTART_LOG_AT_PAGES = 1000
# How often the checkpoint thread checks that the store's files are still at their paths
# (`_FileWatch`); readiness checks at every probe too.
FILE_CHECK_EVERY_SECONDS = 5.0
# Readiness: this many writes failing in a row for a reason of the file's (`_WriteFailures`)
# make the store unavailable until a write succeeds, or at most this long after the last one.
WRITE_FAILURES_NOT_READY = 3
WRITE_FAILURES_KEPT_SECONDS = 60.0
# SQLite's primary result codes that say no write can be done now, whatever the call.
_WRITE_FAILURE_REASONS = {
    sqlite3.SQLITE_FULL: "the disk is full",
    sqlite3.SQLITE_BUSY: "another process holds the write lock",
    sqlite3.SQLITE_LOCKED: "another process holds the write lock",
    sqlite3.SQLITE_IOERR: "disk I/O error",
    sqlite3.SQLITE_READONLY: "the file cannot be written",
    sqlite3.SQLITE_CANTOPEN: "a file of the store cannot be opened",
}
# What stopped the store from opening, by SQLite's primary result code: said in one line with
# the file's path (not exit 2: no setting to change, and a later start may work).
_OPEN_FAILURES = {
    sqlite3.SQLITE_BUSY: "is locked by another process, which held the write lock longer than"
    " the 5 s the app waits",
    sqlite3.SQLITE_LOCKED: "is locked by another process",
    sqlite3.SQLITE_FULL: "cannot be written: the disk is full",
    sqlite3.SQLITE_NOTADB: "is not a SQLite database (or is encrypted)",
    sqlite3.SQLITE_CORRUPT: "is damaged: restore it from a backup, or move it away to start"
    " with an empty store",
    sqlite3.SQLITE_IOERR: "could not be read or written (a disk I/O error)",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    conversation_id TEXT NOT NULL,
    id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    expires_at REAL,
    doc TEXT NOT NULL,
    written_at REAL,
    PRIMARY KEY (conversation_id, id)
);
CREATE INDEX IF NOT EXISTS messages_by_seq ON messages (conversation_id, seq);
CREATE INDEX IF NOT EXISTS messages_by_user ON messages (user_id);
CREATE TABLE IF NOT EXISTS conversations (
    conversation_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    last_activity_at TEXT NOT NULL,
    expires_at REAL,
    doc TEXT NOT NULL,
    written_at REAL
);
CREATE INDEX IF NOT EXISTS conversations_by_activity
    ON conversations (last_activity_at DESC, conversation_id DESC);
CREATE INDEX IF NOT EXISTS conversations_by_user ON conversations (user_id);
CREATE TABLE IF NOT EXISTS counters (
    scope TEXT NOT NULL,
    window TEXT NOT NULL,
    value INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (scope, window)
);
CREATE TABLE IF NOT EXISTS usage (
    scope TEXT NOT NULL,
    day TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    minute INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (scope, day)
);
CREATE TABLE IF NOT EXISTS audit (
    id TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    doc TEXT NOT NULL,
    target TEXT
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (at DESC, id DESC);
CREATE TABLE IF NOT EXISTS botstate (
    key TEXT PRIMARY KEY,
    etag TEXT NOT NULL,
    doc TEXT NOT NULL,
    owner TEXT,
    expires_at REAL,
    conversation_id TEXT
);
"""
# Columns added to tables after their first release (files created before have the table without
# them): (table, column, type).
_ADDED_COLUMNS = (
    ("botstate", "owner", "TEXT"),
    ("botstate", "expires_at", "REAL"),
    ("botstate", "conversation_id", "TEXT"),
    # Who gave the feedback on a message (its `Feedback.user_id`; NULL without feedback, or for
    # feedback stored before raters were recorded): a user's export and erasure find the
    # feedback they gave on other people's messages by it.
    ("messages", "rater", "TEXT"),
    # An audit record's `target` (a person's pseudonym, a conversation, a scope): a user's data
    # export finds the records about them by it.
    ("audit", "target", "TEXT"),
    # Its `action` and `actor`: the audit log's filters find records by them.
    ("audit", "action", "TEXT"),
    ("audit", "actor", "TEXT"),
    # When a message or summary was last written (epoch seconds): the retention purge deletes
    # what was written more than RETENTION_DAYS ago, by the setting of the day. The expiry
    # earlier releases fixed at each write (`expires_at`) kept the setting of that write.
    ("messages", "written_at", "REAL"),
    ("conversations", "written_at", "REAL"),
)
_INDEXES_ON_ADDED_COLUMNS = (
    "CREATE INDEX IF NOT EXISTS botstate_by_owner ON botstate (owner)",
    "CREATE INDEX IF NOT EXISTS botstate_by_conversation ON botstate (conversation_id)",
    "CREATE INDEX IF NOT EXISTS messages_by_rater ON messages (rater) WHERE rater IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS audit_by_target ON audit (target, at, id)",
    "CREATE INDEX IF NOT EXISTS audit_by_action ON audit (action, at, id)",
    "CREATE INDEX IF NOT EXISTS audit_by_actor ON audit (actor, at, id)",
    # Rows an earlier release wrote, dated at open (`_date_rows_of_earlier_releases`): every
    # write sets `written_at`, so these stay empty and cost writes nothing.
    "CREATE INDEX IF NOT EXISTS messages_undated ON messages (conversation_id)"
    " WHERE written_at IS NULL",
    "CREATE INDEX IF NOT EXISTS conversations_undated ON conversations (conversation_id)"
    " WHERE written_at IS NULL",
)

# A summary's row: the owner, tenant and channel are written with its first delta (or a new
# start, `_WRITE_NEW_SUMMARY`, over an unreadable one); later deltas change the rest.
_WRITE_SUMMARY = (
    "INSERT INTO conversations (conversation_id, user_id, tenant_id, channel_id,"
    " last_activity_at, written_at, doc) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (conversation_id) DO UPDATE SET last_activity_at ="
    " excluded.last_activity_at, written_at = excluded.written_at, doc = excluded.doc"
)
_WRITE_NEW_SUMMARY = (
    "INSERT OR REPLACE INTO conversations (conversation_id, user_id, tenant_id, channel_id,"
    " last_activity_at, written_at, doc) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Brings a file written by an earlier release up to the schema (inside the write lock, so
    several workers opening it at once add each column once)."""
    for table, column, kind in _ADDED_COLUMNS:
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    for index in _INDEXES_ON_ADDED_COLUMNS:
        db.execute(index)
    # Records appended before the column was (by an earlier release, also one still running
    # beside this one in a rolling start): found by the index, few after the first open. One
    # whose text is not JSON keeps none (it cannot be read anyway).
    db.execute(
        "UPDATE audit SET target = json_extract(doc, '$.target')"
        " WHERE target IS NULL AND json_valid(doc)"
    )
    db.execute(
        "UPDATE audit SET action = json_extract(doc, '$.action'),"
        " actor = json_extract(doc, '$.actor') WHERE action IS NULL AND json_valid(doc)"
    )


def _audit_conditions(query: AuditQuery) -> tuple[list[str], list[Any]]:
    """The WHERE conditions (ANDed) and their parameters of an audit log query. A record whose
    document cannot be read keeps the columns it was written with, so paging still passes it."""
    conditions: list[str] = []
    params: list[Any] = []
    if query.action is not None:
        conditions.append("action = ?")
        params.append(query.action)
    elif query.except_actions:
        marks = ", ".join("?" * len(query.except_actions))
        conditions.append(f"(action IS NULL OR action NOT IN ({marks}))")
        params += query.except_actions
    if query.actor is not None:
        conditions.append("actor = ?")
        params.append(query.actor)
    if query.targets:
        # `subjects` is in the document only: a record that names the person besides its
        # target (a transcript view names the conversation's owner) is found by reading it.
        marks = ", ".join("?" * len(query.targets))
        conditions.append(
            f"(target IN ({marks}) OR EXISTS (SELECT 1 FROM json_each("  # noqa: S608
            f"CASE WHEN json_valid(doc) THEN doc END, '$.subjects') WHERE value IN ({marks})))"
        )
        params += [*query.targets, *query.targets]
    if query.since is not None:
        conditions.append("at >= ?")
        params.append(_iso(query.since))
    if query.until is not None:
        conditions.append("at < ?")
        params.append(_iso(query.until))
    return conditions, params


def _date_rows_of_earlier_releases(db: sqlite3.Connection) -> None:
    """Messages and summaries an earlier release wrote have no `written_at`. Their last write
    is their fixed expiry less the `ttl` their document was written with (a release with
    RETENTION_DAYS on wrote both); rows written while it was 0 have neither and are dated by
    their stored time: a message's creation, a summary's last activity. A row with no time
    that can be read stays undated: kept, not lost. The expiry goes: it held the setting of
    that write, and the purge now counts from `written_at` by the setting of the day. Found by
    the partial indexes, so an open after the first finds none."""
    for table, stored_time in (
        ("messages", "json_extract(doc, '$.createdAt')"),
        ("conversations", "last_activity_at"),
    ):
        db.execute(
            f"UPDATE {table} SET written_at = CASE WHEN json_valid(doc) THEN"  # noqa: S608
            " coalesce(expires_at - json_extract(doc, '$.ttl'),"
            f" (julianday({stored_time}) - 2440587.5) * 86400.0) END, expires_at = NULL"
            " WHERE written_at IS NULL"
        )


def _iso(value: datetime) -> str:
    """Times as compared in SQL (list filters, cursors, audit order): always UTC, so string
    order is time order (`+09:00` times compared as strings are hours off). UTC isoformat sorts
    correctly although it drops zero microseconds (`...:05+00:00` < `...:05.250000+00:00`,
    as `+` < `.`), and it is the form rows have always been written in from UTC times, so
    existing rows need no rewrite."""
    return as_utc(value).isoformat()


class _Worker:
    """One thread running calls in the order they were submitted, each answered on the loop that
    submitted it. A call whose caller was cancelled before it started is skipped (as a
    ThreadPoolExecutor does)."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[
            tuple[Callable[[], Any], asyncio.Future[Any], str | None, asyncio.AbstractEventLoop]
            | None
        ] = queue.SimpleQueue()
        # Calls submitted and not yet answered on the loop, by order key (changed on the loop
        # only): the loop may run a call itself only while none with its key is here, or that
        # call would overtake them.
        self._pending: Counter[str | None] = Counter()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def holds(self, order: str) -> bool:
        """Whether a call with this order key is queued or running here."""
        return order in self._pending

    def run(self, fn: Callable[[], T], order: str | None = None) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending[order] += 1
        self._calls.put((fn, future, order, loop))
        return future

    async def stop(self) -> None:
        """Let the calls already submitted finish, then end the thread (waited for off the
        loop: a last statement may wait for another process's write lock)."""
        self._calls.put(None)
        await asyncio.to_thread(self._thread.join)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            fn, future, order, loop = call
            result: Any = None
            error: BaseException | None = None
            if not future.cancelled():
                try:
                    result = fn()
                except BaseException as exc:  # whatever it is, the caller gets it; the thread lives
                    error = exc
            self._answer(loop, future, order, result, error)

    def _answer(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        order: str | None,
        result: Any,
        error: BaseException | None,
    ) -> None:
        def settle() -> None:
            self._pending[order] -= 1
            if not self._pending[order]:
                del self._pending[order]
            if future.cancelled():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        # RuntimeError: the loop is closed, nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle)


class _Checkpointer:
    """Copies the write-ahead log into the database file on a thread of its own. PASSIVE never
    waits for, nor blocks, readers or writers; once the log is long, RESTART also takes the
    write lock and waits (briefly) until no reader uses the log, so the next write starts it
    over. Writers on the loop meanwhile get "busy" and hand their calls to the worker."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        every_seconds: float,
        watch: _FileWatch | None = None,
    ) -> None:
        self._connection = connection
        self._every_seconds = every_seconds
        # Checked here too, every FILE_CHECK_EVERY_SECONDS: readiness may never be asked (App
        # Service probes /healthz), and the operator should still read that the file went.
        self._watch = watch
        self._stopping = threading.Event()
        self._truncate = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        connection = self._connection
        next_check = time.monotonic() + FILE_CHECK_EVERY_SECONDS
        try:
            while not self._stopping.wait(self._every_seconds):
                if self._watch is not None and time.monotonic() >= next_check:
                    next_check = time.monotonic() + FILE_CHECK_EVERY_SECONDS
                    self._watch.check()
                truncate = self._truncate.is_set()
                self._truncate.clear()
                try:
                    if truncate:
                        busy, _, _ = connection.execute(
                            "PRAGMA wal_checkpoint(TRUNCATE)"
                        ).fetchone()
                        if busy:
                            self._truncate.set()
                        continue
                    _, log_pages, _ = connection.execute(
                        "PRAGMA wal_checkpoint(PASSIVE)"
                    ).fetchone()
                    if log_pages >= RESTART_LOG_AT_PAGES:
                        connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                except sqlite3.Error as exc:
                    # Busy or locked (another process's checkpoint): the next round copies them.
                    log.debug("a WAL checkpoint did not run: %s", type(exc).__name__)
                    if truncate:
                        self._truncate.set()
        finally:
            connection.close()

    def truncate_log(self) -> None:
        """Empty the log file at the next round (and the following ones until it works).
        A restarted log is written over from its start, but its old pages stay in the file
        until then: after an erasure they would still hold the erased words."""
        self._truncate.set()

    async def stop(self) -> None:
        self._stopping.set()
        await asyncio.to_thread(self._thread.join)


class _LogIndex:
    """Two numbers of the write-ahead log's shared index (the `-shm` file, in SQLite's documented
    wal-index header, native byte order): the pages in the log (mxFrame, byte 16) and those
    already copied into the database file (nBackfill, byte 96). Equal, the next write starts the
    log over, and SQLite syncs the log's header to disk in that write: it goes to the worker.
    Read without a lock: a stale answer costs one hop or one sync on the loop, nothing else.
    Read with `pread`, not a memory map: SQLite may truncate the file (a process opening it
    first), and touching a truncated map kills the process (SIGBUS)."""

    _PAGES = struct.Struct("=I")

    def __init__(self, path: Path) -> None:
        self._fd: int | None = None
        try:
            self._fd = os.open(f"{path}-shm", os.O_RDONLY)
        except OSError:
            log.warning("the SQLite log index could not be read", exc_info=True)

    def fully_copied(self) -> bool:
        if self._fd is None:
            return False
        header = os.pread(self._fd, 100, 0)
        if len(header) < 100:  # being set up by another process
            return False
        (log_pages,) = self._PAGES.unpack_from(header, 16)
        (copied,) = self._PAGES.unpack_from(header, 96)
        return bool(log_pages == copied)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _identity(name: str) -> tuple[int, int] | None:
    """Device and inode of the file at `name`; None when there is none."""
    try:
        found = os.stat(name)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return found.st_dev, found.st_ino


class _FileWatch:
    """Whether the store's files (the database, its log and the log's index) are still the ones
    at their paths. Removed (`rm chat.db*`) or replaced (another file moved onto the path, as a
    restore may) while open, SQLite goes on writing into the files it opened without an error,
    and all that is written from then on is lost when the app stops; a process opening the path
    meanwhile (a restarted worker) uses other files than this one. Device and inode are recorded
    once the store opened them rather than compared with SQLite's own descriptor (sqlite3 does
    not expose it; a descriptor of ours would drop this process's SQLite locks on the file when
    closed, since POSIX locks belong to the process). Said once, at ERROR, by whichever thread
    finds it first (readiness or the checkpoint thread); unusable from then on, until a
    restart."""

    def __init__(self, path: Path) -> None:
        self._files: dict[str, tuple[int, int]] = {}
        for name in (str(path), f"{path}-wal", f"{path}-shm"):
            with contextlib.suppress(OSError):
                if (known := _identity(name)) is not None:
                    self._files[name] = known
        self._lock = threading.Lock()
        self.problem: str | None = None

    def check(self) -> str | None:
        """What happened to the files, or None while they are the ones opened (a few stats)."""
        if self.problem is not None:
            return self.problem
        for name, known in self._files.items():
            try:
                found = _identity(name)
            except OSError:
                continue  # cannot tell (a permission, a network share): no news
            if found == known:
                continue
            how = "removed" if found is None else "replaced by another file"
            with self._lock:
                if self.problem is None:
                    self.problem = f"the SQLite file {name} was {how} while the app had it open"
                    log.error(
                        "%s: nothing stored from now on will be kept (it goes to the file"
                        " the app opened, no longer at that path); restart the app, which then"
                        " opens the file at that path",
                        self.problem,
                        extra={"event": "sqlite_file_gone", "file": name},
                    )
            return self.problem
        return None


class _WriteFailures:
    """Writes failing in a row for a reason of the file's (`_WRITE_FAILURE_REASONS`: the disk
    full, another process holding the write lock past the busy timeout, an I/O error), which
    readiness cannot see by reading (reads work on), and must not find out by writing (a probe
    every few seconds would take the write lock). After WRITE_FAILURES_NOT_READY of them the
    store is unavailable until a write succeeds, or, with no write since, until
    WRITE_FAILURES_KEPT_SECONDS after the last one: nothing then tells it still fails, and a
    store left unavailable would get no traffic to show it works again. Said once at ERROR, and
    at INFO when a write succeeds again. On the loop only."""

    def __init__(self) -> None:
        self._count = 0
        self._last = 0.0
        self._reason = ""
        self._reported = False

    def failed(self, error: sqlite3.Error) -> None:
        code = getattr(error, "sqlite_errorcode", None)
        reason = _WRITE_FAILURE_REASONS.get(code & 0xFF) if code is not None else None
        if reason is None:
            return
        self._count += 1
        self._last = time.monotonic()
        self._reason = reason
        if self._count >= WRITE_FAILURES_NOT_READY and not self._reported:
            self._reported = True
            log.error(
                "the SQLite store's last %d writes failed (%s): not ready until one succeeds",
                self._count,
                reason,
                extra={
                    "event": "sqlite_writes_failing",
                    "error": getattr(error, "sqlite_errorname", ""),
                },
            )

    def succeeded(self) -> None:
        if not self._count:
            return
        if self._reported:
            log.info(
                "the SQLite store writes again after %d failed writes",
                self._count,
                extra={"event": "sqlite_writes_recovered"},
            )
        self._count = 0
        self._reported = False

    def problem(self) -> str | None:
        recent = time.monotonic() - self._last < WRITE_FAILURES_KEPT_SECONDS
        if self._count >= WRITE_FAILURES_NOT_READY and recent:
            return f"the last {self._count} writes failed ({self._reason})"
        return None


def _open_failure(where: str, error: sqlite3.Error) -> str:
    """One line for an operator: which file, and whether locked, full or damaged (SQLite's
    result code name, never its message: that may quote a statement)."""
    code = getattr(error, "sqlite_errorcode", None)
    what = _OPEN_FAILURES.get(code & 0xFF) if code is not None else None
    name = getattr(error, "sqlite_errorname", None) or type(error).__name__
    return f"{where} {what or 'could not be opened'} ({name})"


def _atomic(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """`fn` in one write transaction. "Busy" comes from the BEGIN, before `fn` ran."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def _rater(message: Message) -> str | None:
    """The `rater` column of a message: who gave its feedback, NULL when nobody known did."""
    if message.feedback is None or not message.feedback.user_id:
        return None
    return message.feedback.user_id


def _is_busy(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def _lower_shared_summary(
    db: sqlite3.Connection, conversation_id: str, gone: list[Message | None]
) -> None:
    """After a user's erasure deleted `gone` from a conversation whose summary is someone else's
    (a shared one), in the same transaction: the summary without them, or no summary when no
    message of the conversation is left (its transcript is empty; a later turn starts a new
    one). The messages that stay may be unreadable or unattributed ones left for review."""
    row = db.execute(
        "SELECT doc FROM conversations WHERE conversation_id = ?", (conversation_id,)
    ).fetchone()
    if row is None:
        return
    left = db.execute(
        "SELECT 1 FROM messages WHERE conversation_id = ? LIMIT 1", (conversation_id,)
    ).fetchone()
    if left is None:
        db.execute("DELETE FROM conversations WHERE conversation_id = ?", (conversation_id,))
        return
    summary = readable_summary(row[0], conversation_id, UNLOWERED_UNREADABLE)
    if summary is None:
        return
    db.execute(
        "UPDATE conversations SET doc = ?, written_at = ? WHERE conversation_id = ?",
        (without_erased(summary, erased(gone)).to_json(), time.time(), conversation_id),
    )


def _clear_feedback_given(db: sqlite3.Connection, user_id: str) -> int:
    """In a user's erasure, after their messages went (in the same transaction): the feedback
    they gave on the messages that stay (other people's answers in shared conversations) is
    cleared, and each dislike among it taken off its conversation's summary, as taking it back
    would. How many were cleared. A message whose text is not JSON keeps it (logged): it cannot
    be changed without destroying it, and it may be someone else's."""
    return _clear_feedback(
        db, "SELECT conversation_id, id, doc FROM messages WHERE rater = ?", user_id
    )


def _clear_feedback(
    db: sqlite3.Connection,
    select: str,
    value: str,
    clears: Callable[[dict[str, Any]], bool] = lambda _: True,
    cleared_from: set[tuple[str, str]] | None = None,
) -> int:
    """The feedback on the messages `select` finds (conversation id, id, document, by `value`)
    whose document `clears` says so of is cleared, in the caller's transaction, and each
    dislike among it taken off its conversation's summary, as taking it back would; each
    message whose feedback went is added to `cleared_from`. How many were cleared. A message
    whose text is not JSON keeps it (logged): it cannot be changed without destroying it, and
    it may be someone else's."""
    cleared = 0
    dislikes: Counter[str] = Counter()
    for conversation_id, message_id, doc in db.execute(select, (value,)).fetchall():
        try:
            document = json.loads(doc)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            log.error(
                "an unreadable stored message kept the feedback of a user being erased",
                extra={"conversation": conversation_ref(conversation_id)},
            )
            continue
        if not clears(document):
            continue
        feedback = document.pop("feedback", None)
        if isinstance(feedback, dict) and feedback.get("reaction") == "dislike":
            dislikes[conversation_id] += 1
        db.execute(
            "UPDATE messages SET doc = ?, rater = NULL, written_at = ?"
            " WHERE conversation_id = ? AND id = ?",
            (json.dumps(document), time.time(), conversation_id, message_id),
        )
        if cleared_from is not None:
            cleared_from.add((conversation_id, message_id))
        cleared += 1
    for conversation_id, count in sorted(dislikes.items()):
        row = db.execute(
            "SELECT doc FROM conversations WHERE conversation_id = ?", (conversation_id,)
        ).fetchone()
        summary = readable_summary(row[0], conversation_id, UNLOWERED_UNREADABLE) if row else None
        if summary is not None:
            db.execute(
                "UPDATE conversations SET doc = ?, written_at = ? WHERE conversation_id = ?",
                (
                    without_erased(summary, Erased(dislikes=count)).to_json(),
                    time.time(),
                    conversation_id,
                ),
            )
    return cleared


def _delete_late_in(
    db: sqlite3.Connection,
    conversation_id: str,
    theirs: str | None,
    before: datetime,
    gone: set[tuple[str, str]],
) -> tuple[int, str | None]:
    """An erasure's second pass in one conversation (`storage.late`): its messages from turns
    that began before `before` (only `theirs`, the erased user's, when not None) are deleted,
    then its summary is deleted when no message is left, or else lowered by them. How many
    messages were deleted, and the owner of the summary when it was deleted."""
    every: dict[str, Message | None] = {}
    candidates: list[str] = []
    for message_id, owner, doc in db.execute(
        "SELECT id, user_id, doc FROM messages WHERE conversation_id = ?", (conversation_id,)
    ).fetchall():
        mine = theirs is None or owner == theirs
        outcome = LATE_UNREADABLE_MESSAGE if mine else SKIPPED
        every[message_id] = readable_message(doc, conversation_id, outcome)
        if mine:
            candidates.append(message_id)
    late = [m for m in candidates if stems_from_before(every[m], every, before)]
    for message_id in late:
        db.execute(
            "DELETE FROM messages WHERE conversation_id = ? AND id = ?",
            (conversation_id, message_id),
        )
        gone.add((conversation_id, message_id))
    row = db.execute(
        "SELECT user_id, doc FROM conversations WHERE conversation_id = ?", (conversation_id,)
    ).fetchone()
    if row is None:
        return len(late), None
    if len(late) == len(every):
        db.execute("DELETE FROM conversations WHERE conversation_id = ?", (conversation_id,))
        return len(late), str(row[0])
    summary = readable_summary(row[1], conversation_id, UNLOWERED_UNREADABLE)
    lowered = None if summary is None else summary_after(summary, [every[m] for m in late], every)
    if lowered is not None:
        db.execute(
            "UPDATE conversations SET doc = ?, written_at = ? WHERE conversation_id = ?",
            (lowered.to_json(), time.time(), conversation_id),
        )
    return len(late), None


def _delete_late_states(db: sqlite3.Connection, select: str, value: str, before: datetime) -> int:
    """An erasure's second pass: the state documents `select` finds that hold what a turn from
    before `before` stored (`storage.late.state_from_before`)."""
    deleted = 0
    for key, doc in db.execute(select, (value,)).fetchall():
        try:
            document = json.loads(doc)
        except ValueError:
            continue
        if isinstance(document, dict) and state_from_before(document, before):
            deleted += db.execute("DELETE FROM botstate WHERE key = ?", (key,)).rowcount
    return deleted


class _OwnerEvidence:
    """`storage.botstate.OwnerEvidence` from the SQLite file, on the worker (store open)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def conversation_owners(self, exact: str | None, start: str) -> list[tuple[str, str]]:
        select = "SELECT conversation_id, user_id FROM conversations WHERE conversation_id"
        args: tuple[Any, ...]
        if exact is not None:
            sql, args = f"{select} = ?", (exact,)
        else:
            # GLOB with a fixed start reads a range of the primary key (LIKE would ignore case).
            pattern = re.sub(r"([*?\[])", r"[\1]", start) + "*"
            sql, args = f"{select} GLOB ? LIMIT ?", (pattern, OWNER_CANDIDATES + 1)
        rows = await self._store._run(lambda db: db.execute(sql, args).fetchall())
        return [(str(conversation_id), str(user_id)) for conversation_id, user_id in rows]

    async def wrote_alone(self, conversation_id: str, user_id: str) -> bool:
        row = await self._store._run(
            lambda db: db.execute(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE conversation_id = ? AND user_id = ?),"
                " EXISTS (SELECT 1 FROM messages WHERE conversation_id = ? AND user_id != ?)",
                (conversation_id, user_id, conversation_id, user_id),
            ).fetchone()
        )
        return bool(row[0]) and not row[1]


class SqliteStore:
    name = "sqlite"

    def __init__(
        self,
        path: Path,
        retention_days: int = 0,
        checkpoint_every_seconds: float | None = CHECKPOINT_EVERY_SECONDS,
    ) -> None:
        """`checkpoint_every_seconds` None: no checkpoint thread, so every call runs on the
        worker, which checkpoints alone (SQLite's default; `bench.store_writes` compares)."""
        self._path = path
        self._checkpoint_every_seconds = checkpoint_every_seconds
        self._retention_seconds = retention_days * 86400
        self._worker: _Worker | None = None
        self._checkpointer: _Checkpointer | None = None
        self._conn: sqlite3.Connection | None = None  # the worker's
        self._loop_conn: sqlite3.Connection | None = None  # never waits; None: worker only
        self._log_index: _LogIndex | None = None
        self._watch: _FileWatch | None = None
        self._write_failures = _WriteFailures()
        self._window_messages = MessageDecoder(_DECODED_MESSAGES)
        # Where the short calls ran (the bench reports them).
        self.short_calls_on_loop = 0
        self.short_calls_on_worker = 0

    # --- lifecycle

    async def open(self) -> None:
        # The operator's path: said so, in one line, rather than a traceback from deep inside.
        where = f"SQLITE_PATH (default: DATA_DIR/chat.db): the SQLite file {self._path}"
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"{where}: cannot create its folder ({exc.strerror})"
            ) from None
        self._worker = _Worker("sqlite")
        # Connecting may wait for other processes (schema, recovery): on the worker.
        try:
            self._conn = await self._worker.run(self._connect)
        except sqlite3.Error as exc:
            await self._worker.stop()
            self._worker = None
            if isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc):
                raise ConfigurationError(f"{where} cannot be opened ({exc})") from None
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_READONLY:
                raise ConfigurationError(f"{where} cannot be written ({exc})") from None
            raise StoreError(_open_failure(where, exc)) from exc
        self._watch = await asyncio.to_thread(_FileWatch, self._path)
        try:
            await self._name_legacy_owners()
        except BaseException:
            await self.close()
            raise
        if self._checkpoint_every_seconds is None:
            return
        try:
            checkpoint_conn, loop_conn = await self._worker.run(self._connect_helpers)
        except sqlite3.Error:
            # The worker's own checkpoints still keep the log bounded, only slower.
            log.warning("the SQLite checkpoint thread could not open the file", exc_info=True)
            return
        self._checkpointer = _Checkpointer(
            checkpoint_conn, self._checkpoint_every_seconds, self._watch
        )
        self._loop_conn = loop_conn
        self._log_index = await asyncio.to_thread(_LogIndex, self._path)

    def _connect(self) -> sqlite3.Connection:
        # Several processes opening a new file at once (APP_WORKERS): switching it to WAL and
        # creating the schema need the write lock, and SQLite answers "locked" at once, without
        # waiting, to one of two connections that try to upgrade their locks together. A lock
        # another process holds answers "locked" after the busy timeout: not retried past it,
        # or the start would wait 50 busy timeouts to say so.
        started = time.monotonic()
        for attempt in range(_OPEN_ATTEMPTS):
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            try:
                conn.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_SECONDS * 1000)}")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA secure_delete=ON")
                conn.executescript(_SCHEMA)
            except sqlite3.OperationalError as exc:
                conn.close()
                waited = time.monotonic() - started
                if (
                    "locked" not in str(exc)
                    or attempt == _OPEN_ATTEMPTS - 1
                    or waited >= _BUSY_TIMEOUT_SECONDS
                ):
                    raise
                time.sleep(random.uniform(0.01, 0.1))  # noqa: S311 (jitter, not a secret)
                continue
            _atomic(conn, _add_missing_columns)
            _atomic(conn, _date_rows_of_earlier_releases)
            return conn
        raise AssertionError("unreachable: the last attempt raises")

    def _connect_helpers(self) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        """The checkpoint thread's connection (waits up to 0.1 s for the write lock and the
        readers when it restarts the log) and the loop's (never waits, never checkpoints)."""
        checkpoint_conn = sqlite3.connect(
            self._path, timeout=0.1, isolation_level=None, check_same_thread=False
        )
        try:
            checkpoint_conn.execute("PRAGMA synchronous=NORMAL")
            checkpoint_conn.execute("PRAGMA secure_delete=ON")
            loop_conn = sqlite3.connect(
                self._path, timeout=0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error:
            checkpoint_conn.close()
            raise
        loop_conn.execute("PRAGMA synchronous=NORMAL")
        loop_conn.execute("PRAGMA secure_delete=ON")
        loop_conn.execute("PRAGMA wal_autocheckpoint=0")
        return checkpoint_conn, loop_conn

    async def _name_legacy_owners(self) -> None:
        """State rows a release before owners were recorded wrote (owner NULL) get the owner
        `storage.botstate.legacy_owners` can tell, so deleting or exporting their user finds
        them. Only the owner column changes (not the document or its ETag): a turn writing the
        row meanwhile stamps its owner itself. Once: a marker says it was done. Not being able to
        look is no reason not to start: the user's next message stamps the owner too."""

        def ownerless(db: sqlite3.Connection) -> list[Any] | None:
            searched = "SELECT 1 FROM botstate WHERE key = ?"
            if db.execute(searched, (LEGACY_OWNERS_SEARCHED,)).fetchone() is not None:
                return None
            return db.execute("SELECT key, doc, etag FROM botstate WHERE owner IS NULL").fetchall()

        try:
            rows = await self._run(ownerless)
            if rows is None:
                return
            documents: list[tuple[str, dict[str, Any]]] = []
            etags: dict[str, str] = {}
            for key, doc, etag in rows:
                with contextlib.suppress(ValueError):
                    document = json.loads(doc)
                    if isinstance(document, dict):
                        documents.append((key, document))
                        etags[key] = etag
            owners, unattributed = await legacy_owners(documents, _OwnerEvidence(self))

            def name(db: sqlite3.Connection) -> int:
                named = sum(
                    db.execute(
                        "UPDATE botstate SET owner = ? WHERE key = ? AND owner IS NULL"
                        " AND etag = ?",
                        (owner, key, etags[key]),
                    ).rowcount
                    for key, owner in owners.items()
                )
                marker = {"named": named, "unattributed": unattributed}
                db.execute(
                    "INSERT OR REPLACE INTO botstate (key, etag, doc) VALUES (?, ?, ?)",
                    (LEGACY_OWNERS_SEARCHED, str(time.time_ns()), json.dumps(marker)),
                )
                return named

            named = await self._run(lambda db: _atomic(db, name)) if owners or unattributed else 0
        except StoreError:
            log.warning("the owners of bot state stored by an earlier release were not looked up")
            return
        report_legacy_owners(named, unattributed)

    async def close(self) -> None:
        if self._worker is None:
            return
        if self._checkpointer is not None:
            await self._checkpointer.stop()
            self._checkpointer = None
        # No more calls on the loop. Closed on the worker: the last connection to close
        # checkpoints and removes the log.
        loop_conn, self._loop_conn = self._loop_conn, None
        for conn in (loop_conn, self._conn):
            if conn is not None:
                await self._worker.run(conn.close)
        self._conn = None
        if self._log_index is not None:
            self._log_index.close()
            self._log_index = None
        await self._worker.stop()
        self._worker = None

    async def ping(self) -> None:
        """Readiness: the worker answers (a call behind the others), the file can be read (a
        read transaction, which never waits for the write lock: `SELECT 1` read nothing), its
        files are still the ones at their paths, and writes are not failing in a row."""
        watch = self._watch

        def probe(db: sqlite3.Connection) -> str | None:
            db.execute("PRAGMA schema_version").fetchone()
            return watch.check() if watch is not None else None

        problem = await self._run(probe) or self._write_failures.problem()
        if problem is not None:
            raise StoreUnavailable(problem)

    async def _run(self, fn: Callable[[sqlite3.Connection], T], order: str | None = None) -> T:
        """On the worker, after every call submitted before it."""
        worker, conn = self._worker, self._conn
        if worker is None or conn is None:
            raise StoreError("the SQLite store is not open")

        def call() -> tuple[T, bool]:
            changes = conn.total_changes
            result = fn(conn)
            return result, conn.total_changes != changes

        try:
            result, wrote = await worker.run(call, order)
        except sqlite3.Error as exc:
            self._write_failures.failed(exc)
            raise StoreError(f"SQLite error: {type(exc).__name__}") from exc
        if wrote:
            self._write_failures.succeeded()
        return result

    async def _run_short(
        self, fn: Callable[[sqlite3.Connection], T], *, writes: bool, order: str
    ) -> T:
        """A statement or a short transaction: at once on the loop, unless a call with the same
        order key is queued on the worker, a write would start the log over (and sync it), or
        SQLite would have to wait for a lock; then as `_run`. Calls with one order key run in
        the order they were made (the caller may start a read without waiting for its write)."""
        conn, worker, log_index = self._loop_conn, self._worker, self._log_index
        if (
            conn is not None
            and worker is not None
            and not worker.holds(order)
            and not (writes and log_index is not None and log_index.fully_copied())
        ):
            changes = conn.total_changes
            try:
                result = fn(conn)
            except sqlite3.Error as exc:
                if not _is_busy(exc):
                    self._write_failures.failed(exc)
                    raise StoreError(f"SQLite error: {type(exc).__name__}") from exc
            else:
                self.short_calls_on_loop += 1
                if conn.total_changes != changes:
                    self._write_failures.succeeded()
                return result
        self.short_calls_on_worker += 1
        return await self._run(fn, order)

    def _expires_at(self) -> float | None:
        """The fixed expiry of a state document written with `expires` (a message waiting for
        consent, a welcome marker): RETENTION_DAYS from now. Messages and summaries have none:
        they are dated (`written_at`) and go by the setting of the day (`purge_expired`)."""
        return time.time() + self._retention_seconds if self._retention_seconds else None

    # --- messages

    async def add_message(self, message: Message) -> bool:
        def insert(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT OR IGNORE INTO messages"
                " (conversation_id, id, seq, user_id, written_at, doc, rater)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    message.conversation_id,
                    message.id,
                    message.seq,
                    message.user_id,
                    time.time(),
                    message.to_json(),
                    _rater(message),
                ),
            )
            return cursor.rowcount == 1

        return await self._run_short(insert, writes=True, order=message.conversation_id)

    async def replace_message(self, message: Message) -> None:
        withdrawal = message.status is MessageStatus.WITHDRAWN

        def replace(db: sqlite3.Connection) -> None:
            # A write renews the retention, as a Cosmos item's counts from its last write.
            db.execute(
                "UPDATE messages SET doc = ?, seq = ?, written_at = ?, rater = ?"
                " WHERE conversation_id = ? AND id = ?"
                " AND (? OR json_extract(doc, '$.status') IS NOT ?)",
                (
                    message.to_json(),
                    message.seq,
                    time.time(),
                    _rater(message),
                    message.conversation_id,
                    message.id,
                    withdrawal,
                    MessageStatus.WITHDRAWN.value,
                ),
            )

        await self._run_short(replace, writes=True, order=message.conversation_id)

    async def get_message(self, conversation_id: str, message_id: str) -> Message | None:
        row = await self._run_short(
            lambda db: db.execute(
                "SELECT doc FROM messages WHERE conversation_id = ? AND id = ?",
                (conversation_id, message_id),
            ).fetchone(),
            writes=False,
            order=conversation_id,
        )
        return readable_message(row[0], conversation_id, TAKEN_AS_MISSING) if row else None

    async def recent_messages(self, conversation_id: str, limit: int) -> list[Message]:
        rows = await self._run_short(
            lambda db: db.execute(
                "SELECT doc FROM messages WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?",
                (conversation_id, limit),
            ).fetchall(),
            writes=False,
            order=conversation_id,
        )
        return self._window_messages.readable((row[0] for row in reversed(rows)), conversation_id)

    async def conversation_messages(self, conversation_id: str) -> list[Message]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT doc FROM messages WHERE conversation_id = ? ORDER BY seq",
                (conversation_id,),
            ).fetchall()
        )
        return readable_messages((row[0] for row in rows), conversation_id)

    def conversation_message_pages(
        self, conversation_id: str, page_size: int
    ) -> AsyncGenerator[list[Message], None]:
        return in_pages(self._conversation_messages(conversation_id, page_size), page_size)

    async def _conversation_messages(
        self, conversation_id: str, page_size: int
    ) -> AsyncGenerator[Message, None]:
        select = "SELECT seq, id, doc FROM messages WHERE conversation_id = ?"
        order = " ORDER BY seq, id LIMIT ?"
        rows = self._rows_in_pages(
            select + order,
            select + " AND (seq, id) > (?, ?)" + order,
            (conversation_id,),
            2,
            page_size,
        )
        async for _, _, doc in rows:
            message = readable_message(doc, conversation_id, SKIPPED)
            if message is not None:
                yield message

    async def set_feedback(
        self, conversation_id: str, message_id: str, feedback: Feedback | FeedbackUpdate
    ) -> FeedbackChange | None:
        def update(db: sqlite3.Connection) -> FeedbackChange | None:
            # The read and the write in one transaction: the feedback replaced is the stored one.
            row = db.execute(
                "SELECT doc FROM messages WHERE conversation_id = ? AND id = ?",
                (conversation_id, message_id),
            ).fetchone()
            stored = readable_message(row[0], conversation_id, TAKEN_AS_MISSING) if row else None
            if stored is None:
                return None
            given = feedback if isinstance(feedback, Feedback) else feedback(stored.feedback)
            message = stored.model_copy(update={"feedback": given})
            # A write renews the retention, as a Cosmos item's counts from its last write.
            db.execute(
                "UPDATE messages SET doc = ?, written_at = ?, rater = ?"
                " WHERE conversation_id = ? AND id = ?",
                (
                    message.to_json(),
                    time.time(),
                    _rater(message),
                    conversation_id,
                    message_id,
                ),
            )
            return FeedbackChange(message=message, previous=stored.feedback)

        return await self._run_short(
            lambda db: _atomic(db, update), writes=True, order=conversation_id
        )

    async def revise_message(self, revision: MessageRevision) -> RevisionOutcome:
        """In one transaction: the message, its answer's mark and the summary's title."""
        conversation_id = revision.conversation_id

        def revise(db: sqlite3.Connection) -> RevisionOutcome:
            row = db.execute(
                "SELECT doc FROM messages WHERE conversation_id = ? AND id = ?",
                (conversation_id, revision.message_id),
            ).fetchone()
            if row is None:
                return "missing"
            stored = readable_message(row[0], conversation_id, UNREVISED_UNREADABLE)
            if stored is None:
                return "unreadable"
            message = revised(stored, revision)
            if isinstance(message, str):
                return message
            changed = [message]
            if revision.answer_id:
                answer = db.execute(
                    "SELECT doc FROM messages WHERE conversation_id = ? AND id = ?",
                    (conversation_id, revision.answer_id),
                ).fetchone()
                readable = answer and readable_message(answer[0], conversation_id, SKIPPED)
                if readable:
                    changed.append(readable.model_copy(update={"prompt_changed": True}))
            for each in changed:
                # A write renews the retention, as a Cosmos item's counts from its last write.
                db.execute(
                    "UPDATE messages SET doc = ?, written_at = ?"
                    " WHERE conversation_id = ? AND id = ?",
                    (
                        each.to_json(),
                        time.time(),
                        conversation_id,
                        each.id,
                    ),
                )
            summary_row = db.execute(
                "SELECT doc FROM conversations WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
            summary = summary_row and readable_summary(
                summary_row[0], conversation_id, UNREVISED_UNREADABLE
            )
            after = summary and retitled(summary, stored, revision)
            if after:
                db.execute(
                    "UPDATE conversations SET doc = ?, written_at = ? WHERE conversation_id = ?",
                    (after.to_json(), time.time(), conversation_id),
                )
            return outcome_of(revision)

        outcome = await self._run_short(
            lambda db: _atomic(db, revise), writes=True, order=conversation_id
        )
        if outcome in ("withdrawn", "edited"):
            # The old text must not stay in memory, nor in the write-ahead log's old pages.
            self._window_messages.forget(
                lambda m: m.conversation_id == conversation_id and m.id == revision.message_id
            )
            await self._erased()
        return outcome

    # --- conversation summaries

    async def apply_summary_delta(self, delta: SummaryDelta) -> None:
        """A stored summary that cannot be read starts over from this delta (logged), as a new
        conversation's does, in the same transaction: every later turn would fail on it
        otherwise. A new start writes the whole row (the columns the list filters on too)."""

        def apply(db: sqlite3.Connection) -> None:
            row = db.execute(
                "SELECT doc FROM conversations WHERE conversation_id = ?",
                (delta.conversation_id,),
            ).fetchone()
            stored = None
            if row is not None:
                stored = readable_summary(row[0], delta.conversation_id, RESTARTED_UNREADABLE)
            summary = apply_delta(stored if stored is not None else new_summary(delta), delta)
            db.execute(
                _WRITE_SUMMARY if stored is not None else _WRITE_NEW_SUMMARY,
                (
                    summary.conversation_id,
                    summary.user_id,
                    summary.tenant_id,
                    summary.channel_id,
                    _iso(summary.last_activity_at),
                    time.time(),
                    summary.to_json(),
                ),
            )

        await self._run_short(
            lambda db: _atomic(db, apply), writes=True, order=delta.conversation_id
        )

    async def get_summary(self, user_id: str, conversation_id: str) -> ConversationSummary | None:
        summary = await self.find_summary(conversation_id)
        return summary if summary is not None and summary.user_id == user_id else None

    async def find_summary(self, conversation_id: str) -> ConversationSummary | None:
        row = await self._run_short(
            lambda db: db.execute(
                "SELECT doc FROM conversations WHERE conversation_id = ?", (conversation_id,)
            ).fetchone(),
            writes=False,
            order=conversation_id,
        )
        return ConversationSummary.model_validate_json(row[0]) if row else None

    async def list_summaries(
        self, query: SummaryQuery, page_size: int, continuation: str | None = None
    ) -> Page:
        clauses: list[str] = []
        params: list[Any] = []
        if query.user_ids is not None:
            marks = ", ".join("?" * len(query.user_ids))
            clause = f"user_id IN ({marks})"
            params.extend(query.user_ids)
            if query.with_shared:
                # Conversations someone else owns that hold one of their messages (along
                # messages_by_user), as `delete_user` finds them.
                clause = (
                    f"({clause} OR conversation_id IN"  # noqa: S608 - fixed clauses
                    f" (SELECT conversation_id FROM messages WHERE user_id IN ({marks})))"
                )
                params.extend(query.user_ids)
            clauses.append(clause)
        for column, value in (
            ("tenant_id", query.tenant_id),
            ("channel_id", query.channel_id),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.since is not None:
            clauses.append("last_activity_at >= ?")
            params.append(_iso(query.since))
        if query.until is not None:
            clauses.append("last_activity_at < ?")
            params.append(_iso(query.until))
        if continuation:
            at, conversation_id = decode_keyset(continuation)
            clauses.append(
                "(last_activity_at < ? OR (last_activity_at = ? AND conversation_id < ?))"
            )
            params.extend([at, at, conversation_id])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT conversation_id, doc FROM conversations {where} "  # noqa: S608 - fixed clauses
            "ORDER BY last_activity_at DESC, conversation_id DESC"
        )

        def scan(db: sqlite3.Connection) -> Page:
            # JSON fields are filtered in Python; the keyset cursor keeps pages stable anyway.
            # One match past a full page is looked for, so a page that ends with the last match
            # has no continuation (as in the Cosmos store, which reads one item ahead). A row
            # that cannot be read is skipped (and logged): a cursor always names a readable one.
            items: list[ConversationSummary] = []
            for stored_id, doc in db.execute(sql, params):
                summary = readable_summary(doc, stored_id)
                if summary is None or not matches(summary, query):
                    continue
                if len(items) == page_size:
                    last = items[-1]
                    token = encode_cursor(_iso(last.last_activity_at), last.conversation_id)
                    return Page(items=items, continuation=token)
                items.append(summary)
            return Page(items=items, continuation=None)

        return await self._run(scan)

    # --- counters (quotas and rate limits)

    async def add_to_counter(
        self,
        scope: str,
        window: str,
        amount: int,
        limit: int,
        ttl_seconds: int,
        *,
        write_id: str | None = None,
        resend: bool = False,
    ) -> CounterResult:
        """`write_id` is not needed, and a `resend` is applied (`CounterStore`): one
        transaction, rolled back on failure."""

        def add(db: sqlite3.Connection) -> CounterResult:
            now = time.time()
            row = db.execute(
                "SELECT value, expires_at FROM counters WHERE scope = ? AND window = ?",
                (scope, window),
            ).fetchone()
            current = int(row[0]) if row and row[1] > now else 0
            if amount > 0 and limit and current + amount > limit:
                return CounterResult(value=current, allowed=False)
            value = current + amount
            db.execute(
                "INSERT INTO counters (scope, window, value, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (scope, window) DO UPDATE SET value = excluded.value,"
                " expires_at = excluded.expires_at",
                (scope, window, value, now + ttl_seconds),
            )
            return CounterResult(value=value, allowed=True)

        return await self._run_short(lambda db: _atomic(db, add), writes=True, order=scope)

    async def read_counter(self, scope: str, window: str) -> int:
        row = await self._run_short(
            lambda db: db.execute(
                "SELECT value FROM counters WHERE scope = ? AND window = ? AND expires_at > ?",
                (scope, window, time.time()),
            ).fetchone(),
            writes=False,
            order=scope,
        )
        return int(row[0]) if row else 0

    async def add_usage(
        self,
        scope: str,
        day: str,
        change: UsageChange,
        *,
        write_id: str | None = None,
        resend: bool = False,
    ) -> UsageResult:
        """`write_id` is not needed, and a `resend` is applied (`CounterStore`): one
        transaction, rolled back on failure."""

        def add(db: sqlite3.Connection) -> UsageResult:
            now = time.time()
            current = self._usage_row(db, scope, day, now)
            result = apply_usage(current or UsageCounts(), change)
            # A settlement (or a request given back) of a day whose document is gone has nothing
            # left to correct.
            if result.allowed and (current is not None or change.requests > 0 or change.tokens > 0):
                counts = result.counts
                db.execute(
                    "INSERT INTO usage (scope, day, tokens, minute, requests, expires_at)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, day) DO UPDATE SET"
                    " tokens = excluded.tokens, minute = excluded.minute,"
                    " requests = excluded.requests, expires_at = excluded.expires_at",
                    (
                        scope,
                        day,
                        counts.tokens,
                        counts.minute,
                        counts.requests,
                        now + change.ttl_seconds,
                    ),
                )
            return result

        # BEGIN IMMEDIATE: the read and the write are one atomic step across processes too.
        return await self._run_short(lambda db: _atomic(db, add), writes=True, order=scope)

    async def read_usage(self, scope: str, day: str) -> UsageCounts:
        counts = await self._run_short(
            lambda db: self._usage_row(db, scope, day, time.time()), writes=False, order=scope
        )
        return counts or UsageCounts()

    @staticmethod
    def _usage_row(db: sqlite3.Connection, scope: str, day: str, now: float) -> UsageCounts | None:
        row = db.execute(
            "SELECT tokens, minute, requests FROM usage"
            " WHERE scope = ? AND day = ? AND expires_at > ?",
            (scope, day, now),
        ).fetchone()
        if row is None:
            return None
        return UsageCounts(tokens=int(row[0]), minute=int(row[1]), requests=int(row[2]))

    async def scope_documents(self, scopes: Sequence[str]) -> list[dict[str, Any]]:
        def read(db: sqlite3.Connection) -> list[dict[str, Any]]:
            now = time.time()
            found: list[dict[str, Any]] = []
            for scope in sorted(set(scopes)):
                for day, tokens, minute, requests in db.execute(
                    "SELECT day, tokens, minute, requests FROM usage"
                    " WHERE scope = ? AND expires_at > ? ORDER BY day",
                    (scope, now),
                ):
                    counts = {"tokens": tokens, "minute": minute, "requests": requests}
                    found.append({"type": "usage", "scope": scope, "day": day, **counts})
                for window, total in db.execute(
                    "SELECT window, value FROM counters"
                    " WHERE scope = ? AND expires_at > ? ORDER BY window",
                    (scope, now),
                ):
                    counter = {"type": "counter", "scope": scope, "window": window}
                    found.append({**counter, "total": total})
            return found

        return await self._run(read)

    async def delete_scopes(self, scopes: Sequence[str]) -> int:
        def delete(db: sqlite3.Connection) -> int:
            deleted = 0
            for scope in sorted(set(scopes)):
                deleted += db.execute("DELETE FROM usage WHERE scope = ?", (scope,)).rowcount
                deleted += db.execute("DELETE FROM counters WHERE scope = ?", (scope,)).rowcount
            return deleted

        deleted = await self._run(lambda db: _atomic(db, delete))
        if deleted:
            await self._erased()  # a user's scope holds their id
        return deleted

    # --- audit

    async def append_audit(self, record: AuditRecord) -> None:
        await self._run_short(
            lambda db: db.execute(
                "INSERT INTO audit (id, at, doc, target, action, actor) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    _iso(record.at),
                    record.to_json(),
                    record.target,
                    record.action,
                    record.actor,
                ),
            ),
            writes=True,
            order=_AUDIT,
        )

    async def list_audit(
        self, limit: int, continuation: str | None = None, query: AuditQuery | None = None
    ) -> tuple[list[AuditRecord], str | None]:
        conditions, params = _audit_conditions(query or AuditQuery())
        if continuation:
            at, record_id = decode_keyset(continuation)
            conditions.append("(at < ? OR (at = ? AND id < ?))")
            params += [at, at, record_id]
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = await self._run(
            lambda db: db.execute(
                f"SELECT at, id, doc FROM audit {where} ORDER BY at DESC, id DESC LIMIT ?",  # noqa: S608
                [*params, limit + 1],
            ).fetchall()
        )
        # A record that cannot be read is skipped (and logged by its id), so a page may hold
        # fewer than `limit`. The cursor is the last row read, readable or not, from its own
        # columns: the next page starts right after it, repeating and losing nothing.
        found = (readable_audit_record(doc, str(row_id)) for _, row_id, doc in rows[:limit])
        records = [record for record in found if record is not None]
        token = None
        if len(rows) > limit:
            last_at, last_id, _ = rows[limit - 1]
            token = encode_cursor(str(last_at), str(last_id))
        return records, token

    def audit_records_about(
        self, targets: Sequence[str], page_size: int
    ) -> AsyncGenerator[list[AuditRecord], None]:
        records = self._audit_records_about(list(dict.fromkeys(targets)), page_size)
        return in_pages(records, page_size)

    async def _audit_records_about(
        self, targets: list[str], page_size: int
    ) -> AsyncGenerator[AuditRecord, None]:
        if not targets:
            return
        conditions, params = _audit_conditions(AuditQuery(targets=targets))
        select = f"SELECT at, id, doc FROM audit WHERE {' AND '.join(conditions)}"  # noqa: S608
        order = " ORDER BY at DESC, id DESC LIMIT ?"
        rows = self._rows_in_pages(
            select + order, select + " AND (at, id) < (?, ?)" + order, tuple(params), 2, page_size
        )
        async for _, record_id, doc in rows:
            record = readable_audit_record(doc, str(record_id))
            if record is not None:
                yield record

    # --- bot state

    async def read_state(self, keys: list[str]) -> dict[str, tuple[dict[str, Any], str]]:
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        # Past its expiry a document is gone, as Cosmos DB stops returning an item whose ttl
        # has passed; the hourly purge only takes its row away.
        rows = await self._run_short(
            lambda db: db.execute(
                f"SELECT key, doc, etag FROM botstate WHERE key IN ({marks})"  # noqa: S608
                " AND (expires_at IS NULL OR expires_at > ?)",
                [*keys, time.time()],
            ).fetchall(),
            writes=False,
            order=_BOT_STATE,
        )
        return {key: (json.loads(doc), etag) for key, doc, etag in rows}

    async def write_state(
        self,
        key: str,
        document: dict[str, Any],
        etag: str | None,
        *,
        owner: str | None = None,
        conversation: str | None = None,
        expires: bool = False,
        expires_from: datetime | None = None,
        create_only: bool = False,
    ) -> str:
        expires_at = self._expires_at() if expires else None
        if expires_at is not None and expires_from is not None:
            expires_at = min(expires_at, as_utc(expires_from).timestamp() + self._retention_seconds)

        def write(db: sqlite3.Connection) -> str:
            new_etag = str(time.time_ns())
            values = (key, new_etag, json.dumps(document), owner, expires_at, conversation)
            # A row past its expiry is gone for readers (`read_state`): so it is for writers.
            db.execute(
                "DELETE FROM botstate WHERE key = ? AND expires_at IS NOT NULL AND expires_at <= ?",
                (key, time.time()),
            )
            if create_only:
                # A plain INSERT: the key taken (another process's first write) fails it.
                try:
                    db.execute(
                        "INSERT INTO botstate (key, etag, doc, owner, expires_at, conversation_id)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        values,
                    )
                except sqlite3.IntegrityError:
                    raise ETagMismatch(f"state key {key!r} was created meanwhile") from None
                return new_etag
            row = db.execute("SELECT etag FROM botstate WHERE key = ?", (key,)).fetchone()
            if etag not in (None, "*") and (row is None or row[0] != etag):
                raise ETagMismatch(f"ETag mismatch for state key {key!r}")
            db.execute(
                "INSERT INTO botstate (key, etag, doc, owner, expires_at, conversation_id)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET etag = excluded.etag, doc = excluded.doc,"
                " owner = excluded.owner, expires_at = excluded.expires_at,"
                " conversation_id = excluded.conversation_id",
                values,
            )
            return new_etag

        return await self._run_short(lambda db: _atomic(db, write), writes=True, order=_BOT_STATE)

    async def delete_state(self, keys: list[str]) -> None:
        if not keys:
            return
        marks = ",".join("?" * len(keys))
        await self._run_short(
            lambda db: db.execute(
                f"DELETE FROM botstate WHERE key IN ({marks})",  # noqa: S608 - placeholders only
                keys,
            ),
            writes=True,
            order=_BOT_STATE,
        )

    # --- user data lifecycle

    def user_documents(
        self, user_id: str, kind: UserDataKind, page_size: int
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        if kind == "conversations":
            documents = self._user_summaries(user_id, page_size)
        elif kind == "messages":
            documents = self._user_messages(user_id, page_size)
        elif kind == "feedback":
            documents = self._user_feedback(user_id, page_size)
        else:
            documents = self._user_states(user_id, page_size)
        return in_pages(documents, page_size)

    async def _rows_in_pages(
        self, first: str, after: str, params: tuple[Any, ...], key_columns: int, page_size: int
    ) -> AsyncGenerator[tuple[Any, ...], None]:
        """The rows of a query, read a page of `page_size` at a time, each page one short call on
        the worker: one long read would hold the worker, which other calls queue behind, and a
        cursor kept open between pages would hold a read transaction open. `first` reads the
        first page; `after` the next, given the key of the last row read (its first
        `key_columns` columns) after `params`: keyset paging, never OFFSET. Both end with the
        LIMIT parameter."""

        def read(sql: str, args: tuple[Any, ...]) -> Callable[[sqlite3.Connection], list[Any]]:
            return lambda db: db.execute(sql, args).fetchall()

        rows = await self._run(read(first, (*params, page_size)))
        while True:
            for row in rows:
                yield row
            if len(rows) < page_size:
                return
            key = tuple(rows[-1][:key_columns])
            rows = await self._run(read(after, (*params, *key, page_size)))

    async def _user_summaries(
        self, user_id: str, page_size: int
    ) -> AsyncGenerator[dict[str, Any], None]:
        # A summary that cannot be read is left out (and logged); its messages are exported.
        select = (
            "SELECT last_activity_at, conversation_id, doc FROM conversations WHERE user_id = ?"
        )
        order = " ORDER BY last_activity_at DESC, conversation_id DESC LIMIT ?"
        rows = self._rows_in_pages(
            select + order,
            select + " AND (last_activity_at, conversation_id) < (?, ?)" + order,
            (user_id,),
            2,
            page_size,
        )
        async for _, conversation_id, doc in rows:
            if readable_summary(doc, conversation_id, EXPORTED_UNREADABLE) is not None:
                yield json.loads(doc)

    async def _user_messages(
        self, user_id: str, page_size: int
    ) -> AsyncGenerator[dict[str, Any], None]:
        """What `delete_user` deletes: the user's messages anywhere, and every message of the
        conversations they own; by conversation, then seq. A message that cannot be read is left
        out (and logged), as on Cosmos DB; one that can is exported as stored."""

        def conversations(db: sqlite3.Connection) -> list[tuple[str, bool]]:
            # Ids only (the owned ones flagged): each conversation is then read in pages along
            # messages_by_seq, where one keyset query over all of them would sort all of the
            # user's messages again for every page.
            owned = {
                row[0]
                for row in db.execute(
                    "SELECT conversation_id FROM conversations WHERE user_id = ?", (user_id,)
                )
            }
            written = {
                row[0]
                for row in db.execute(
                    "SELECT DISTINCT conversation_id FROM messages WHERE user_id = ?", (user_id,)
                )
            }
            return [(c, c in owned) for c in sorted(owned | written)]

        for conversation_id, owned in await self._run(conversations):
            select = "SELECT seq, id, doc FROM messages WHERE conversation_id = ?"
            params: tuple[Any, ...] = (conversation_id,)
            if not owned:  # someone else's conversation: only the user's own messages in it
                select += " AND user_id = ?"
                params += (user_id,)
            order = " ORDER BY seq, id LIMIT ?"
            rows = self._rows_in_pages(
                select + order, select + " AND (seq, id) > (?, ?)" + order, params, 2, page_size
            )
            async for _, _, doc in rows:
                if readable_message(doc, conversation_id, EXPORTED_UNREADABLE_MESSAGE) is not None:
                    # Without feedback someone else gave on it: that is theirs.
                    yield exported_message(json.loads(doc), user_id)

    async def _user_feedback(
        self, user_id: str, page_size: int
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The feedback the user gave on messages `_user_messages` does not export (another
        person's, in a conversation the user does not own), found by the `rater` column; by
        conversation, then seq. Without the message: that is the other person's."""
        select = (
            "SELECT conversation_id, seq, id, doc FROM messages WHERE rater = ? AND user_id != ?"
            " AND conversation_id NOT IN (SELECT conversation_id FROM conversations"
            " WHERE user_id = ?)"
        )
        order = " ORDER BY conversation_id, seq, id LIMIT ?"
        rows = self._rows_in_pages(
            select + order,
            select + " AND (conversation_id, seq, id) > (?, ?, ?)" + order,
            (user_id, user_id, user_id),
            3,
            page_size,
        )
        async for conversation_id, _, _, doc in rows:
            if readable_message(doc, conversation_id, EXPORTED_UNREADABLE_MESSAGE) is not None:
                yield given_feedback(json.loads(doc))

    async def _user_states(
        self, user_id: str, page_size: int
    ) -> AsyncGenerator[dict[str, Any], None]:
        select = "SELECT key, doc FROM botstate WHERE owner = ?"
        order = " ORDER BY key LIMIT ?"
        rows = self._rows_in_pages(
            select + order, select + " AND key > ?" + order, (user_id,), 1, page_size
        )
        async for _, doc in rows:
            yield json.loads(doc)

    async def count_user_conversations(self, user_id: str) -> ConversationCount:
        def count(db: sqlite3.Connection) -> ConversationCount:
            # The rows `delete_user` deletes by their user_id column, whatever their text holds.
            total = unreadable = 0
            for conversation_id, doc in db.execute(
                "SELECT conversation_id, doc FROM conversations WHERE user_id = ?", (user_id,)
            ):
                total += 1
                if readable_summary(doc, conversation_id, COUNTED_UNREADABLE) is None:
                    unreadable += 1
            # Their messages in conversations someone else owns, by the column `delete_user`
            # deletes them by.
            messages, conversations = db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT conversation_id) FROM messages WHERE user_id = ?"
                " AND conversation_id NOT IN"
                " (SELECT conversation_id FROM conversations WHERE user_id = ?)",
                (user_id, user_id),
            ).fetchone()
            return ConversationCount(
                total=total,
                unreadable=unreadable,
                shared_messages=messages,
                shared_conversations=conversations,
            )

        return await self._run(count)

    async def delete_user(self, user_id: str) -> dict[str, int]:
        def delete(db: sqlite3.Connection) -> tuple[dict[str, int], set[str]]:
            conversation_ids = [
                row[0]
                for row in db.execute(
                    "SELECT conversation_id FROM conversations WHERE user_id = ?", (user_id,)
                )
            ]
            # Conversations owned by someone else (shared ones) whose title is the user's words:
            # only the user's messages in those are read. One that cannot be read is still
            # theirs by its user_id column, and is deleted below with the rest; its words
            # cannot be checked against the title, so that title is cleared.
            unchecked: set[str] = set()
            # The user's messages in each of those (None: unreadable), all deleted below.
            in_shared: dict[str, list[Message | None]] = {}

            def written_in_shared() -> Iterator[Message]:
                for conversation_id, doc in db.execute(
                    "SELECT conversation_id, doc FROM messages WHERE user_id = ? AND"
                    " conversation_id NOT IN"
                    " (SELECT conversation_id FROM conversations WHERE user_id = ?)",
                    (user_id, user_id),
                ):
                    message = readable_message(doc, conversation_id, ERASED_UNREADABLE_MESSAGE)
                    in_shared.setdefault(conversation_id, []).append(message)
                    if message is None:
                        unchecked.add(conversation_id)
                    else:
                        yield message

            prompts_in = prompts_by_conversation(written_in_shared())
            unchecked |= answers_without_prompt(
                m for found in in_shared.values() for m in found if m is not None
            )
            # Messages there whose owner cannot be read either may be someone else's: left,
            # and counted for review (storage.summaries.UNATTRIBUTED_UNREADABLE_MESSAGE).
            unattributed = 0
            for conversation_id in sorted(in_shared):
                for (doc,) in db.execute(
                    "SELECT doc FROM messages WHERE conversation_id = ?"
                    " AND (typeof(user_id) != 'text' OR user_id = '')",
                    (conversation_id,),
                ):
                    readable = readable_message(
                        doc, conversation_id, UNATTRIBUTED_UNREADABLE_MESSAGE
                    )
                    if readable is None:
                        unattributed += 1
                        unchecked.add(conversation_id)
            unreadable = 0
            for conversation_id in sorted(prompts_in.keys() | unchecked):
                row = db.execute(
                    "SELECT doc FROM conversations WHERE conversation_id = ?", (conversation_id,)
                ).fetchone()
                if row is None:
                    continue
                summary = readable_summary(row[0], conversation_id, ERASED_UNREADABLE)
                if summary is None:
                    # Its title may be the user's words and cannot be cleared: the erasure
                    # goes on without it (the conversation's next turn starts a new one).
                    unreadable += db.execute(
                        "DELETE FROM conversations WHERE conversation_id = ?", (conversation_id,)
                    ).rowcount
                elif title_to_clear(
                    summary, prompts_in.get(conversation_id, ()), conversation_id in unchecked
                ):
                    untitled = summary.model_copy(update={"title": ""})
                    db.execute(
                        "UPDATE conversations SET doc = ?, written_at = ?"
                        " WHERE conversation_id = ?",
                        (untitled.to_json(), time.time(), conversation_id),
                    )
            messages = db.execute("DELETE FROM messages WHERE user_id = ?", (user_id,)).rowcount
            for conversation_id in conversation_ids:
                # Assistant messages carry the user's id too, but be thorough about strays.
                messages += db.execute(
                    "DELETE FROM messages WHERE conversation_id = ?", (conversation_id,)
                ).rowcount
            for conversation_id in sorted(in_shared):
                _lower_shared_summary(db, conversation_id, in_shared[conversation_id])
            feedback = _clear_feedback_given(db, user_id)
            conversations = db.execute(
                "DELETE FROM conversations WHERE user_id = ?", (user_id,)
            ).rowcount
            states = db.execute("DELETE FROM botstate WHERE owner = ?", (user_id,)).rowcount
            counts = {"conversations": conversations, "messages": messages, "states": states}
            if unreadable:
                counts[UNREADABLE_SHARED_SUMMARIES] = unreadable
            if unattributed:
                counts[UNATTRIBUTED_SHARED_MESSAGES] = unattributed
            if feedback:
                counts[FEEDBACK_CLEARED] = feedback
            return counts, set(conversation_ids)

        counts, conversation_ids = await self._run(lambda db: _atomic(db, delete))
        self._window_messages.forget(
            lambda m: (
                m.user_id == user_id
                or m.conversation_id in conversation_ids
                or (m.feedback is not None and m.feedback.user_id == user_id)
            )
        )
        await self._erased()
        return counts

    async def delete_conversation(self, conversation_id: str) -> dict[str, int]:
        """In one transaction, on the worker behind the conversation's queued calls."""

        def delete(db: sqlite3.Connection) -> dict[str, int]:
            messages = db.execute(
                "DELETE FROM messages WHERE conversation_id = ?", (conversation_id,)
            ).rowcount
            conversations = db.execute(
                "DELETE FROM conversations WHERE conversation_id = ?", (conversation_id,)
            ).rowcount
            states = db.execute(
                "DELETE FROM botstate WHERE conversation_id = ?", (conversation_id,)
            ).rowcount
            prefix = conversation_state_prefix(conversation_id)
            if prefix is not None:
                # Stored by an earlier release without their conversation: found by the key's
                # start (keys are ASCII, every character below DEL), then told by the key.
                earlier = [
                    key
                    for (key,) in db.execute(
                        "SELECT key FROM botstate WHERE conversation_id IS NULL"
                        " AND key >= ? AND key < ?",
                        (prefix, prefix + "\x7f"),
                    )
                    if names_conversation(key, conversation_id)
                ]
                for key in earlier:
                    states += db.execute("DELETE FROM botstate WHERE key = ?", (key,)).rowcount
            return {"conversations": conversations, "messages": messages, "states": states}

        counts = await self._run(lambda db: _atomic(db, delete), order=conversation_id)
        self._window_messages.forget(lambda m: m.conversation_id == conversation_id)
        await self._erased()
        return counts

    async def delete_late_writes_of_user(self, user_id: str, before: datetime) -> dict[str, int]:
        """In one transaction: `storage.late` decides, per conversation the user owns or wrote
        in, and of the feedback they gave (by the `rater` column)."""

        def delete(db: sqlite3.Connection) -> tuple[dict[str, int], set[tuple[str, str]]]:
            owned = {
                str(row[0])
                for row in db.execute(
                    "SELECT conversation_id FROM conversations WHERE user_id = ?", (user_id,)
                )
            }
            wrote_in = {
                str(row[0])
                for row in db.execute(
                    "SELECT DISTINCT conversation_id FROM messages WHERE user_id = ?", (user_id,)
                )
            }
            counts = {"conversations": 0, "messages": 0, "states": 0}
            gone: set[tuple[str, str]] = set()
            for conversation_id in sorted(owned | wrote_in):
                # In someone else's (shared) conversation, only the user's messages are theirs.
                theirs = None if conversation_id in owned else user_id
                messages, summary_owner = _delete_late_in(db, conversation_id, theirs, before, gone)
                counts["messages"] += messages
                if summary_owner == user_id:
                    counts["conversations"] += 1
            counts["states"] = _delete_late_states(
                db, "SELECT key, doc FROM botstate WHERE owner = ?", user_id, before
            )
            # What they rated before the first pass, stored after it on messages that stay.
            feedback = _clear_feedback(
                db,
                "SELECT conversation_id, id, doc FROM messages WHERE rater = ?",
                user_id,
                lambda doc: feedback_from_before(doc.get("feedback"), before),
                gone,
            )
            if feedback:
                counts[FEEDBACK_CLEARED] = feedback
            return counts, gone

        counts, gone = await self._run(lambda db: _atomic(db, delete))
        if gone:
            self._window_messages.forget(lambda m: (m.conversation_id, m.id) in gone)
            await self._erased()
        return counts

    async def delete_late_writes_of_conversation(
        self, conversation_id: str, before: datetime
    ) -> dict[str, int]:
        """In one transaction, on the worker behind the conversation's queued calls."""

        def delete(db: sqlite3.Connection) -> tuple[dict[str, int], set[tuple[str, str]]]:
            gone: set[tuple[str, str]] = set()
            messages, summary_owner = _delete_late_in(db, conversation_id, None, before, gone)
            states = _delete_late_states(
                db,
                "SELECT key, doc FROM botstate WHERE conversation_id = ?",
                conversation_id,
                before,
            )
            counts = {
                "conversations": int(summary_owner is not None),
                "messages": messages,
                "states": states,
            }
            # Ratings from before the first pass, stored after it on its messages that stay.
            feedback = _clear_feedback(
                db,
                "SELECT conversation_id, id, doc FROM messages WHERE conversation_id = ?",
                conversation_id,
                lambda doc: feedback_from_before(doc.get("feedback"), before),
                gone,
            )
            if feedback:
                counts[FEEDBACK_CLEARED] = feedback
            return counts, gone

        counts, gone = await self._run(lambda db: _atomic(db, delete), order=conversation_id)
        if gone:
            self._window_messages.forget(lambda m: (m.conversation_id, m.id) in gone)
            await self._erased()
        return counts

    # --- retention

    async def purge_expired(self) -> int:
        """Messages and summaries last written more than RETENTION_DAYS ago (none at 0), by the
        setting the store runs with: a changed setting applies to everything stored, as a
        Cosmos container's defaultTtl does. State documents, counters and usage documents
        go at the expiry fixed when they were written."""

        def purge(db: sqlite3.Connection) -> int:
            now = time.time()
            removed = 0
            if self._retention_seconds:
                written_before = now - self._retention_seconds
                for table in ("messages", "conversations"):
                    removed += db.execute(
                        f"DELETE FROM {table} WHERE written_at < ?",  # noqa: S608 - fixed names
                        (written_before,),
                    ).rowcount
            removed += db.execute(
                "DELETE FROM botstate WHERE expires_at IS NOT NULL AND expires_at < ?", (now,)
            ).rowcount
            db.execute("DELETE FROM counters WHERE expires_at < ?", (now,))
            db.execute("DELETE FROM usage WHERE expires_at < ?", (now,))
            return int(removed)

        removed = await self._run(lambda db: _atomic(db, purge))
        if removed:
            # Which of the remembered messages expired is not worth working out hourly.
            self._window_messages.clear()
            await self._erased()
            log.info("retention purge removed %d items", removed)
        return removed

    async def _erased(self) -> None:
        """Deleted rows leave nothing in the database file (`secure_delete` zeroes what they
        freed), but their words stay in the write-ahead log's old pages until those are written
        over: the log file is emptied soon after (by the checkpoint thread)."""
        if self._checkpointer is not None:
            self._checkpointer.truncate_log()
            return

        def truncate(db: sqlite3.Connection) -> None:
            with contextlib.suppress(sqlite3.Error):  # busy: the log keeps them a while longer
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

        await self._run(truncate)
