"""Instances prepared as they arrive: the worker's per-series cache.

While a series is still arriving, the worker reads each stored instance once: its
transfer syntax checked, its header kept, its pixels decoded and converted for the model
a routing rule would pick (:class:`PreparedInstance`), between jobs and in its own process, never
on the listener's path. At completion the job takes the headers from here instead of
reading every file again, and ``pipeline.prepare`` takes the images as ``ready`` and
decodes only the rest, so only assembly, inference, the report and the send remain; the
inputs are the same bytes as preparing the whole series then.

What invalidates what:

- an instance is kept under its path, sha256 and negotiated transfer syntax (as
  indexed): a replaced instance (other bytes) is prepared again, the others are kept;
  an instance no longer in the series is dropped;
- a series' images are kept for one input key (``pipeline.input_key``: what per-image
  preparation depends on): a model activation or a rule change that routes it to a
  model with another key drops that series' instances, and only those; a model with
  the same key uses them as they are;
- a series leaves the cache once a job for it is decided, or once it is no longer
  arriving (queued or receiving).

Bounded: at most ``limit_bytes`` of model inputs and drift counts; the least recently
touched series go first, and a series that would not fit alone is not kept (it is
prepared at completion, as without the cache). In memory only: a crash or a restart
loses the cache and nothing else.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from appliance.jobs import StoredFile
from appliance.triage.pipeline import PreparedImage

FileKey = tuple[Path, str, str]  # (path, sha256, negotiated transfer syntax)


def file_key(stored: StoredFile) -> FileKey:
    return stored.path, stored.sha256, stored.transfer_syntax_uid


@dataclass(frozen=True)
class PreparedInstance:
    """One arrived instance, read once and checked: in its negotiated transfer syntax,
    its header (the decoded dataset without its pixel data: what ``decode.read_header``
    reads, and any element after the pixel data), its frames as model input, and what
    the model's input constraints say of it (``constraints.instance_violation``, under
    ``constraints.constraints_key``)."""

    header: Dataset
    images: list[PreparedImage]
    constraints_key: str = ""
    violation: str | None = None

    @property
    def nbytes(self) -> int:
        return sum(image.nbytes for image in self.images)


@dataclass
class _Series:
    input_key: str
    instances: dict[FileKey, PreparedInstance] = field(default_factory=dict)
    unreadable: set[FileKey] = field(default_factory=set)  # left for the job to fail on
    nbytes: int = 0
    too_big: bool = False  # would not fit alone: prepared at completion


class PreparedCache:
    """Prepared instances per series, least recently touched first out."""

    def __init__(self, limit_bytes: int):
        self.limit_bytes = limit_bytes
        self._series: OrderedDict[str, _Series] = OrderedDict()

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self._series.values())

    def series(self) -> set[str]:
        return set(self._series)

    def missing(self, series_uid: str, input_key: str, files: tuple[StoredFile, ...]) -> list[StoredFile]:
        """The files of the series not prepared for ``input_key`` (nor found unreadable);
        what the series holds for another key, or for files no longer in it, is dropped."""
        entry = self._series.get(series_uid)
        if entry is not None and entry.input_key != input_key:
            self.drop(series_uid)
            entry = None
        if entry is None:
            return list(files) if self.limit_bytes > 0 else []
        if entry.too_big:
            return []
        current = {file_key(stored) for stored in files}
        for gone in set(entry.instances) - current:
            entry.nbytes -= entry.instances.pop(gone).nbytes
        entry.unreadable &= current
        done = entry.instances.keys() | entry.unreadable
        return [stored for stored in files if file_key(stored) not in done]

    def complete(self, series_uid: str, files: tuple[StoredFile, ...]) -> bool:
        """Whether every one of ``files`` was prepared (for the series' input key), found
        unreadable, or the series would not fit: nothing is left to do for it."""
        entry = self._series.get(series_uid)
        if entry is None:
            return self.limit_bytes <= 0
        done = entry.instances.keys() | entry.unreadable
        return entry.too_big or all(file_key(stored) in done for stored in files)

    def keep(self, series_uid: str, input_key: str, stored: StoredFile, prepared: PreparedInstance | None) -> bool:
        """Keep one instance (None: it did not check, read or decode). Less recently
        touched series make room; False when the series alone would not fit: then none
        of it is kept, and it is not prepared again before its job."""
        entry = self._series.get(series_uid)
        if entry is None or entry.input_key != input_key:
            entry = self._series[series_uid] = _Series(input_key)
        self._series.move_to_end(series_uid)
        if prepared is None:
            entry.unreadable.add(file_key(stored))
            return True
        if entry.nbytes + prepared.nbytes > self.limit_bytes:
            entry.instances, entry.nbytes, entry.too_big = {}, 0, True
            return False
        while self.nbytes + prepared.nbytes > self.limit_bytes:
            self.drop(next(iter(self._series)))
        entry.instances[file_key(stored)] = prepared
        entry.nbytes += prepared.nbytes
        return True

    def instances(self, series_uid: str, files: tuple[StoredFile, ...]) -> dict[Path, PreparedInstance]:
        """The prepared instances among ``files`` (whatever model they were prepared for), by path."""
        entry = self._series.get(series_uid)
        if entry is None:
            return {}
        return {
            stored.path: entry.instances[file_key(stored)] for stored in files if file_key(stored) in entry.instances
        }

    def ready(self, series_uid: str, input_key: str, files: tuple[StoredFile, ...]) -> dict[Path, list[PreparedImage]]:
        """The prepared images of those ``files`` that are here for ``input_key``, by path."""
        entry = self._series.get(series_uid)
        if entry is None or entry.input_key != input_key:
            return {}
        return {path: prepared.images for path, prepared in self.instances(series_uid, files).items()}

    def drop(self, series_uid: str) -> None:
        self._series.pop(series_uid, None)

    def retain(self, series_uids: set[str]) -> None:
        """Drop every series not in ``series_uids``."""
        for uid in self.series() - series_uids:
            self.drop(uid)
