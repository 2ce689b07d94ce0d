"""The indication's definitions, locked before the data they are measured on."""

import math

import pytest

from training.indication import (Indication, chest_indication, ellipsoid_volume_ml, head_ct_indication,
                                 head_ct_size_group, iph_volume_group, rim_group, sdh_thickness_group,
                                 slice_thickness_group)


def test_head_ct_floors_are_the_products_endpoint():
    assert head_ct_indication("none") is Indication.NEGATIVE
    assert head_ct_indication("intraparenchymal", iph_volume_ml=0.4, hu=50) is Indication.IN
    assert head_ct_indication("intraparenchymal", iph_volume_ml=0.399, hu=70) is Indication.SUB
    assert head_ct_indication("subdural", sdh_thickness_mm=5.0, hu=90) is Indication.IN
    assert head_ct_indication("subdural", sdh_thickness_mm=4.99, hu=70) is Indication.SUB
    assert head_ct_indication("subdural", sdh_thickness_mm=8.0, hu=49.9) is Indication.SUB  # too faint for the endpoint
    with pytest.raises(ValueError, match="unknown head CT lesion type"):
        head_ct_indication("epidural", hu=70)


def test_chest_floor_is_a_five_millimetre_rim():
    assert [chest_indication(r) for r in (0, 4.9, 5.0, 30)] == [Indication.NEGATIVE, Indication.SUB, Indication.IN,
                                                                Indication.IN]


def test_subgroup_edges():
    assert [sdh_thickness_group(v) for v in (3.0, 4.99, 5.0, 9.99, 10.0, 14)] == [
        "3-5 mm", "3-5 mm", "5-10 mm", "5-10 mm", ">= 10 mm", ">= 10 mm"]
    assert [iph_volume_group(v) for v in (0.1, 0.399, 0.4, 4.99, 5.0)] == [
        "< 0.4 mL", "< 0.4 mL", "0.4-5 mL", "0.4-5 mL", ">= 5 mL"]
    assert head_ct_size_group("subdural", 0.0, 6.0) == "subdural 5-10 mm"
    assert head_ct_size_group("intraparenchymal", 7.0, 0.0) == "intraparenchymal >= 5 mL"
    assert head_ct_size_group("none", 0.0, 0.0) == "none"
    assert [slice_thickness_group(t) for t in (0.625, 1.25, 2.5, 5.0)] == [
        "thin slices", "thin slices", "medium slices", "thick slices"]
    assert [rim_group(r) for r in (4.0, 5.0, 15.0, 30.0)] == ["< 5 mm", "5-15 mm", "15-30 mm", ">= 30 mm"]


def test_volume_of_a_sphere():
    # a 9.14 mm sphere is the 0.4 mL floor
    assert ellipsoid_volume_ml(4.57, 4.57, 4.57) == pytest.approx(0.4, abs=0.001)
    assert ellipsoid_volume_ml(10, 10, 10) == pytest.approx(4 / 3 * math.pi)
