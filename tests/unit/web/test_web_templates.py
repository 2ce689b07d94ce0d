"""Every page escapes what it shows: autoescape on, nothing marked safe."""

from __future__ import annotations

import re

from appliance.web.app import HERE, templates


def test_autoescape_is_on_and_no_template_marks_text_safe():
    env = templates().env
    assert env.autoescape is True or env.autoescape("x.html")
    rendered = env.from_string("{{ name }}").render(name='"><img src=x onerror=alert(1)>')
    assert rendered == "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"
    for path in (HERE / "templates").glob("*.html"):
        text = path.read_text()
        assert not re.search(r"\|\s*safe\b|autoescape\s+false|Markup", text), path.name
        assert not re.search(r"\son[a-z]+\s*=", text), f"{path.name}: inline event handler"
        assert not re.search(r"<script>(?!</script>)", text), f"{path.name}: inline script"


def test_person_names_read_as_pacs_viewers_show_them():
    from appliance.web.filters import person_name

    assert person_name("NEWCOMER^BLEED") == "NEWCOMER, BLEED"
    assert person_name("Smith^John^Paul^Dr.^Jr.") == "Smith, Dr. John Paul, Jr."
    assert person_name("Yamada^Tarou=山田^太郎") == "Yamada, Tarou"
    assert person_name("ANON") == "ANON" and person_name("") == "" and person_name(None) == ""
    assert person_name("^^") == "^^"  # nothing in any part: shown as stored
    assert person_name("<b>x='y'</b>") == "<b>x='y'</b>"  # no component separator: as stored


def test_counts_read_with_their_noun_in_the_right_number():
    from appliance.formats import count

    assert count(1, "drift alert") == "1 drift alert" and count(3, "check") == "3 checks"
    assert count(0, "analysis", "analyses") == "0 analyses"


def test_audit_details_read_as_named_fields_not_raw_json():
    from appliance.web.filters import fields

    payload = ('{"model_id": "head-ct", "replaces": null, "ok": true, "threshold": 0.15859444904126, '
               '"latency": {"decode_s": 5.0102, "queue_wait_s": 20.12}, "trials": [{"backend": "onnx", '
               '"ms_per_image": 6.329127, "score_diff": 5.96e-08}, {"backend": "openvino", "passed": false}]}')
    assert fields(payload) == [("model id", "head-ct"), ("replaces", "—"), ("ok", "yes"), ("threshold", "0.159"),
                               ("latency", "decode 5.01 s, queue wait 20 s"),
                               ("trials", "backend onnx, ms per image 6.33 ms, score diff 5.96e-08\n"
                                          "backend openvino, passed no")]
    assert fields("not json") == [("text", "not json")]


def test_a_series_heading_names_its_modality_once_and_counts_its_images_in_words():
    """Issue 26 screenshots: "CT CT CHEST", "MR MR BRAIN T2" and "(1 images)"."""
    from appliance.web.filters import series_title

    assert series_title("CT", "HEAD W/O CONTRAST") == "CT HEAD W/O CONTRAST"
    assert series_title("CT", "CT CHEST") == "CT CHEST"
    assert series_title("MR", "mr brain t2") == "mr brain t2"
    assert series_title("CT", "CTA NECK") == "CT CTA NECK"  # another word, not the modality
    assert series_title("CR", None) == "CR (no series description)"
    assert series_title(None, "") == "(no series description)"
    study = (HERE / "templates" / "study.html").read_text()
    assert "series_title(s.series_description)" in study and "s.instances | count('image')" in study
    env = templates().env
    heading = env.from_string("{{ 'CR' | series_title('CHEST PA') }} ({{ n | count('image') }})")
    assert heading.render(n=1) == "CR CHEST PA (1 image)"
    assert heading.render(n=24) == "CR CHEST PA (24 images)"


def test_admin_buttons_are_primary_or_quiet():
    """Issue 26 review: the DICOM page's add buttons were a third, plain style."""
    for path in (HERE / "templates").glob("admin_*.html"):
        for cls in re.findall(r'<button[^>]*class="([^"]*)"', path.read_text()):
            assert cls in ("button primary", "button quiet"), (path.name, cls)
