"""The ``appliance`` command."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from appliance.config import Settings, load_settings, settings_as_dict
from appliance.errors import ApplianceError


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pynetdicom's INFO/DEBUG output echoes request identifiers; keep it to problems.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request


def _until_signalled(stop: threading.Event) -> None:
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


def _parts(settings: Settings):
    from appliance.parts import Parts

    return Parts(settings)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """The listener and the web server here; the worker and the sender in a child process
    with a memory limit."""
    from appliance.triage.process import WorkerProcess
    from appliance.web.server import start_in_thread

    listener = _parts(settings).listener()
    worker = WorkerProcess(settings.worker.memory_limit_mb)
    listener.start()
    worker.start()
    web, web_thread = start_in_thread(_parts(settings))
    _until_signalled(threading.Event())
    web.should_exit = True
    worker.stop(timeout=30)
    web_thread.join(timeout=15)
    listener.stop()
    return 0


def cmd_listener(args: argparse.Namespace, settings: Settings) -> int:
    listener = _parts(settings).listener()
    listener.start()
    _until_signalled(threading.Event())
    listener.stop()
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """The worker and the result sender (results leave from the process that makes them)."""
    worker, sender = _parts(settings).worker_and_sender()
    sender.start()
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    worker.run()
    sender.stop(timeout=30)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.db import open_database
    from appliance.status import collect_status

    status = collect_status(open_database(settings.db_path), settings.data_dir)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"instances received: {status['instances_received']}")
    for s in status["series"]:
        print(f"{s['state']:<12} {s['modality']:<4} {s['instances']:>6}  {s['series_instance_uid']}")
    return 0


def cmd_config_validate(args: argparse.Namespace) -> int:
    load_settings(Path(args.path) if args.path else None)
    print("configuration is valid")
    return 0


def cmd_config_show(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(settings_as_dict(settings), indent=2))
    return 0


def _registry(settings: Settings):
    return _parts(settings).registry()


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def cmd_models_list(args: argparse.Namespace, settings: Settings) -> int:
    models = _registry(settings).models()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": m.id,
                        "version": m.version,
                        "state": m.state,
                        "package_sha256": m.package_sha256,
                        "finding": m.manifest.finding,
                        "selection": m.selection,
                    }
                    for m in models
                ],
                indent=2,
            )
        )
        return 0
    for m in models:
        chosen = m.selection["chosen"] if m.selection else "-"
        print(f"{m.id:<28} {m.version:<10} {m.state:<10} {chosen}")
    return 0


def cmd_models_install(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    model = registry.install(Path(args.package), _actor())
    print(f"installed {model.label}")
    if args.activate:
        model = registry.activate(model.id, model.version, _actor())
        print(f"{model.label} is active on {model.selection['chosen']}")
    return 0


def cmd_models_change(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    if args.action == "rollback":
        model = registry.rollback(args.model_id, _actor())
    else:
        model = getattr(registry, args.action)(args.model_id, args.version, _actor())
    chosen = model.selection["chosen"] if model.selection else "-"
    print(f"{model.label} is {model.state} on {chosen}")
    for trial in (model.selection or {}).get("trials", []):
        speed = (
            f"{trial['ms_per_image']:.2f} ms/image"
            if trial["ms_per_image"]
            else trial.get("error") or "failed golden test"
        )
        print(f"  {trial['backend']}/{trial['device']}/{trial['precision']}: {speed}")
    return 0


def cmd_models_verify(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.models.package import verify_package

    keys = [Path(k) for k in args.trusted_key] or list(settings.models.trusted_keys)
    manifest = verify_package(Path(args.package), keys)
    print(f"ok: {manifest.id} {manifest.version} ({manifest.task}), signature and hashes verified")
    return 0


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.audit.chain import verify_database
    from appliance.db import open_database

    problems = verify_database(open_database(settings.db_path))
    for problem in problems:
        print(f"seq {problem.seq}: {problem.problem}")
    if problems:
        return 1
    print("audit log intact")
    return 0


def cmd_audit_export(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.audit.export import export
    from appliance.db import open_database

    count = export(open_database(settings.db_path), sys.stdout, args.format, args.kind)
    print(f"exported {count} rows", file=sys.stderr)
    return 0


# sync (issue 12) ----------------------------------------------------------------------
def cmd_sync_enrol(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.sync.round import enrol

    enrolment = enrol(settings, args.hub, args.token)
    print(f"enrolled as device {enrolment.device_id} (ring {enrolment.ring}) at {enrolment.hub_url}")
    return 0


def cmd_sync_round(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import asdict

    from appliance.sync.round import run_round
    from appliance.triage.pipeline import golden_series_inputs

    result = run_round(settings, golden_series_inputs=golden_series_inputs)
    print(json.dumps(asdict(result), indent=2))
    return 0 if not (result.push_error or result.release_error or result.checkin_error) else 1


def cmd_sync_status(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.sync.round import status

    print(json.dumps(status(settings), indent=2))
    return 0


def cmd_sync_queue(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.db import open_database
    from appliance.sync.outbox import enqueue_report

    conn = open_database(settings.db_path).conn
    queued = sum(enqueue_report(conn, json.loads(Path(p).read_text())) for p in args.report)
    print(f"queued {queued} report(s) for the hub")
    return 0


def _add_sync_parser(sub) -> None:
    sync = sub.add_parser("sync", help="one round with the central hub (push reports, stage releases)")
    sync.set_defaults(func=cmd_sync_round)
    actions = sync.add_subparsers(dest="sync_action")
    enrol = actions.add_parser("enrol", help="once: make the device key, spend a one-time token at the hub")
    enrol.add_argument("--hub", required=True, help="the hub's base URL, e.g. https://hub.example:8443")
    enrol.add_argument("--token", required=True, help="from `python -m training.hub token`")
    enrol.set_defaults(func=cmd_sync_enrol)
    actions.add_parser("status", help="enrolment, queued reports, last round, metadata age").set_defaults(
        func=cmd_sync_status
    )
    queue = actions.add_parser("queue", help="queue anonymised report JSON files for the hub")
    queue.add_argument("report", nargs="+")
    queue.set_defaults(func=cmd_sync_queue)


# Drift monitoring (issue 11) -------------------------------------------------------------
def _drift_db(settings: Settings):
    """The database as the worker's upkeep last left it (windows are closed there)."""
    from appliance.db import open_database

    return open_database(settings.db_path)


def cmd_drift_status(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.drift.service import day_of, drift_status
    from appliance.outcome.upkeep import DRIFT_WINDOWS, last_ran

    conn = _drift_db(settings).conn
    status = {
        **drift_status(conn, settings.drift, day_of(time.time())),
        "windows_closed_at": last_ran(conn, DRIFT_WINDOWS),
    }
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    closed_at = status["windows_closed_at"]
    print(
        "windows closed by the worker "
        + (f"{time.time() - closed_at:.0f} s ago" if closed_at is not None else "never yet (is the worker running?)")
    )
    for m in status["models"]:
        w = m["window"]
        judged = "judged" if w["judged"] else f"not judged (< {w['min_series']} series)"
        print(
            f"{m['model_id']} {m['model_version']}: {w['series']} series in the {w['days']}-day window "
            f"ending {w['end']}, {w['flagged']} flagged, not analysed {w['not_analysed'] or 0}; {judged}"
        )
        for name, f in sorted(m["features"].items()):
            stat = (
                (
                    f"{f['statistic']} {f['value']:.4g} (threshold {f['threshold']:.4g}, {f['threshold_source']})"
                    + ("  EXCEEDS" if f["exceeded"] else "")
                )
                if "statistic" in f
                else "no reference yet"
            )
            print(f"  {name:<20} {stat}")
        print(f"  alerting: {', '.join(m['alerting']) or 'none'}")
    if not status["models"]:
        print("no series recorded yet")
    return 0


def cmd_drift_report(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.drift.report import daily_report

    print(json.dumps(daily_report(_drift_db(settings).conn, settings.drift, args.day), indent=2))
    return 0


def cmd_drift_plot(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.drift.plot import write_plots
    from appliance.drift.service import day_of

    for path in write_plots(_drift_db(settings).conn, settings.drift, Path(args.out), day_of(time.time())):
        print(path)
    return 0


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day YYYY-MM-DD") from None


def _add_drift_commands(sub) -> None:
    drift = sub.add_parser("drift", help="drift monitoring").add_subparsers(dest="action", required=True)
    status = drift.add_parser("status", help="features, statistics, thresholds and alerts per model version")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_drift_status)
    report = drift.add_parser("report", help="the anonymised report of one day, as JSON")
    report.add_argument("--day", type=_day, required=True, help="YYYY-MM-DD (UTC)")
    report.set_defaults(func=cmd_drift_report)
    plot = drift.add_parser("plot", help="write PNGs: reference vs current, statistic over time")
    plot.add_argument("--out", required=True, help="folder for the PNGs")
    plot.set_defaults(func=cmd_drift_plot)


# Web: server, users, tokens -------------------------------------------------------------
def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    """The web pages, API, health and metrics alone (for systemd)."""
    from appliance.web.server import build_server

    build_server(_parts(settings)).run()
    return 0


def cmd_users_add(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.db import open_database
    from appliance.web.accounts import add_user

    password = sys.stdin.readline().rstrip("\r\n")
    user = add_user(open_database(settings.db_path).conn, args.name, args.role, password, _actor())
    print(f"added {user.role} {user.name}")
    return 0


def cmd_tokens_create(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.db import open_database
    from appliance.web.accounts import create_token

    name = args.name or f"{args.role}-token"
    token = create_token(open_database(settings.db_path).conn, args.role, name, _actor())
    print(f"token {name!r} for role {args.role}; it is shown once, only its hash is kept:")
    print(token)
    return 0


def _add_web_commands(sub) -> None:
    from appliance.web.accounts import ROLES

    sub.add_parser("web", help="run the web pages, API, /healthz, /readyz and /metrics").set_defaults(func=cmd_web)
    users = sub.add_parser("users", help="web users").add_subparsers(dest="action", required=True)
    add = users.add_parser("add", help="add a user; the password is read from stdin (one line)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.set_defaults(func=cmd_users_add)
    tokens = sub.add_parser("tokens", help="API bearer tokens").add_subparsers(dest="action", required=True)
    create = tokens.add_parser("create", help="create a token; it is printed once, on the last line")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", help="what the token is for (default: ROLE-token)")
    create.set_defaults(func=cmd_tokens_create)


# Outbox: dead letters --------------------------------------------------------------------
def cmd_outbox_list(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.db import open_database
    from appliance.send.outbox import Outbox
    from appliance.states import OutboxState

    items = Outbox(open_database(settings.db_path)).items(args.destination, OutboxState.DEAD if args.dead else None)
    for item in items:
        status = f"0x{item.last_status:04X}" if item.last_status is not None else "-"
        print(
            f"{item.id:>8} {item.state:<8} {item.destination:<32} tries {item.attempts:>3} {status:<7}"
            f" {item.last_error or ''}"
        )
    return 0


def cmd_outbox_change(args: argparse.Namespace, settings: Settings) -> int:
    """Retry or discard one dead letter (audited, as on the admin page)."""
    from appliance.db import open_database
    from appliance.send.outbox import Outbox

    outbox = Outbox(open_database(settings.db_path))
    done = outbox.retry(args.id, _actor()) if args.action == "retry" else outbox.discard(args.id, _actor())
    if not done:
        print(f"error: outbox {args.id} is not a dead letter", file=sys.stderr)
        return 1
    print(f"outbox {args.id}: {'queued again' if args.action == 'retry' else 'discarded'}")
    return 0


def cmd_dicom_change(args: argparse.Namespace, settings: Settings) -> int:
    """Add or remove a peer or destination as the admin page does (kept, audited)."""
    from appliance.db import open_database
    from appliance.web.dicom_endpoints import change

    entry = change(open_database(settings.db_path).conn, settings, args.kind, args.action, args.entry, _actor())
    print(
        f"{args.kind}: {entry} {'added' if args.action == 'add' else 'removed'}; "
        "the listener and the sender use it after the appliance service restarts"
    )
    return 0


def _add_outbox_commands(sub) -> None:
    """``appliance outbox`` (dead letters) and ``appliance dicom`` (peers, destinations)."""
    outbox = sub.add_parser("outbox", help="result objects waiting for or given up by destinations").add_subparsers(
        dest="action", required=True
    )
    listing = outbox.add_parser("list", help="rows, oldest first")
    listing.add_argument("--dead", action="store_true", help="dead letters only")
    listing.add_argument("--destination", help="one destination, AE@host:port")
    listing.set_defaults(func=cmd_outbox_list)
    for action, text in (
        ("retry", "queue a dead letter again, due now, with a fresh try count (audited)"),
        ("discard", "give up on a dead letter for good (audited)"),
    ):
        change = outbox.add_parser(action, help=text)
        change.add_argument("id", type=int, help="the outbox id (appliance outbox list --dead)")
        change.set_defaults(func=cmd_outbox_change)
    dicom = sub.add_parser("dicom", help="peers and destinations, kept beside the data").add_subparsers(
        dest="kind", required=True
    )
    for kind, form in (("peers", "AE@address"), ("destinations", "AE@host:port")):
        actions = dicom.add_parser(
            kind, help=f"add or remove {kind} ({form}); applied at the next start"
        ).add_subparsers(dest="action", required=True)
        for action in ("add", "remove"):
            one = actions.add_parser(action, help=f"{action} one ({form}; audited)")
            one.add_argument("entry", metavar=form)
            one.set_defaults(func=cmd_dicom_change)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="DICOM triage appliance")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "serve", help="the listener and the web server, and the worker with the sender in a child process"
    ).set_defaults(func=cmd_serve)
    sub.add_parser("listener", help="run the DICOM listener").set_defaults(func=cmd_listener)
    sub.add_parser("worker", help="run the inference worker and the result sender").set_defaults(func=cmd_worker)
    status = sub.add_parser("status", help="counts and series states")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    config = sub.add_parser("config", help="check or print the settings").add_subparsers(dest="action", required=True)
    validate = config.add_parser("validate", help="check a settings file; names any bad key")
    validate.add_argument("path", nargs="?", help="TOML file (default: the active one)")
    validate.set_defaults(func=cmd_config_validate, needs_settings=False)
    config.add_parser("show", help="print the effective settings").set_defaults(func=cmd_config_show)

    models = sub.add_parser("models", help="model packages").add_subparsers(dest="action", required=True)
    verify = models.add_parser("verify", help="check a package's signature, hashes and manifest")
    verify.add_argument("package")
    verify.add_argument("--trusted-key", action="append", default=[], help="public key (PEM)")
    verify.set_defaults(func=cmd_models_verify)
    listing = models.add_parser("list", help="installed models and their states")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_models_list)
    install = models.add_parser("install", help="verify and install a package (versions only move forward)")
    install.add_argument("package")
    install.add_argument("--activate", action="store_true", help="then activate it (golden test first)")
    install.set_defaults(func=cmd_models_install)
    for action, text in (
        ("shadow", "run beside the active model, never shown or sent"),
        ("activate", "golden-test on every backend, pick the fastest, make active"),
    ):
        change = models.add_parser(action, help=text)
        change.add_argument("model_id")
        change.add_argument("version")
        change.set_defaults(func=cmd_models_change)
    rollback = models.add_parser("rollback", help="go back to the previous version (explicit)")
    rollback.add_argument("model_id")
    rollback.set_defaults(func=cmd_models_change)

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(dest="action", required=True)
    audit.add_parser("verify", help="check the hash chain").set_defaults(func=cmd_audit_verify)
    export_cmd = audit.add_parser("export", help="write the audit log as CSV or JSON to stdout")
    export_cmd.add_argument("--format", choices=("csv", "json"), default="csv")
    export_cmd.add_argument("--kind", help="only rows of this kind, e.g. inference")
    export_cmd.set_defaults(func=cmd_audit_export)
    _add_sync_parser(sub)
    _add_drift_commands(sub)
    _add_web_commands(sub)
    _add_outbox_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not getattr(args, "needs_settings", True):
            return args.func(args)
        settings = load_settings()
        _configure_logging(settings.log_level)
        return args.func(args, settings)
    except ApplianceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
