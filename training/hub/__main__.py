"""``python -m training.hub``: serve the hub, or administer it.

Usage
-----
python -m training.hub --port PORT --data-dir DIR [--database-url postgresql://...]
    serve (creates the TUF repository on first start, keys in --offline-keys)
python -m training.hub token --data-dir DIR [--site NAME] [--ring pilot|all]
    a one-time enrolment token, on the last line
python -m training.hub publish PACKAGE --data-dir DIR [--ring pilot|all]
python -m training.hub publish --run RUN_ID [--tracking-uri URI] --data-dir DIR [--ring pilot|all]
    verify a signed model package (or the one an MLflow build run logged) and publish it as
    a TUF target
python -m training.hub devices --data-dir DIR
    the enrolled devices
python -m training.hub revoke DEVICE_ID --data-dir DIR
    forget a device's pinned key (lost or leaked); its requests are refused from now on
python -m training.hub devices set-ring DEVICE_ID pilot|all --data-dir DIR
    move a device to another ring; it follows at its next check-in
python -m training.hub devices clear-audit DEVICE_ID --reason TEXT --data-dir DIR
    forget a device's audit problem once explained (a restore cuts its log short): the next
    check-in anchors its chain again; when, why and what was cleared stay on the fleet page
python -m training.hub demote MODEL_ID VERSION --reason TEXT --data-dir DIR
    move a release back one ring (all -> pilot); the reason is kept with its decisions
python -m training.hub withdraw MODEL_ID VERSION --data-dir DIR
    stop a release: no longer offered, boxes drop it from shadow, active ones are told
python -m training.hub promote MODEL_ID VERSION --data-dir DIR [--min-boxes 3 ...]
    move a release to the next ring if the field evidence meets the rule; the rule and its
    evaluation are printed and kept either way
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path

from appliance import __version__ as appliance_version
from appliance.errors import PackageError

COMMANDS = ("token", "operator-token", "publish", "devices", "revoke", "allow-category", "promote", "demote",
            "withdraw")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, required=True, help="hub data (SQLite, TUF repository)")
    parser.add_argument("--database-url", help="postgresql://... instead of SQLite in the data dir")
    parser.add_argument("--offline-keys", type=Path,
                        help="folder with the root and targets keys (default DATA_DIR/offline-keys; "
                             "keep it on removable media in production)")


def _offline_keys(args: argparse.Namespace) -> Path:
    return args.offline_keys or args.data_dir / "offline-keys"


def _open(args: argparse.Namespace):
    from training.hub.repository import Repository
    from training.hub.store import open_hub_database

    repository = Repository(args.data_dir)
    if repository.init(_offline_keys(args)):
        print(f"created the TUF repository in {repository.root_dir}; root and targets keys in "
              f"{_offline_keys(args)}", file=sys.stderr)
    return open_hub_database(args.data_dir, args.database_url), repository


def serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.hub", description=__doc__.split("\n")[0])
    _common(parser)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="interface (default loopback)")
    parser.add_argument("--refresh-interval-s", type=float, default=300.0,
                        help="how often snapshot/timestamp are re-signed when near expiry (0: never)")
    parser.add_argument("--tls-certificate", type=Path, help="PEM certificate chain (HTTPS)")
    parser.add_argument("--tls-private-key", type=Path, help="PEM private key (HTTPS)")
    parser.add_argument("--tls-client-ca", type=Path,
                        help="PEM CAs a box's client certificate must chain to (mutual TLS)")
    args = parser.parse_args(argv)

    import ssl

    import uvicorn

    from training.hub.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    db, repository = _open(args)
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(args.refresh_interval_s):
            try:
                repository.refresh_online()
            except Exception:  # keep serving; the next round tries again
                logging.getLogger("training.hub").exception("re-signing snapshot/timestamp failed")

    if args.refresh_interval_s > 0:
        repository.refresh_online()
        threading.Thread(target=refresh, name="tuf-refresh", daemon=True).start()
    tls = {}
    if args.tls_certificate:
        tls = {"ssl_certfile": str(args.tls_certificate), "ssl_keyfile": str(args.tls_private_key)}
        if args.tls_client_ca:
            tls.update(ssl_ca_certs=str(args.tls_client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    uvicorn.run(create_app(db, repository), host=args.host, port=args.port, log_level="info",
                access_log=False, **tls)
    stop.set()
    return 0


def admin(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.hub")
    sub = parser.add_subparsers(dest="command", required=True)
    token = sub.add_parser("token", help="print a one-time enrolment token (last line)")
    _common(token)
    token.add_argument("--site", default="site", help="the site's name on the fleet page")
    token.add_argument("--ring", choices=("pilot", "all"), default="all")
    token.add_argument("--ttl-h", type=float, default=72.0, help="hours until the token expires")
    operator = sub.add_parser("operator-token", help="print a token for the fleet page (last line)")
    _common(operator)
    operator.add_argument("--name", default="operator", help="whose token it is")
    publish = sub.add_parser("publish", help="publish a signed model package as a release")
    _common(publish)
    publish.add_argument("package", type=Path, nargs="?", help="the package (or --run)")
    publish.add_argument("--run", help="publish the package this MLflow build run logged")
    publish.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite under var/mlflow)")
    publish.add_argument("--ring", choices=("pilot", "all"), default="all")
    publish.add_argument("--min-appliance-version", default=appliance_version)
    publish.add_argument("--trusted-key", type=Path, action="append", default=[],
                         help="the package must be signed by one of these (PEM); default: "
                              "only check it is intact")
    devices = sub.add_parser("devices", help="list enrolled devices, or: devices set-ring DEVICE_ID RING, "
                                             "or: devices clear-audit DEVICE_ID --reason TEXT")
    _common(devices)
    devices.add_argument("action", nargs="*", help="set-ring DEVICE_ID pilot|all, or clear-audit DEVICE_ID")
    devices.add_argument("--reason", help="clear-audit: why the problem is explained (kept on the device)")
    revoke = sub.add_parser("revoke", help="forget a device's key: its requests are refused from now on")
    _common(revoke)
    revoke.add_argument("device_id")
    allow = sub.add_parser("allow-category", help="keep a drift category label from now on (the defaults: "
                                                  "Body Part Examined's defined terms and 'unknown')")
    _common(allow)
    allow.add_argument("feature", choices=("kernel", "manufacturer_model", "body_part"))
    allow.add_argument("labels", nargs="+", help="labels as the box sends them (see a box's drift page)")
    promote = sub.add_parser("promote", help="move a release to the next ring when the field evidence allows")
    _common(promote)
    promote.add_argument("model_id")
    promote.add_argument("version")
    promote.add_argument("--min-boxes", type=int, default=3)
    promote.add_argument("--min-days", type=int, default=7)
    promote.add_argument("--min-agreement", type=float, default=0.95)
    promote.add_argument("--max-not-analysed", type=float, default=None,
                         help="bound on the shadow's not-analysed rate (default: the card's, else 0.05)")
    demote = sub.add_parser("demote", help="move a release back to the previous ring (all -> pilot), with a reason")
    _common(demote)
    demote.add_argument("model_id")
    demote.add_argument("version")
    demote.add_argument("--reason", required=True, help="why (kept with the release's decisions)")
    withdraw = sub.add_parser("withdraw", help="stop a release: boxes drop it from shadow, active ones are told")
    _common(withdraw)
    withdraw.add_argument("model_id")
    withdraw.add_argument("version")
    args = parser.parse_args(argv)
    if args.command == "devices" and args.action and not (
            (args.action[0] == "set-ring" and len(args.action) == 3)
            or (args.action[0] == "clear-audit" and len(args.action) == 2 and (args.reason or "").strip())):
        parser.error("devices takes no arguments, or: set-ring DEVICE_ID RING, or: clear-audit DEVICE_ID --reason TEXT")
    db, repository = _open(args)
    now = time.time()
    code = 0
    if args.command == "token":
        from training.hub.service import create_token

        print(f"enrolment token for site {args.site!r}, ring {args.ring}, valid {args.ttl_h:g} h:")
        print(create_token(db, args.site, args.ring, args.ttl_h * 3600, now))
    elif args.command == "operator-token":
        from training.hub.service import create_operator_token

        print(f"fleet page token for {args.name!r} (HTTP Basic password, any user name, or Bearer):")
        print(create_operator_token(db, args.name, now))
    elif args.command == "publish":
        import tempfile

        from appliance.models.package import verify_package

        if (args.package is None) == (args.run is None):
            print("error: give a package or --run RUN_ID (one of them)", file=sys.stderr)
            return 2
        scratch = tempfile.TemporaryDirectory(prefix="run-package-")
        try:
            if args.run is not None:
                from training.tracking import package_of_run

                args.package = package_of_run(args.run, Path(scratch.name), args.tracking_uri)
                print(f"package {args.package.name} from MLflow run {args.run}")
            manifest = verify_package(args.package, args.trusted_key or None)
            target = repository.publish(args.package, _offline_keys(args), model_id=manifest.id,
                                        version=manifest.version, ring=args.ring,
                                        min_appliance_version=args.min_appliance_version)
        except (PackageError, ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            scratch.cleanup()
        from training.hub.releases import record_release

        record_release(db, target, manifest, args.ring, args.min_appliance_version, now)
        print(f"published {target.path} (ring {args.ring}, sha256 {target.hashes['sha256']})")
    elif args.command == "allow-category":
        from training.hub.categories import allow

        try:
            added = [label for label in args.labels if allow(db, args.feature, label, now)]
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{args.feature}: allowed now: {', '.join(added) or 'none'}; "
              f"already allowed: {', '.join(sorted(set(args.labels) - set(added))) or 'none'}")
    elif args.command == "devices" and args.action and args.action[0] == "clear-audit":
        from training.hub.service import clear_audit_problem

        try:
            cleared = clear_audit_problem(db, args.action[1], args.reason.strip(), now)
        except LookupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = 2
        else:
            if cleared is None:
                print(f"error: {args.action[1]} has no audit problem to clear", file=sys.stderr)
                code = 2
            else:
                print(f"cleared the audit problem of {args.action[1]} ({cleared}); its next check-in anchors its "
                      "chain again")
    elif args.command == "devices" and args.action:
        from training.hub.service import set_ring

        _, device_id, ring = args.action
        try:
            found = set_ring(db, device_id, ring)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = 2
        else:
            if found:
                print(f"{device_id} moves to ring {ring} at its next check-in")
            else:
                print(f"error: no device {device_id}", file=sys.stderr)
                code = 2
    elif args.command == "withdraw":
        from training.hub.releases import withdraw as withdraw_release

        target = withdraw_release(db, args.model_id, args.version, now)
        if target is None:
            print(f"error: {args.model_id} {args.version} is not published", file=sys.stderr)
            code = 2
        else:
            repository.remove_target(target, _offline_keys(args))
            print(f"withdrew {target}: no longer offered; boxes drop it from shadow at their next check-in, "
                  "boxes where it is active are told (activation stays a person's decision)")
    elif args.command == "promote":
        code = _promote(args, db, repository, now)
    elif args.command == "demote":
        code = _demote(args, db, repository, now)
    elif args.command == "revoke":
        from training.hub.service import revoke_device

        if not revoke_device(db, args.device_id):
            print(f"error: no device {args.device_id}", file=sys.stderr)
            return 2
        print(f"revoked {args.device_id}; its reports stay, its requests are refused")
    else:
        for device_id, site, ring, enrolled, last, version in db.rows(
                "SELECT device_id, site, ring, enrolled_at, last_checkin, appliance_version FROM devices "
                "ORDER BY enrolled_at"):
            seen = time.strftime("%Y-%m-%d %H:%M", time.gmtime(last)) if last else "never"
            print(f"{device_id}  {site:<24} {ring:<6} {version or '-':<10} last check-in {seen}")
    db.close()
    return code


def _published(db, model_id: str, version: str):
    """The release of ``model_id`` ``version`` when it is published and not withdrawn; else
    None, with the error said on stderr (a withdrawn release moves between no rings)."""
    from training.hub import releases

    found = [r for r in releases.collect(db) if (r.model_id, r.version) == (model_id, version)]
    if not found:
        print(f"error: {model_id} {version} is not published", file=sys.stderr)
        return None
    if found[0].withdrawn_at is not None:
        print(f"error: {model_id} {version} was withdrawn: it is in no ring to move", file=sys.stderr)
        return None
    return found[0]


def _demote(args: argparse.Namespace, db, repository, now: float) -> int:
    """Move a release back one ring (targets re-signed) and keep the reason. Exit 0 moved, 2 error."""
    from training.hub import releases

    release = _published(db, args.model_id, args.version)
    if release is None:
        return 2
    to_ring = releases.previous_ring(release.ring)
    if to_ring is None:
        print(f"error: {release.target} is already in the first ring ({release.ring})", file=sys.stderr)
        return 2
    repository.set_ring(release.target, to_ring, _offline_keys(args))
    releases.record_demotion(db, release, to_ring, args.reason, now)
    print(f"demoted {release.target}: ring {release.ring} -> {to_ring} ({args.reason}); boxes of ring "
          f"{release.ring} are no longer offered it, and those that hold it keep it until it is withdrawn")
    return 0


def _promote(args: argparse.Namespace, db, repository, now: float) -> int:
    """Evaluate the rule on the release's field evidence, print and keep it; move the
    release to the next ring when every check holds. Exit 0 promoted, 3 refused, 2 error."""
    from training.hub import releases

    rule = releases.Rule(args.min_boxes, args.min_days, args.min_agreement, args.max_not_analysed)
    release = _published(db, args.model_id, args.version)
    if release is None:
        return 2
    to_ring = releases.next_ring(release.ring)
    if to_ring is None:
        print(f"error: {release.target} is already in the last ring ({release.ring})", file=sys.stderr)
        return 2
    checks = releases.evaluate(release, rule)
    print(f"rule: {rule.words()}")
    for check in checks:
        print(f"  {'holds' if check.holds else 'refused'}: {check.says}")
    if not all(check.holds for check in checks):
        releases.record_promotion(db, release, to_ring, checks, rule, now)
        print(f"refused: {release.target} stays in ring {release.ring}")
        return 3
    repository.set_ring(release.target, to_ring, _offline_keys(args))
    releases.record_promotion(db, release, to_ring, checks, rule, now)
    print(f"promoted {release.target}: ring {release.ring} -> {to_ring}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        return admin(argv)
    return serve(argv)


if __name__ == "__main__":
    sys.exit(main())
