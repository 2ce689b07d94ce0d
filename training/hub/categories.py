"""Which category labels of a drift report the hub keeps: an allow-list per feature.

A categorical drift feature (``kernel``, ``manufacturer_model``, ``body_part``) is labelled
with text a modality wrote, normalised by the box; the box leaves out every label seen in
fewer than k series, but a site whose own scanner carries a name or a number in its
Manufacturer field would still send it (hostile case D2). So the hub keeps a label only
when it is on the allow-list: the DICOM defined terms of Body Part Examined and
``unknown`` always, anything else once an operator allowed it (``python -m training.hub
allow-category FEATURE LABEL``). A label not on the list is never stored, logged or
shown: its count is added to :data:`OTHER`, so the shape of the day (and a drift towards
a new scanner) still shows. Pure, but for the two functions that read and write the
``allowed_categories`` table.
"""

from __future__ import annotations

import copy
import time

from appliance.drift.features import CATEGORY_KEYWORDS, UNKNOWN
from appliance.drift.schema import LABEL_RE
from training.hub.store import HubDatabase

#: Where the counts of labels not on the allow-list go.
OTHER = "other"

#: Body Part Examined (0018,0015) defined terms (DICOM PS3.16 Annex L), as the box
#: normalises them.
BODY_PARTS = frozenset(
    "ABDOMEN ABDOMENPELVIS ANKLE AORTA ARM AXILLA BACK BLADDER BRAIN BREAST BRONCHUS BUTTOCK CALCANEUS CALF "
    "CAROTID CEREBELLUM CHEST CHESTABDOMEN CHESTABDPELVIS CIRCLEOFWILLIS CLAVICLE COCCYX COLON CORNEA "
    "CSPINE CTSPINE DUODENUM ELBOW EXTREMITY EYE FACE FEMUR FINGER FOOT FOREARM GALLBLADDER HAND HEAD "
    "HEADNECK HEART HIP HUMERUS IAC ILEUM ILIUM JAW JEJUNUM KIDNEY KNEE LARYNX LEG LIVER LSPINE LSSPINE "
    "LUNG MAXILLA MEDIASTINUM MOUTH NECK NECKCHEST NECKCHESTABDOMEN NECKCHESTABDPELV NOSE ORBIT OVARY "
    "PANCREAS PAROTID PATELLA PELVIS PENIS PHARYNX PROSTATE RECTUM RIB SACRUM SCAPULA SCROTUM SELLA "
    "SHOULDER SKULL SPINE SPLEEN SSPINE STERNUM STOMACH SUBMANDIBULAR TESTIS THIGH THUMB THYMUS THYROID "
    "TIBIA TLSPINE TOE TONGUE TRACHEA TSPINE ULNA UTERUS VAGINA VULVA WHOLEBODY WRIST ZYGOMA".split()
)

#: What is allowed before any operator adds a label.
DEFAULTS: dict[str, frozenset[str]] = {
    "body_part": BODY_PARTS | {UNKNOWN},
    "kernel": frozenset({UNKNOWN}),
    "manufacturer_model": frozenset({UNKNOWN}),
}


def allowed(db: HubDatabase) -> dict[str, frozenset[str]]:
    """The defaults and every label an operator allowed, per feature."""
    added: dict[str, set[str]] = {}
    for feature, label in db.rows("SELECT feature, label FROM allowed_categories"):
        added.setdefault(feature, set()).add(label)
    return {name: DEFAULTS.get(name, frozenset()) | added.get(name, set()) for name in CATEGORY_KEYWORDS}


def allow(db: HubDatabase, feature: str, label: str, now: float | None = None) -> bool:
    """Put ``label`` on ``feature``'s allow-list; False when it already was.

    Raises
    ------
    ValueError
        Not a categorical feature, or not a label a box can send.
    """
    if feature not in CATEGORY_KEYWORDS:
        raise ValueError(f"feature {feature!r}: must be one of {', '.join(sorted(CATEGORY_KEYWORDS))}")
    if not LABEL_RE.match(label):
        raise ValueError(f"label {label!r}: not a label a box sends (letters, digits, spaces, _.+-; at most 64)")
    return bool(
        db.execute(
            "INSERT INTO allowed_categories (feature, label, added_at) VALUES (?,?,?) "
            "ON CONFLICT (feature, label) DO NOTHING",
            (feature, label, time.time() if now is None else now),
        )
    )


def screen(report: dict, allow_list: dict[str, frozenset[str]]) -> tuple[dict, int]:
    """The report with each categorical feature's labels not on the allow-list added
    into :data:`OTHER` (pure; ``report`` is left as it was), and how many were.

    A categorical feature the allow-list does not name keeps no label at all.
    """
    screened = copy.deepcopy(report)
    withheld = 0
    for model in screened["models"]:
        for name, feature in model["features"].items():
            if feature.get("kind") != "categorical":
                continue
            kept: dict[str, int] = {}
            for label, count in feature["counts"].items():
                if label not in allow_list.get(name, frozenset()):
                    withheld += 1
                    label = OTHER
                kept[label] = kept.get(label, 0) + count
            feature["counts"] = kept
    return screened, withheld
