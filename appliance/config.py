"""The one settings object, loaded once from TOML and the environment, then validated.

Sources, later ones winning:

1. the defaults declared on the models below,
2. the TOML file: ``$APPLIANCE_CONFIG`` or ``firmware-config/appliance.toml``,
3. environment variables ``APPLIANCE_<SECTION>_<KEY>`` (``APPLIANCE_DICOM_PORT``) or
   ``APPLIANCE_<KEY>`` for top-level keys (``APPLIANCE_DATA_DIR``). List values are
   comma-separated (``APPLIANCE_DICOM_PEERS="PACS@10.0.0.5,*@127.0.0.1"``).
4. the peers and destinations added or removed on the admin page, kept in
   ``<data_dir>/dicom-endpoints.json`` (:func:`read_local_dicom`), applied on top of
   ``dicom.peers`` and ``dicom.destinations`` as the file and the environment give them.
   The shipped configuration file is never rewritten.

Every error names the key that is wrong and why.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from appliance import failpoints
from appliance.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "firmware-config" / "appliance.toml"
ENV_PREFIX = "APPLIANCE_"

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable, no backslash


def _check_ae_title(value: str) -> str:
    if not _AE_TITLE.match(value) or not value.strip():
        raise ValueError("must be 1-16 printable ASCII characters, not all spaces, no backslash")
    return value.strip()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, value: Any, info: ValidationInfo) -> Any:
        """TOML ``true`` is not a number and ``1`` is not a switch (pydantic's lax mode
        would make ``port = true`` port 1). Strings, as the environment gives, still parse."""
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else None
        if annotation in (int, float) and isinstance(value, bool):
            raise ValueError("must be a number, not true or false")
        if annotation is bool and isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError("must be true or false, not a number")
        return value


class Peer(_Section):
    """A remote AE allowed to associate: ``AE@address``, ``*`` matching anything.

    The address is an IP address as the listener sees it (no host names: they are not
    resolved) or ``*``.
    """

    ae_title: str
    address: str

    @classmethod
    def parse(cls, text: str) -> Peer:
        ae, sep, address = text.strip().partition("@")
        if not sep or not ae or not address:
            raise ValueError(f"{text!r} is not AE@address")
        if ae != "*":
            ae = _check_ae_title(ae)
        if address != "*":
            try:
                address = str(ipaddress.ip_address(address))
            except ValueError:
                raise ValueError(f"{text!r}: {address!r} is not an IP address or *") from None
        return cls(ae_title=ae, address=address)

    def matches(self, ae_title: str, address: str) -> bool:
        return self.ae_title in ("*", ae_title.strip()) and self.address in ("*", address)

    @property
    def text(self) -> str:
        """``AE@address``, as :meth:`parse` reads it."""
        return f"{self.ae_title}@{self.address}"


class Destination(_Section):
    """A remote AE that results are sent to: ``AE@host:port``."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        ae, sep, hostport = text.strip().partition("@")
        host, colon, port = hostport.rpartition(":")
        if not sep or not colon or not ae or not host or not port.isdigit():
            raise ValueError(f"{text!r} is not AE@host:port")
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"{text!r}: port {port} is not in 1-65535")
        return cls(ae_title=_check_ae_title(ae), host=host, port=int(port))

    @property
    def text(self) -> str:
        """``AE@host:port``, as :meth:`parse` reads it (and the outbox names it)."""
        return f"{self.ae_title}@{self.host}:{self.port}"


class TlsSettings(_Section):
    """DICOM TLS on the listener (off by default)."""

    enabled: bool = False
    certificate: Path | None = None
    private_key: Path | None = None
    ca_certificates: Path | None = None
    require_client_certificate: bool = False

    @field_validator("certificate", "private_key", "ca_certificates", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class DicomSettings(_Section):
    """The DICOM listener: identity, access control, limits and series completion."""

    ae_title: str = "TRIAGE"
    bind_address: str = "0.0.0.0"
    port: int = Field(11112, ge=1, le=65535)
    open_mode: bool = False
    peers: tuple[Peer, ...] = ()
    destinations: tuple[Destination, ...] = ()
    max_associations: int = Field(16, ge=1, le=1000)
    max_pending_connections: int = Field(32, ge=1, le=10_000)
    max_pending_per_address: int = Field(4, ge=1, le=1000)
    acse_timeout_s: float = Field(30.0, gt=0)
    dimse_timeout_s: float = Field(60.0, gt=0)
    network_timeout_s: float = Field(60.0, gt=0)
    max_pdu_bytes: int = Field(262_144, ge=4096, le=16 * 1024 * 1024)
    max_rows: int = Field(16_384, ge=1, le=65_535)
    max_columns: int = Field(16_384, ge=1, le=65_535)
    max_frames: int = Field(10_000, ge=1)
    max_pixel_bytes: int = Field(2 * 1024**3, ge=1024)
    max_non_pixel_bytes: int = Field(64 * 1024**2, ge=1024)
    max_inflated_bytes: int = Field(0, ge=0)  # 0: max_pixel_bytes + max_non_pixel_bytes
    max_sequence_depth: int = Field(32, ge=1, le=200)
    min_free_disk_mb: int = Field(1024, ge=0)
    database_wait_s: float = Field(5.0, gt=0, le=300)
    quiet_period_s: float = Field(5.0, gt=0)
    release_grace_s: float = Field(1.0, ge=0)
    #: ``AE=seconds``: the release grace for series from that calling AE instead of
    #: ``release_grace_s`` (0 for a sender known to send each series in one association).
    release_grace_by_ae: tuple[tuple[str, float], ...] = ()
    #: After this many series in a row from one calling AE, each carried by one association
    #: and never reopened by a late instance, its release grace is 0 until one is split or
    #: reopened (0: never learn). ``release_grace_by_ae`` always wins.
    learn_grace_after_series: int = Field(20, ge=0)
    tls: TlsSettings = TlsSettings()

    _check_ae = field_validator("ae_title")(_check_ae_title)

    @property
    def max_dataset_bytes(self) -> int:
        """Most bytes a received dataset may have: the largest image the bounds allow plus
        the largest rest of a dataset. A longer one is cut off while it arrives."""
        return self.max_pixel_bytes + self.max_non_pixel_bytes

    @property
    def inflate_cap(self) -> int:
        """Most bytes a deflated dataset may inflate to: :attr:`max_dataset_bytes`, unless
        ``max_inflated_bytes`` says otherwise."""
        return self.max_inflated_bytes or self.max_dataset_bytes

    @property
    def min_free_disk_bytes(self) -> int:
        """The disk floor: below it stores are refused (0xA700) and ``/readyz`` says not ready."""
        return self.min_free_disk_mb * 1024 * 1024

    @field_validator("peers", mode="before")
    @classmethod
    def _parse_peers(cls, value: Any) -> Any:
        return tuple(Peer.parse(v) if isinstance(v, str) else v for v in _as_list(value))

    @field_validator("destinations", mode="before")
    @classmethod
    def _parse_destinations(cls, value: Any) -> Any:
        return tuple(Destination.parse(v) if isinstance(v, str) else v for v in _as_list(value))

    @field_validator("release_grace_by_ae", mode="before")
    @classmethod
    def _parse_graces(cls, value: Any) -> Any:
        return tuple(_ae_seconds(v) if isinstance(v, str) else v for v in _as_list(value))

    def release_grace_for(self, calling_ae: str, clean_in_a_row: int = 0) -> float:
        """The release grace for series from ``calling_ae``: ``release_grace_by_ae`` when it
        names the AE; else 0 when its last ``clean_in_a_row`` series (each in one
        association, none reopened) reach ``learn_grace_after_series``; else
        ``release_grace_s``."""
        named = dict(self.release_grace_by_ae)
        if calling_ae.strip() in named:
            return named[calling_ae.strip()]
        if self.learn_grace_after_series and clean_in_a_row >= self.learn_grace_after_series:
            return 0.0
        return self.release_grace_s


def _ae_seconds(text: str) -> tuple[str, float]:
    """``AE=seconds`` -> (AE title, seconds >= 0)."""
    ae, sep, seconds = text.partition("=")
    try:
        value = float(seconds)
    except ValueError:
        value = -1.0
    if not sep or value < 0 or value != value:
        raise ValueError(f"{text!r} is not AE=seconds (seconds a number, at least 0)")
    return _check_ae_title(ae), value


class WebTlsSettings(_Section):
    """HTTPS served by the appliance itself (off: plain HTTP, e.g. behind a reverse proxy)."""

    certificate: Path | None = None
    private_key: Path | None = None

    @field_validator("certificate", "private_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _both_or_neither(self) -> WebTlsSettings:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together (both set, or both empty)")
        return self

    @property
    def enabled(self) -> bool:
        return self.certificate is not None


class WebSettings(_Section):
    """The HTTP server for pages, API and health, and its sessions."""

    bind_address: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    session_idle_minutes: float = Field(30.0, gt=0)
    session_absolute_hours: float = Field(12.0, gt=0)
    max_upload_mb: int = Field(2048, ge=1)
    login_failures_per_user: int = Field(5, ge=1)
    login_failures_per_address: int = Field(20, ge=1)
    login_lockout_minutes: float = Field(15.0, gt=0)
    page_size: int = Field(50, ge=5, le=500)
    poll_interval_s: float = Field(10.0, ge=1)
    allowed_hosts: tuple[str, ...] = ()  # names besides IP addresses, localhost and our own
    trusted_proxies: tuple[str, ...] = ()  # addresses whose X-Forwarded-For names the client
    max_connections: int = Field(256, ge=1)
    max_connections_per_address: int = Field(32, ge=1)
    header_timeout_s: float = Field(20.0, gt=0)
    body_timeout_s: float = Field(20.0, gt=0)
    body_min_rate: int = Field(500, ge=1)  # bytes a second, once body_timeout_s has passed
    tls: WebTlsSettings = WebTlsSettings()

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        return tuple(str(v).strip().lower().rstrip(".") for v in _as_list(value) if str(v).strip())

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_addresses(cls, value: Any) -> Any:
        addresses = tuple(str(v).strip() for v in _as_list(value) if str(v).strip())
        for address in addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"{address!r} is not an IP address") from None
        return addresses


class ModelSettings(_Section):
    """Model packages: which signing keys are trusted, where they are kept, which backend."""

    trusted_keys: tuple[Path, ...] = ()
    pin_backend: str | None = None

    @field_validator("pin_backend", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("trusted_keys", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return tuple(_as_list(value))


class SenderSettings(_Section):
    """Sending result objects to the destinations: retries, circuit breaker, timeouts."""

    retry_initial_s: float = Field(5.0, gt=0)
    retry_max_s: float = Field(300.0, gt=0)
    retry_jitter: float = Field(0.2, ge=0, le=1)
    max_attempts: int = Field(10, ge=1)
    breaker_failures: int = Field(5, ge=1)
    breaker_cooldown_s: float = Field(60.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    acse_timeout_s: float = Field(30.0, gt=0)
    dimse_timeout_s: float = Field(60.0, gt=0)
    poll_interval_s: float = Field(0.25, gt=0)
    batch_size: int = Field(50, ge=1, le=1000)

    @property
    def longest_wait_s(self) -> float:
        """The longest the sender ever holds an object or a lane: a wait beyond it was set
        before the wall clock stepped back."""
        return max(self.retry_max_s, self.breaker_cooldown_s)

    @field_validator("retry_max_s")
    @classmethod
    def _at_least_initial(cls, value: float, info: Any) -> float:  # info: ValidationInfo
        if value < info.data.get("retry_initial_s", 0):
            raise ValueError("must not be below retry_initial_s")
        return value


class WorkerSettings(_Section):
    """The inference worker: routing, leases, batching and limits."""

    routing_file: Path = Path(__file__).resolve().parent.parent / "firmware-config" / "routing.toml"
    poll_interval_s: float = Field(0.1, gt=0)
    lease_s: float = Field(300.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    batch_size: int = Field(16, ge=1, le=1024)
    series_timeout_s: float = Field(120.0, gt=0)
    memory_limit_mb: int = Field(4096, ge=256)
    #: Model inputs of instances prepared as they arrive, kept until their series' job
    #: (``appliance.triage.prepared``); 0: every series is prepared at completion.
    prepare_cache_mb: int = Field(512, ge=0)
    summary_interval_s: float = Field(1.0, gt=0)
    drift_interval_s: float = Field(60.0, gt=0)
    heartbeat_s: float = Field(60.0, gt=0)
    hang_restart_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _lease_outlasts_a_series(self) -> WorkerSettings:
        if self.lease_s <= self.series_timeout_s:
            raise ValueError("lease_s must exceed series_timeout_s, or a slow series is taken twice")
        if self.prepare_cache_mb > self.memory_limit_mb // 2:
            raise ValueError("prepare_cache_mb must be at most half of memory_limit_mb: a series' job needs the rest")
        return self


class SyncSettings(_Section):
    """Talking to the central hub: report upload, retries, release downloads, HTTPS."""

    batch_size: int = Field(100, ge=1, le=200)
    retry_initial_s: float = Field(2.0, gt=0)
    retry_max_s: float = Field(60.0, gt=0)
    round_attempts: int = Field(4, ge=1)
    download_attempts: int = Field(3, ge=1)
    retry_refused_s: float = Field(86400.0, ge=0)
    timeout_s: float = Field(30.0, gt=0)
    #: A round that cannot reach the hub when none has for this long alerts (once an episode).
    alert_after_s: float = Field(86400.0, gt=0)
    ca_certificates: Path | None = None
    client_certificate: Path | None = None
    client_private_key: Path | None = None

    @field_validator("ca_certificates", "client_certificate", "client_private_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class DriftSettings(_Section):
    """Drift monitoring: windows, thresholds, alerting and the anonymised daily report."""

    window_days: int = Field(7, ge=1, le=90)
    min_series: int = Field(150, ge=1)
    sigma: float = Field(3.0, gt=0, le=10)
    alert_after: int = Field(2, ge=1)
    alert_of: int = Field(3, ge=1)
    fallback_js_distance: float = Field(0.1, gt=0, le=1)
    k: int = Field(10, ge=2)
    noise_epsilon: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _after_within_of(self) -> DriftSettings:
        if self.alert_after > self.alert_of:
            raise ValueError("alert_after must not exceed alert_of")
        return self


class ReportSettings(_Section):
    """The result objects: the organisation root their UIDs are derived under."""

    uid_root: str = "2.25"

    @field_validator("uid_root")
    @classmethod
    def _root(cls, value: str) -> str:
        if not re.fullmatch(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*", value) or len(value) > 40:
            raise ValueError("must be a UID root: digits and dots, no leading zeros, at most 40 characters")
        return value


class RetentionSettings(_Section):
    """How long received pixel data stays once its series is final and every result for its
    study delivered (index rows, results and the audit log are kept)."""

    pixel_days: float = Field(7.0, ge=0)
    interval_s: float = Field(600.0, gt=0)
    batch_series: int = Field(50, ge=1)


class AlertSettings(_Section):
    """Outbound alerts: syslog and a JSON webhook (empty: none)."""

    syslog: bool = True
    webhook_url: str = ""
    timeout_s: float = Field(3.0, gt=0)
    interval_s: float = Field(60.0, gt=0)

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http:// or https:// URL, or empty")
        return value


class Settings(_Section):
    """Everything the appliance can be told; see ``firmware-config/appliance.toml``."""

    data_dir: Path = Path("var/data")
    #: Start even when the data folder is not encrypted at rest (``appliance.at_rest``).
    allow_unencrypted: bool = False
    log_level: str = "INFO"
    dicom: DicomSettings = DicomSettings()
    web: WebSettings = WebSettings()
    models: ModelSettings = ModelSettings()
    worker: WorkerSettings = WorkerSettings()
    sender: SenderSettings = SenderSettings()
    sync: SyncSettings = SyncSettings()
    drift: DriftSettings = DriftSettings()
    report: ReportSettings = ReportSettings()
    retention: RetentionSettings = RetentionSettings()
    alerts: AlertSettings = AlertSettings()

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "appliance.db"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [part for part in (p.strip() for p in value.split(",")) if part]
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):  # `peers = 0` in a file: named by its key, not a TypeError
        raise ValueError(f"must be a list or a comma-separated string, not {type(value).__name__}")
    return list(value)


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """Map ``APPLIANCE_*`` variables onto the nested settings keys they name."""
    sections = {
        name: model.annotation.model_fields
        for name, model in Settings.model_fields.items()
        if isinstance(model.annotation, type) and issubclass(model.annotation, BaseModel)
    }
    overrides: dict[str, Any] = {}
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX) or var in ("APPLIANCE_CONFIG", failpoints.VARIABLE):
            continue  # not settings: where the file is; a crash test's armed crash point
        key = var[len(ENV_PREFIX) :].lower()
        if key in Settings.model_fields and key not in sections:
            overrides[key] = value
            continue
        for section, fields in sections.items():
            prefix = section + "_"
            if key.startswith(prefix):
                sub = key[len(prefix) :]
                if sub.startswith("tls_") and "tls" in fields:
                    overrides.setdefault(section, {}).setdefault("tls", {})[sub[4:]] = value
                    break
                if sub in fields:
                    overrides.setdefault(section, {})[sub] = value
                    break
        else:
            raise ConfigError(f"{var}: no such setting")
    return overrides


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"] if not isinstance(part, int))
        if item["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        else:
            got = item.get("input")
            shown = f" (got {got!r})" if not isinstance(got, (dict, list, tuple)) else ""
            lines.append(f"{key}: {item['msg']}{shown}")
    return "; ".join(lines)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning syntax errors into a ConfigError naming the file."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_settings(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Load and validate the settings.

    Parameters
    ----------
    path : Path, optional
        TOML file; defaults to ``$APPLIANCE_CONFIG`` or the embedded defaults.
    environ : dict, optional
        Environment to read overrides from; defaults to ``os.environ``.

    Raises
    ------
    ConfigError
        With every offending key and the reason.
    """
    environ = dict(os.environ if environ is None else environ)
    if path is None:
        path = Path(environ.get("APPLIANCE_CONFIG", DEFAULT_CONFIG_PATH))
    raw = _merge(read_toml(path), _env_overrides(environ))
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    return with_local_dicom(settings, read_local_dicom(local_dicom_path(settings.data_dir)))


# Peers and destinations changed on the admin page ---------------------------------------
LOCAL_DICOM_FILE = "dicom-endpoints.json"
LOCAL_DICOM_KINDS: dict[str, type[Peer] | type[Destination]] = {"peers": Peer, "destinations": Destination}


def local_dicom_path(data_dir: Path) -> Path:
    """Where the admin page keeps its peer and destination changes."""
    return data_dir / LOCAL_DICOM_FILE


def empty_local_dicom() -> dict[str, dict[str, list[str]]]:
    return {kind: {"added": [], "removed": []} for kind in LOCAL_DICOM_KINDS}


def read_local_dicom(path: Path) -> dict[str, dict[str, list[str]]]:
    """The changes kept in ``path``: ``{"peers"|"destinations": {"added"|"removed": [text]}}``.

    Every entry is checked as ``[dicom] peers`` and ``destinations`` are, and written back
    in its canonical form. A missing file means no change.

    Raises
    ------
    ConfigError
        Naming the file and the key when the file is not JSON or an entry is malformed.
    """
    import json

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return empty_local_dicom()
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not readable JSON: {exc}") from None
    if not isinstance(raw, dict) or set(raw) - set(LOCAL_DICOM_KINDS):
        raise ConfigError(f"{path}: expected an object with only {' and '.join(LOCAL_DICOM_KINDS)}")
    local = empty_local_dicom()
    for kind, model in LOCAL_DICOM_KINDS.items():
        changes = raw.get(kind, {})
        if not isinstance(changes, dict) or set(changes) - {"added", "removed"}:
            raise ConfigError(f"{path}: {kind}: expected an object with only added and removed")
        for change in ("added", "removed"):
            entries = changes.get(change, [])
            if not isinstance(entries, list):
                raise ConfigError(f"{path}: {kind}.{change}: expected a list")
            for entry in entries:
                try:
                    local[kind][change].append(model.parse(str(entry)).text)
                except ValueError as exc:
                    raise ConfigError(f"{path}: {kind}.{change}: {exc}") from None
    return local


def apply_local_dicom(entries: tuple, kind: str, local: dict[str, dict[str, list[str]]]) -> tuple:
    """``entries`` (peers or destinations) less the removed ones, plus the added ones."""
    model = LOCAL_DICOM_KINDS[kind]
    removed = set(local[kind]["removed"])
    kept = [e for e in entries if e.text not in removed]
    texts = {e.text for e in kept}
    return (*kept, *(model.parse(t) for t in local[kind]["added"] if t not in texts and t not in removed))


def with_local_dicom(settings: Settings, local: dict[str, dict[str, list[str]]]) -> Settings:
    """``settings`` with the admin page's peer and destination changes applied."""
    dicom = settings.dicom.model_copy(
        update={
            "peers": apply_local_dicom(settings.dicom.peers, "peers", local),
            "destinations": apply_local_dicom(settings.dicom.destinations, "destinations", local),
        }
    )
    return settings.model_copy(update={"dicom": dicom})


def settings_as_dict(settings: Settings) -> dict[str, Any]:
    """A JSON-friendly view of the settings, for ``appliance config show``."""
    return settings.model_dump(mode="json")


def check_private_key(path: Path, setting: str) -> None:
    """Refuse a TLS private key that other users can read or write: the service reads it
    as its owner or group (root:appliance 0640, or 0600), nobody else may.

    Raises
    ------
    ConfigError
        The key is missing or unreadable, or its mode gives "other" any access.
    """
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as exc:
        raise ConfigError(f"{setting} {path}: {exc.strerror}") from None
    if mode & 0o007:
        raise ConfigError(
            f"{setting} {path} is open to other users (mode {mode:04o}): "
            f"chmod 0640 (owner root, group appliance) or 0600 before starting"
        )
