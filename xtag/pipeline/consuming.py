"""The worker's intake consumer: it reads the inbox stream in bulk, records
its events (never losing an entry: one is acknowledged only once its events
are committed), and runs the scheduled work (heartbeat, sweep, retention,
alerts). xtag.pipeline.worker runs it in threads beside RQ's worker."""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import redis
from flask import Flask
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from xtag.pipeline import alerts, batching, heartbeat, inbox, intake, queues, retention

log = logging.getLogger(__name__)

READ_COUNT = 500  # inbox entries per read at most
EVENTS_PER_READ = 2000  # ... and about this many events (a /v1/batch entry holds up to 2,500)
BLOCK_MS = 1000
RECLAIM_EVERY_SECONDS = 5.0  # also how often the dead-letter cap is checked
# A read that finds fewer entries than it could take waits this long (at most
# a quarter of the batch window) for more, so a trickle of beacons costs one
# transaction per few events, not one per event. The wait costs no latency:
# the batch window runs from the first read. A quarter second, not a fifth:
# at 50 events/s a fifth fewer reads, a sixth less worker CPU per event.
LINGER_SECONDS = 0.25
# Errors that retrying cannot cure: the entry's data, not the database, is at fault.
POISON = (DataError, IntegrityError, KeyError, TypeError, ValueError, AttributeError)


class Consumer:
    """Reads the inbox stream and records what it holds; never loses an entry:
    an entry is acknowledged only after its events are committed."""

    def __init__(self, app: Flask, name: str | None = None):
        self.app = app
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.client = queues.redis_client(app)
        self.claim_idle_ms = app.config["XTAG_INBOX_CLAIM_MS"]
        self.stop = threading.Event()
        self.streams = inbox.streams(app.config["XTAG_INBOX_SHARDS"])
        self._next_reclaim = 0.0
        self._next_dead_check = 0.0
        self._next_run: dict[str, float] = {}  # SCHEDULE task -> when it is next due
        self._retry_own = True
        self.window = app.config["XTAG_BATCH_WINDOW_MS"] / 1000
        self.linger = min(LINGER_SECONDS, self.window / 4)
        self.due: dict[int, float] = {}  # pixel -> when to look at its partial batch
        self.read_count = READ_COUNT
        # Under a backlog the next read is made, and prepared (intake.prepare:
        # Redis), while this thread writes the last one to the database.
        self._ahead: Future | None = None
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="xtag-read")
        inbox.ensure_group(self.client, self.streams)

    def _take(self, block_ms: int | None) -> list[inbox.Entry]:
        try:
            return self._take_from_group(block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis came back without its data (no AOF, a fresh replica): the
            # collector's next XADD makes the stream again, but not the group.
            log.warning("intake: the inbox stream or its consumer group was gone; made again")
            inbox.ensure_group(self.client, self.streams)
            return []

    def _take_from_group(self, block_ms: int | None) -> list[inbox.Entry]:
        if self._retry_own:  # entries this consumer read before a failure
            entries = inbox.pending(self.client, self.name, self.read_count, self.streams)
            if entries:
                return entries
            self._retry_own = False
        if self._dead_full():  # stop rather than lose an entry
            log.error("intake: %d entries set aside; not reading more", inbox.DEAD_MAX)
            time.sleep(min(1.0, (block_ms or 0) / 1000))
            return []
        if time.monotonic() >= self._next_reclaim:
            self._next_reclaim = time.monotonic() + RECLAIM_EVERY_SECONDS
            entries = inbox.reclaim(
                self.client, self.name, self.read_count, self.claim_idle_ms, self.streams
            )
            if entries:
                return entries
        return inbox.read(self.client, self.name, self.read_count, block_ms, self.streams)

    def _dead_full(self) -> bool:
        """The dead-letter cap, looked at every few seconds (not per read):
        past the cap nothing is trimmed, so a few more set aside lose nothing."""
        if time.monotonic() < self._next_dead_check:
            return False
        full = inbox.set_aside_full(self.client)
        self._next_dead_check = 0.0 if full else time.monotonic() + RECLAIM_EVERY_SECONDS
        return full

    def _more(self, entries: list[inbox.Entry]) -> list[inbox.Entry]:
        """A short read: wait a moment for more entries (never past a flush
        timer), then take them too."""
        wait = self.linger
        if self.due:
            wait = min(wait, max(0.0, min(self.due.values()) - time.monotonic()))
        if self.stop.wait(wait):
            return entries
        more = inbox.read(
            self.client, self.name, self.read_count - len(entries), None, self.streams
        )
        return entries + more

    def flush_due(self, everything: bool = False) -> None:
        """Flush the pixels whose partial batch may be due; a pixel whose
        oldest conversion is still young (another worker's flush took the
        older ones) is looked at again when that one is due."""
        now = time.monotonic()
        ready = [p for p, at in self.due.items() if everything or at <= now]
        if not ready:
            return
        with self.app.app_context():
            if everything:
                for pixel_key in ready:
                    batching.flush(pixel_key)
                later = {}
            else:
                later = batching.flush_if_due(ready)
        for pixel_key in ready:
            del self.due[pixel_key]
        for pixel_key, seconds in later.items():
            self.due[pixel_key] = now + seconds

    def _block_ms(self, block_ms: int | None) -> int | None:
        if block_ms is None or not self.due:
            return block_ms
        wait = min(self.due.values()) - time.monotonic()
        return max(1, min(block_ms, int(wait * 1000) + 1))

    def _record(self, entries: list[inbox.Entry]) -> batching.Due:
        with self.app.app_context():
            return intake.record(entries)

    def _read_ahead(self) -> intake.Prepared | None:
        """The next read, prepared (in the reader thread)."""
        entries = inbox.read(self.client, self.name, self.read_count, None, self.streams)
        if not entries:
            return None
        with self.app.app_context():
            return intake.prepare(entries)

    def _take_due(self) -> bool:
        """The next read must be _take's: a dead worker's entries to take
        over, or the dead-letter cap to look at (never put off by reading ahead)."""
        return time.monotonic() >= min(self._next_reclaim, self._next_dead_check)

    def _ahead_ready(self) -> intake.Prepared | None:
        """What was read ahead, unless a failure came since: then it is read
        again, as pending, with what failed."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        try:
            ready = ahead.result()
        except Exception:
            log.warning("intake: reading ahead failed; reading again", exc_info=True)
            self._retry_own = True
            return None
        return None if self._retry_own else ready

    def _in_halves(self, entries: list[inbox.Entry]) -> batching.Due:
        """After a read failed on its data: record it in halves, and halves of
        those, until the entry that cannot be recorded stands alone, and set
        that one aside (the dead-letter stream). One bad entry costs about
        log2(n) more transactions, never stops the intake, loses nothing."""
        middle = len(entries) // 2
        dues = [self._try(half) for half in (entries[:middle], entries[middle:])]
        sent = frozenset().union(*(due.sent for due in dues))
        later = frozenset().union(*(due.later for due in dues))
        return batching.Due(later - sent, sent)

    def _try(self, entries: list[inbox.Entry]) -> batching.Due:
        try:
            due = self._record(entries)
        except POISON as exc:
            if len(entries) > 1:
                return self._in_halves(entries)
            entry = entries[0]
            log.error(
                "intake: entry %s cannot be recorded (%s); set aside",
                entry.id,
                type(exc).__name__,
            )
            inbox.set_aside(self.client, entry, type(exc).__name__)
            inbox.done(self.client, [entry])
            self._next_dead_check = 0.0
            return batching.Due()
        inbox.done(self.client, entries)  # a failure in a later half must not record it again
        return due

    def run_once(self, block_ms: int | None = None, linger: bool = False) -> int:
        """Read and record once; `linger`: after a short read, wait a moment for more."""
        self.flush_due()
        ready = self._ahead_ready()
        entries = ready.entries if ready else self._take(self._block_ms(block_ms))
        if not entries:
            return 0
        read_at = time.monotonic()
        short = len(entries) < self.read_count and not ready
        if linger and self.linger and short and not self._retry_own:
            entries = self._more(entries)
        try:
            try:
                with self.app.app_context():
                    ready = ready or intake.prepare(entries)
                    backlog = len(entries) >= self.read_count and not self._retry_own
                    if backlog and not self._take_due() and not self.stop.is_set():
                        context = contextvars.copy_context()  # log fields go along
                        self._ahead = self._reader.submit(context.run, self._read_ahead)
                    flushes = intake.write(ready)
            except POISON:
                if self._ahead is not None:  # prepared before these are, again: prepare it after
                    self._retry_own = True
                flushes = self._in_halves(entries)
        except (SQLAlchemyError, redis.RedisError, OSError):
            self._retry_own = True
            raise
        inbox.done(self.client, entries)
        per_entry = max(1, sum(len(e.events) for e in entries) // len(entries))
        self.read_count = max(1, min(READ_COUNT, EVENTS_PER_READ // per_entry))
        due = read_at + self.window  # the batch window runs from the read (intake.record)
        for pixel_key in flushes.later | flushes.sent:  # an earlier due time stays
            self.due.setdefault(pixel_key, due)
        return len(entries)

    def drain(self) -> int:
        """Everything waiting now, then return (burst mode and tests)."""
        self._next_reclaim = 0.0
        total = 0
        while count := self.run_once():
            total += count
        self.flush_due(everything=True)  # claim() still leaves a young tail waiting
        return total

    def sweep(self) -> None:
        """Requeue what a dead worker left behind (see batching.sweep)."""
        with self.app.app_context():
            batching.sweep()

    def purge(self) -> None:
        """Delete or empty what is past its retention period."""
        with self.app.app_context():
            retention.purge()

    def heartbeat(self) -> None:
        heartbeat.beat(self.client, self.name)

    def check_alerts(self) -> None:
        """Open and close alerts; posting them is a job, so a slow webhook never waits here."""
        with self.app.app_context():
            alerts.check()

    def run_due(self) -> None:
        """Run the scheduled work whose time has come (see SCHEDULE)."""
        now = time.monotonic()
        for task in SCHEDULE:
            if now >= self._next_run.get(task.name, 0.0):
                self._next_run[task.name] = now + task.every_seconds
                if not task.shared or self._my_turn(task):
                    task.run(self)

    def _my_turn(self, task: Periodic) -> bool:
        """A shared task runs on the first worker to ask in each of its periods."""
        key = f"xtag:schedule:{task.name}"
        return bool(self.client.set(key, self.name, nx=True, px=int(task.every_seconds * 1000)))

    def keep_schedule(self) -> None:
        """SCHEDULE, in a thread of its own: a slow task (an alert check reading
        an hour of conversions) must not hold up the intake, as it did when
        the intake thread ran it between reads."""
        while not self.stop.is_set():
            try:
                self.run_due()
            except Exception:  # the next period tries again
                log.exception("worker: scheduled work failed")
            due = min(self._next_run.values(), default=0.0) - time.monotonic()
            self.stop.wait(min(max(due, 0.05), 1.0))

    def run_forever(self) -> None:
        while not self.stop.is_set():
            try:
                self.run_once(BLOCK_MS, linger=True)
            except Exception:  # keep consuming; the entries stay pending and are retried
                log.exception("intake: recording events failed; retrying in 1 s")
                self.stop.wait(1.0)
        if self._ahead is not None:  # read ahead before the stop: record it, not leave it
            try:
                self.run_once()
            except Exception:  # left pending: another worker claims it
                log.exception("intake: recording the last read failed")


@dataclass(frozen=True)
class Periodic:
    name: str
    every_seconds: float
    run: Callable[[Consumer], None]
    # once this often across all workers (whichever asks first), not on each:
    # N workers must not cost N times the database work of one
    shared: bool = False


# Scheduled work, declared in one place: each task runs this often, on every
# worker or, shared, on one of them (all are safe to run on several at once).
SCHEDULE = (
    Periodic("heartbeat", 5.0, Consumer.heartbeat),  # /readyz, the dashboard, workers_alive
    Periodic("sweep", 10.0, Consumer.sweep, shared=True),  # what a dead worker left, late retries
    Periodic("retention", 3600.0, Consumer.purge, shared=True),  # retention.POLICIES
    Periodic("alerts", 30.0, Consumer.check_alerts, shared=True),  # alerts.kinds, to the webhook
)
