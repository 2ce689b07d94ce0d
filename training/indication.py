"""What each demo model is for: its indication, label classes and subgroups (pure).

These definitions were fixed before the data they are measured on existed (issue 20), and
every figure of a card is counted by them:

* A series is **negative** (no finding at all), **in-indication** (a finding the product's
  primary endpoint covers) or **sub-indication** (a real finding below the indication's
  floor: it stays in the data, is never counted as a miss and never as a false flag).
* **Sensitivity** counts in-indication series only; **specificity** negatives only; flags on
  sub-indication series are reported in a row of their own.

Head CT: intraparenchymal haemorrhage of at least :data:`IPH_MIN_ML` mL, or subdural
haematoma at least :data:`SDH_MIN_MM` mm at its thickest, at
:data:`HEAD_CT_HU` Hounsfield units. The generator's lower bounds (6 mm blobs, 3 mm
crescents, 50 HU) stay, so smaller findings are in the data as sub-indication.

Chest radiograph: pneumothorax with an air rim of at least :data:`PTX_MIN_RIM_MM` mm
(the floor cleared products state); thinner rims are sub-indication.
"""

from __future__ import annotations

import math
from enum import StrEnum


class Indication(StrEnum):
    """The three label classes of a series (the ``indication`` column of ``labels.csv``)."""

    NEGATIVE = "negative"
    IN = "in-indication"
    SUB = "sub-indication"


#: Intraparenchymal haemorrhage volume (mL) from which a finding is in the indication.
IPH_MIN_ML = 0.4
#: Subdural haematoma thickness at its thickest (mm) from which a finding is in the indication.
SDH_MIN_MM = 5.0
#: The blood densities (HU, inclusive) the indication covers.
HEAD_CT_HU = (50.0, 90.0)
#: Pneumothorax rim width (mm) from which a finding is in the indication.
PTX_MIN_RIM_MM = 5.0

#: Subgroup edges: subdural thickness (mm) and intraparenchymal volume (mL).
SDH_THICKNESS_EDGES = (5.0, 10.0)
IPH_VOLUME_EDGES = (0.4, 5.0)


def ellipsoid_volume_ml(rx_mm: float, ry_mm: float, rz_mm: float) -> float:
    """Volume in mL of an ellipsoid with these semi-axes in mm."""
    return 4.0 / 3.0 * math.pi * rx_mm * ry_mm * rz_mm / 1000.0


def head_ct_indication(lesion_type: str, iph_volume_ml: float = 0.0, sdh_thickness_mm: float = 0.0,
                       hu: float = 0.0) -> Indication:
    """The class of a head CT series from its finding (``lesion_type`` ``none`` for none)."""
    if lesion_type == "none":
        return Indication.NEGATIVE
    dense_enough = HEAD_CT_HU[0] <= hu <= HEAD_CT_HU[1]
    if lesion_type == "intraparenchymal":
        large_enough = iph_volume_ml >= IPH_MIN_ML
    elif lesion_type == "subdural":
        large_enough = sdh_thickness_mm >= SDH_MIN_MM
    else:
        raise ValueError(f"unknown head CT lesion type {lesion_type!r}")
    return Indication.IN if dense_enough and large_enough else Indication.SUB


def chest_indication(rim_mm: float) -> Indication:
    """The class of a chest radiograph from its pneumothorax rim width (0 for none)."""
    if rim_mm <= 0:
        return Indication.NEGATIVE
    return Indication.IN if rim_mm >= PTX_MIN_RIM_MM else Indication.SUB


def sdh_thickness_group(mm: float) -> str:
    """Subdural subgroup by thickness at its thickest: ``3-5 mm``, ``5-10 mm``, ``>= 10 mm``."""
    low, high = SDH_THICKNESS_EDGES
    return "3-5 mm" if mm < low else "5-10 mm" if mm < high else ">= 10 mm"


def iph_volume_group(ml: float) -> str:
    """Intraparenchymal subgroup by volume: ``< 0.4 mL``, ``0.4-5 mL``, ``>= 5 mL``."""
    low, high = IPH_VOLUME_EDGES
    return f"< {low:g} mL" if ml < low else f"{low:g}-{high:g} mL" if ml < high else f">= {high:g} mL"


def head_ct_size_group(lesion_type: str, iph_volume_ml: float, sdh_thickness_mm: float) -> str:
    """The size subgroup of a head CT finding, named with its lesion type; ``none`` for none."""
    if lesion_type == "intraparenchymal":
        return f"intraparenchymal {iph_volume_group(iph_volume_ml)}"
    if lesion_type == "subdural":
        return f"subdural {sdh_thickness_group(sdh_thickness_mm)}"
    return "none"


def slice_thickness_group(thickness_mm: float) -> str:
    """The acquisition subgroup of a CT series: thin (<= 1.25 mm), medium (< 5 mm) or thick slices."""
    return "thin slices" if thickness_mm <= 1.25 else "medium slices" if thickness_mm < 5.0 else "thick slices"


def rim_group(rim_mm: float) -> str:
    """Pneumothorax subgroup by rim width: ``< 5 mm``, ``5-15 mm``, ``15-30 mm``, ``>= 30 mm``."""
    if rim_mm < PTX_MIN_RIM_MM:
        return f"< {PTX_MIN_RIM_MM:g} mm"
    return "5-15 mm" if rim_mm < 15 else "15-30 mm" if rim_mm < 30 else ">= 30 mm"
