"""The JSON API: the same rows and the same rules as the pages, for scripts with tokens."""

from __future__ import annotations

from fastapi import Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from appliance.audit.chain import verify_database
from appliance.errors import PackageError
from appliance.outcome.upkeep import STUDY_SUMMARY, last_ran
from appliance.web import feedback, studies, uploads
from appliance.web.deps import Connection, Database, Registry, SettingsDep
from appliance.web.routes.common import MAX_PAGE, router, study_or_404
from appliance.web.routes.worklist import Selected
from appliance.web.security import SignedIn

clinical = router("clinical", prefix="/api")
operations = router("operations", prefix="/api")


def routers():
    return [clinical, operations]


def _study_json(row: dict) -> dict:
    return {
        "study_instance_uid": row["study_instance_uid"],
        "state": row["state"],
        "reason": row["reason"],
        "patient_name": row["patient_name"],
        "patient_id": row["patient_id"],
        "accession": row["accession"],
        "study_description": row["study_description"],
        "modalities": row["modalities"].split(",") if row["modalities"] else [],
        "models": row["models"],
        "score": row["score"],
        "priority": row["priority"],
        "received_at": row["received_at"],
        "result_at": row["result_at"],
        "time_to_result_s": row["time_to_result_s"],
    }


@clinical.get("/studies")
def api_studies(
    conn: Connection,
    selected: Selected,
    page: int = Query(1, ge=1, le=MAX_PAGE),
    page_size: int = Query(50, ge=1, le=500),
):
    rows, total = studies.page(conn, selected.filters, page, page_size)
    return {
        "total": total,
        "page": page,
        "page_size": page_size,
        "summarised_at": last_ran(conn, STUDY_SUMMARY),  # the worker's summary: the studies are as of then
        "studies": [_study_json(r) for r in rows],
    }


@clinical.get("/studies/{study_uid}")
def api_study(conn: Connection, principal: SignedIn, study_uid: str):
    row = study_or_404(conn, study_uid)
    studies.record_view(conn, principal.actor, study_uid, "api")
    series = [{k: v for k, v in s.items() if k not in ("result_id",)} for s in studies.series_of(conn, study_uid)]
    return {**_study_json(row), "series": series, "feedback": feedback.of_study(conn, study_uid)}


@operations.get("/models")
def api_models(conn: Connection, models: Registry):
    ppv = feedback.local_ppv(conn)
    return [
        {
            "id": m.id,
            "version": m.version,
            "state": m.state,
            "finding": m.manifest.finding,
            "package_sha256": m.package_sha256,
            "signing_key": m.manifest.signing_key_id,
            "threshold": m.manifest.operating_point.threshold,
            "selection": m.selection,
            "local_ppv": ppv.get((m.id, m.version)),
        }
        for m in models.models()
    ]


@operations.get("/audit/verify")
def api_audit_verify(db: Database):
    problems = verify_database(db)
    rows = db.conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    return {"intact": not problems, "rows": rows, "problems": [{"seq": p.seq, "problem": p.problem} for p in problems]}


@operations.post("/models")
async def api_upload_model(request: Request, settings: SettingsDep, models: Registry, principal: SignedIn):
    """Install a model package sent as the raw request body (streamed, capped, verified)."""
    path = await uploads.receive_to_file(
        request,
        uploads.upload_dir(settings.data_dir),
        settings.web.max_upload_mb * 1024 * 1024,
        settings.dicom.min_free_disk_mb * 1024 * 1024,
    )
    try:
        model = await run_in_threadpool(models.install, path, principal.actor)
    except PackageError as exc:
        return JSONResponse({"verified": False, "error": str(exc)}, status_code=400)
    finally:
        path.unlink(missing_ok=True)
    return {
        "verified": True,
        "id": model.id,
        "version": model.version,
        "state": model.state,
        "signing_key": model.manifest.signing_key_id,
        "package_sha256": model.package_sha256,
    }
