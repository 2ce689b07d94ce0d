"""C-STORE of result objects to every destination: retries, circuit breaker, dead letters.

Each configured destination gets a lane: one worker thread, its queue in the
:class:`~appliance.send.outbox.Outbox`, and its own circuit breaker, so a destination
that is down delays nothing bound elsewhere.

The policy (retries, breaker, transfer syntaxes) is pure and lives in
:mod:`appliance.send.policy`.

Nothing here logs patient identifiers: log lines name outbox ids and destinations only.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlite_utils
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from appliance import failpoints
from appliance.config import Destination, SenderSettings, Settings
from appliance.send.outbox import Outbox, OutboxItem, destination_key
from appliance.send.policy import (
    Breaker,
    BreakerMode,
    Disposition,
    choose_transfer_syntax,
    classify_status,
    next_association_at,
    proposed_syntaxes,
    retry_at,
)
from appliance.states import OutboxState

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128  # presentation context ids are odd numbers 1..255

# ---------------------------------------------------------------------------------------
# Policy: pure functions and values


# ---------------------------------------------------------------------------------------
# One association: send a batch of objects to one destination


@dataclass(frozen=True)
class StoreAttempt:
    """How one object fared on an established association."""

    item: OutboxItem
    disposition: Disposition
    status: int | None
    error: str | None


@dataclass(frozen=True)
class Delivery:
    """One association's worth of work.

    ``reached`` says whether the peer took part in the association: it accepted it, or
    negotiated and refused every presentation context (the objects' fault, not the
    destination's). ``association_error`` says why not when an association was tried and
    failed. ``results`` cover the objects tried plus any whose file could not be read
    (those never need an association).
    """

    reached: bool
    association_error: str | None
    results: tuple[StoreAttempt, ...]


def _load(items: Sequence[OutboxItem]) -> tuple[list[tuple[OutboxItem, Dataset]], list[StoreAttempt]]:
    """Read the batch's files; an unreadable one is dead at once (it cannot get better)."""
    loaded: list[tuple[OutboxItem, Dataset]] = []
    failed: list[StoreAttempt] = []
    for item in items:
        try:
            dataset: Dataset = dcmread(item.path)
            UID(dataset.file_meta.TransferSyntaxUID), UID(dataset.SOPClassUID)
            loaded.append((item, dataset))
        except (OSError, ValueError, AttributeError, InvalidDicomError) as exc:
            failed.append(
                StoreAttempt(item, Disposition.DEAD, None, f"cannot read result file: {type(exc).__name__}: {exc}")
            )
    return loaded, failed


def _contexts(loaded: list[tuple[OutboxItem, Dataset]]) -> tuple[list[PresentationContext], int]:
    """Presentation contexts for as many objects as fit in one association, and how many."""
    pairs: dict[tuple[str, str], None] = {}
    fitted = 0
    for _, dataset in loaded:
        own = dataset.file_meta.TransferSyntaxUID
        wanted = [(dataset.SOPClassUID, ts) for ts in proposed_syntaxes(own)]
        new = [pair for pair in wanted if pair not in pairs]
        if len(pairs) + len(new) > MAX_CONTEXTS:
            break
        pairs.update(dict.fromkeys(new))
        fitted += 1
    return [build_context(sop_class, ts) for sop_class, ts in pairs], fitted


def _association_error(assoc: Association, connected: bool) -> str:
    if not connected:
        return "no connection: refused, unreachable or timed out"
    if assoc.is_rejected:
        rsp = assoc.acceptor.primitive
        return (
            f"association rejected ({rsp.result_str}, {rsp.source_str}: {rsp.reason_str})"
            if rsp is not None
            else "association rejected"
        )
    if assoc.is_aborted:
        return "association aborted by the peer"
    return "no answer to the association request (ACSE timeout)"


def _no_context(item: OutboxItem, dataset: Dataset) -> StoreAttempt:
    return StoreAttempt(
        item, Disposition.RETRY, None, f"peer accepted no presentation context for {UID(dataset.SOPClassUID).name}"
    )


def _store_one(assoc: Association, item: OutboxItem, dataset: Dataset) -> StoreAttempt:
    own = UID(dataset.file_meta.TransferSyntaxUID)
    accepted = [
        UID(cx.transfer_syntax[0])
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == dataset.SOPClassUID and cx.as_scu
    ]
    chosen = choose_transfer_syntax(own, accepted)
    if chosen is None:
        return _no_context(item, dataset)
    try:
        if chosen != own and own.is_compressed:
            # Same object in another encoding: it keeps its SOP Instance UID. pynetdicom
            # then converts between Explicit and Implicit VR Little Endian itself.
            dataset.decompress(generate_instance_uid=False)
        response = assoc.send_c_store(dataset)
    except (ValueError, RuntimeError, AttributeError, NotImplementedError) as exc:
        return StoreAttempt(item, Disposition.RETRY, None, f"cannot send: {type(exc).__name__}: {exc}")
    if "Status" not in response:
        return StoreAttempt(item, Disposition.RETRY, None, "no C-STORE response (DIMSE timeout or abort)")
    status = int(response.Status)
    comment = str(response.get("ErrorComment", "")).strip()
    disposition = classify_status(status)
    text = None if status == 0 else f"status 0x{status:04X}" + (f": {comment}" if comment else "")
    return StoreAttempt(item, disposition, status, text)


def deliver(ae_title: str, destination: Destination, items: Sequence[OutboxItem], policy: SenderSettings) -> Delivery:
    """Send ``items`` over one association; results only for the objects tried.

    Objects after one whose association broke, or beyond the presentation context limit,
    are left untried (they stay due).
    """
    loaded, unreadable = _load(items)
    if not loaded:
        return Delivery(False, None, tuple(unreadable))
    contexts, fitted = _contexts(loaded)
    ae = AE(ae_title=ae_title)
    ae.connection_timeout = policy.connect_timeout_s
    ae.acse_timeout = policy.acse_timeout_s
    ae.dimse_timeout = policy.dimse_timeout_s
    ae.network_timeout = max(policy.acse_timeout_s, policy.dimse_timeout_s)
    connected = threading.Event()
    assoc = ae.associate(
        destination.host,
        destination.port,
        contexts=contexts,
        ae_title=destination.ae_title,
        evt_handlers=[(evt.EVT_CONN_OPEN, lambda event: connected.set())],
    )
    if assoc.rejected_contexts and not assoc.accepted_contexts:  # pynetdicom aborted it
        refused = [_no_context(item, dataset) for item, dataset in loaded[:fitted]]
        return Delivery(True, None, (*unreadable, *refused))
    if not assoc.is_established:
        error = _association_error(assoc, connected.is_set())
        return Delivery(False, error, tuple(unreadable))
    results = list(unreadable)
    try:
        for item, dataset in loaded[:fitted]:
            results.append(_store_one(assoc, item, dataset))
            failpoints.hit("mid-send")  # the peer answered; the outbox row is still pending
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
        else:
            assoc.abort()
    return Delivery(True, None, tuple(results))


# ---------------------------------------------------------------------------------------
# The sender: a lane per destination


@dataclass(frozen=True)
class Round:
    """What one round of one lane did (returned by :meth:`Sender.send_due_once`)."""

    destination: str
    associated: bool  # an association was attempted
    association_error: str | None
    sent: int  # objects the peer acknowledged
    retried: int  # objects that failed and wait for another try
    dead: int  # objects dead-lettered
    next_at: float  # when this lane has work next (or should look again)


class _Lane:
    def __init__(self, destination: Destination, policy: SenderSettings):
        self.destination = destination
        self.key = destination_key(destination)
        self.breaker = Breaker(policy.breaker_failures, policy.breaker_cooldown_s)
        self.not_before = 0.0
        self.saved: tuple | None = None  # the breaker as last written to send_lanes
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None


class Sender:
    """Sends queued result objects to every configured destination.

    Parameters
    ----------
    settings : Settings
        ``dicom.ae_title`` is the calling AE title, ``dicom.destinations`` the lanes and
        ``sender`` the policy.
    db : sqlite_utils.Database
        The appliance database; wrapped in an :class:`Outbox`, see its note on threads.
    rng : callable, optional
        Returns a float in [0, 1) for jitter; ``random.random`` by default.

    Notes
    -----
    Use either the threads (:meth:`start` / :meth:`stop`) or :meth:`send_due_once`, not
    both at the same time.
    """

    def __init__(self, settings: Settings, db: sqlite_utils.Database, rng: Callable[[], float] = random.random):
        self.ae_title = settings.dicom.ae_title
        self.policy = settings.sender
        self.outbox = Outbox(db)
        self._rng = rng
        self._lanes = {lane.key: lane for lane in (_Lane(d, self.policy) for d in settings.dicom.destinations)}
        self._stopping = threading.Event()
        for lane in self._lanes.values():  # a new sender starts closed: say so
            self._save(lane, None, time.time())

    def breaker(self, destination: str) -> Breaker:
        """The circuit breaker of one destination (by ``AE@host:port`` key)."""
        return self._lanes[destination].breaker

    def send_due_once(self, now: float) -> dict[str, Round]:
        """Run one round of every lane, one after the other, as if the time were ``now``."""
        return {key: self._round(lane, now) for key, lane in self._lanes.items()}

    def start(self) -> None:
        """Start one worker thread per destination."""
        self._stopping.clear()
        for lane in self._lanes.values():
            lane.thread = threading.Thread(target=self._run, args=(lane,), daemon=True, name=f"sender {lane.key}")
            lane.thread.start()

    def wake(self) -> None:
        """Look at the outbox now (after an enqueue in this process) instead of next poll."""
        for lane in self._lanes.values():
            lane.wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the workers; an association in progress finishes its current object."""
        self._stopping.set()
        self.wake()
        for lane in self._lanes.values():
            if lane.thread is not None:
                lane.thread.join(timeout)
                lane.thread = None

    def _run(self, lane: _Lane) -> None:
        while not self._stopping.is_set():
            lane.wake.clear()
            try:
                next_at = self._round(lane, time.time()).next_at
            except Exception:  # a bug or a database error must not kill the lane
                log.exception("sender %s: round failed", lane.key)
                next_at = time.time() + self.policy.poll_interval_s
            lane.wake.wait(min(max(0.0, next_at - time.time()), self.policy.poll_interval_s))

    def _round(self, lane: _Lane, now: float) -> Round:
        # not_before covers both the backoff between failed associations and an open circuit.
        if lane.not_before > now + self.policy.longest_wait_s:
            log.warning("sender %s: the wall clock stepped back %.0f s; trying now", lane.key, lane.not_before - now)
            lane.not_before = now
        if now < lane.not_before:
            return Round(lane.key, False, None, 0, 0, 0, lane.not_before)
        half_open = lane.breaker.mode(now) is BreakerMode.HALF_OPEN
        limit = 1 if half_open else self.policy.batch_size
        items = self.outbox.due(lane.key, now, limit, self.policy.longest_wait_s)
        if items:
            delivery = deliver(self.ae_title, lane.destination, items, self.policy)
            self._account(lane, delivery, now)
        else:
            delivery = Delivery(False, None, ())
        counts = dict.fromkeys(OutboxState, 0)
        for result in delivery.results:
            counts[self._record(lane, result, now)] += 1
        if len(items) == limit and delivery.association_error is None:
            next_at = now  # a full batch went: there may be more
        else:
            poll_at = now + self.policy.poll_interval_s
            next_due = self.outbox.next_due_at(lane.key) or poll_at
            next_at = max(lane.not_before, min(poll_at, next_due))
        return Round(
            lane.key,
            delivery.reached or delivery.association_error is not None,
            delivery.association_error,
            counts[OutboxState.SENT],
            counts[OutboxState.PENDING],
            counts[OutboxState.DEAD],
            next_at,
        )

    def _save(self, lane: _Lane, error: str | None, now: float) -> None:
        """Write the lane's breaker to ``send_lanes`` when it changed (for the admin page)."""
        state = (lane.breaker, lane.not_before)
        if state != lane.saved:
            self.outbox.record_lane(lane.key, lane.breaker, lane.not_before, error, now)
            lane.saved = state

    def _account(self, lane: _Lane, delivery: Delivery, now: float) -> None:
        """Feed the association's fate to the breaker; hold the queue when it failed."""
        if delivery.reached:
            lane.breaker = lane.breaker.after_success()
            lane.not_before = 0.0
            self._save(lane, None, now)
        elif delivery.association_error is not None:
            lane.breaker = lane.breaker.after_failure(now)
            lane.not_before = next_association_at(lane.breaker, now, self.policy, self._rng())
            held = self.outbox.postpone(lane.key, lane.not_before, delivery.association_error, now)
            self._save(lane, delivery.association_error, now)
            log.warning(
                "sender %s: %s; %d object(s) wait %.1f s (circuit %s after %d failure(s))",
                lane.key,
                delivery.association_error,
                held,
                lane.not_before - now,
                lane.breaker.mode(now).value,
                lane.breaker.failures,
            )

    def _record(self, lane: _Lane, result: StoreAttempt, now: float) -> OutboxState:
        """Write one object's result to the outbox; returns its new state."""
        item, tries = result.item, result.item.attempts + 1
        # Peer error comments stay in the database; the log gets the status code only.
        reason = f"status 0x{result.status:04X}" if result.status is not None else result.error
        if result.disposition is Disposition.SENT:
            self.outbox.mark_sent(item.id, result.status or 0, result.error, now)
            if result.status:
                log.info("sender %s: outbox %d stored with warning %s", lane.key, item.id, reason)
            return OutboxState.SENT
        when = None
        if result.disposition is Disposition.RETRY:
            when = retry_at(tries, now, self.policy, self._rng())
        self.outbox.mark_failed(item.id, result.status, result.error or "C-STORE failed", when, now)
        if when is None:
            log.warning("sender %s: outbox %d dead-lettered after %d tries: %s", lane.key, item.id, tries, reason)
            return OutboxState.DEAD
        log.info(
            "sender %s: outbox %d try %d failed (%s), next in %.1f s", lane.key, item.id, tries, reason, when - now
        )
        return OutboxState.PENDING
