"""The hostile-case catalogue (``docs/hostile-cases.md``, issue 24) and which test proves
each case held.

Every case id of the catalogue maps to one or more pytest node ids. A case proven under
``tests/hostile/`` is a test parametrised with the case id (:func:`case`), so its node id
ends in ``[<case id>]`` and ``pytest -k <case id>`` runs it; a case an older test already
proves maps to that test instead of a copy of it. ``tests/hostile/test_registry.py`` fails
when a catalogue case has no proof here or a proof names a test that does not exist;
``scripts/prove`` runs every proof and writes the table.

A case whose fix has not landed has a test marked ``xfail(strict=True)``
(:data:`NOT_FIXED`): it fails today, and the day the fix lands it passes, strict xfail
turns that into a failure, and whoever fixed it removes the case from ``NOT_FIXED``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CATALOGUE = REPO / "docs" / "hostile-cases.md"
NOT_FIXED_REASON = "issue 24: not fixed yet"

# Cases (or the part of a case) whose fix is not on main: their tests are strict xfails.
NOT_FIXED: dict[str, str] = {}


def case(*case_ids: str):
    """Parametrise a test with catalogue cases: each node id ends in ``[case_id]`` and the
    test takes a ``case_id`` argument. A case in :data:`NOT_FIXED` is a strict xfail."""
    return pytest.mark.parametrize("case_id", [
        pytest.param(c, id=c, marks=[pytest.mark.xfail(strict=True, reason=NOT_FIXED[c])] if c in NOT_FIXED else [])
        for c in case_ids])


def catalogue() -> dict[str, dict[str, str]]:
    """Case id -> its row (surface, tried, expected, observed, verdict) from the catalogue."""
    rows: dict[str, dict[str, str]] = {}
    for line in CATALOGUE.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not re.fullmatch(r"[A-Z][A-Za-z0-9-]+", cells[0]) or cells[0] == "id":
            continue
        rows[cells[0]] = dict(zip(("surface", "tried", "expected", "observed", "verdict"), cells[1:], strict=True))
    return rows


H = "tests/hostile/"
RECEIVE = "tests/integration/receive/test_hostile_inputs.py::"
FLOOD = "tests/integration/receive/test_connection_flood.py::"
DISK = "tests/integration/receive/test_disk_full.py::"
VALIDATE = "tests/unit/receive/test_validate.py::"
VERIFY = "tests/unit/models/test_package_verify.py::"
CHAIN = "tests/unit/audit/test_hash_chain.py::"
AUDIT_CLI = "tests/unit/audit/test_audit_cli.py::"
HUB_SYNC = "tests/integration/sync/test_hub_sync.py::"
RELEASES = "tests/integration/sync/test_hub_releases.py::"
SESSIONS = "tests/unit/web/test_web_sessions.py::"
ACCESS = "tests/integration/web/test_access.py::"
UPLOADS = "tests/unit/web/test_web_uploads.py::"
HUB_BODIES = "tests/unit/training/test_hub_bodies.py::"
CRASH = "tests/system/test_crash_points.py::"

PROOFS: dict[str, tuple[str, ...]] = {
    # DICOM ingest
    "P1-L3b": (RECEIVE + "test_a_deflated_pixel_bomb_is_refused_for_its_length_and_the_association_carries_on",
               VALIDATE + "test_a_deflated_pixel_bomb_is_refused_at_the_pixel_data_header_without_inflating_it",
               H + "test_dicom.py::test_a_full_size_deflated_pixel_bomb_is_refused_in_bounded_memory[P1-L3b]"),
    "N-deflate-1G": (H + "test_dicom.py::test_a_listener_under_a_1_gib_limit_survives_a_deflated_bomb[N-deflate-1G]",),
    "N3-deflate-conc": (H + "test_dicom.py::test_three_deflated_bombs_at_once_are_refused_in_bounded_memory"
                        "[N3-deflate-conc]",),
    "P1-big-pixel-3G": (RECEIVE + "test_raw_pixel_data_longer_than_the_image_is_refused_and_an_oversized_one_cut_off",
                        VALIDATE + "test_native_pixel_data_must_be_the_declared_image"),
    "P1-L1-multi": (FLOOD + "test_a_real_sender_is_served_while_strangers_flood_the_port",),
    "P1-L1-slowloris-same-addr": (FLOOD + "test_connections_beyond_the_per_address_cap_get_an_associate_rj",
                                  FLOOD + "test_a_trickled_association_request_is_cut_at_the_acse_deadline"),
    "P1-L2-cmd-buffer": (RECEIVE + "test_command_fragments_past_64_kib_abort_the_association",),
    "P1-L3-deflate-3G": (RECEIVE + "test_a_deflate_bomb_is_refused",
                         VALIDATE + "test_a_deflated_dataset_is_inflated_only_as_far_as_its_cap"),
    "P1-L3-deflate-private": (RECEIVE + "test_a_deflated_dataset_hiding_a_huge_element_is_refused",),
    "P1-L4-after-pixel": (H + "test_dicom.py::test_what_follows_the_pixel_data_is_refused_over_the_wire"
                          "[P1-L4-after-pixel]",),
    "P1-L5-meta-group": (H + "test_dicom.py::test_file_meta_inside_the_dataset_is_refused_over_the_wire"
                         "[P1-L5-meta-group]",),
    "P1-L7-frames": (H + "test_dicom.py::test_number_of_frames_that_is_no_count_is_refused_over_the_wire"
                     "[P1-L7-frames]",),
    "P1-L9-empty-ts": (RECEIVE + "test_a_context_with_no_transfer_syntax_gets_an_associate_ac_refusing_it",),
    "P1-t1-pdus": (H + "test_dicom.py::test_malformed_pdus_are_answered_and_the_next_store_works[P1-t1-pdus]",),
    "P1-t2-assoc": (RECEIVE + "test_the_association_limit_refuses_one_more_until_a_slot_is_free",),
    # worker and durability
    "P1-L6-serve": ("tests/system/test_serve_worker_process.py::"
                    "test_a_killed_worker_is_restarted_and_reception_never_stops",),
    "P1-L6-worker": ("tests/system/test_kill9_worker.py::test_worker_killed_mid_series_triages_it_once_after_restart",),
    "P1-L8-charset": ("tests/integration/triage/test_worker.py::test_an_undecodable_series_fails_with_the_reason",),
    "P1-t5-kill9": ("tests/system/test_kill9_ingest.py::"
                    "test_kill9_mid_send_then_resend_gives_a_complete_study_without_duplicates",),
    # crash points (kill -9 where appliance.failpoints is armed)
    "C1-crash-after-file": (CRASH + "test_a_listener_killed_between_the_spool_and_the_answer_loses_and_duplicates_"
                            "nothing[after-file-before-index]",),
    "C2-crash-before-response": (CRASH + "test_a_listener_killed_between_the_spool_and_the_answer_loses_and_"
                                 "duplicates_nothing[after-file-before-response]",),
    "C3-crash-mid-send": (CRASH + "test_a_worker_killed_after_the_pacs_acknowledged_delivers_the_same_object_again",),
    "C4-crash-mid-sync": (CRASH + "test_a_sync_killed_after_the_hub_answered_leaves_each_report_at_the_hub_once",),
    "C5-crash-mid-install": (CRASH + "test_an_install_killed_before_its_registry_row_leaves_the_model_absent_and_"
                             "installs_again",),
    "C6-crash-mid-unpack": (CRASH + "test_an_install_killed_while_unpacking_leaves_nothing_the_next_install_does_"
                            "not_remove",),
    # config
    "P1-L11-config": (H + "test_config.py::test_bad_dicom_settings_are_refused_naming_the_key[P1-L11-config]",),
    # packages and uploads
    "P1-L10-onnx-external": (VERIFY + "test_onnx_external_data_outside_the_package_is_refused",),
    "P1-t4-tar": (VERIFY + "test_path_traversal_member_is_refused", VERIFY + "test_symlink_member_is_refused",
                  VERIFY + "test_hardlink_member_is_refused", VERIFY + "test_duplicate_member_is_refused",
                  VERIFY + "test_not_a_tar_and_absent_file", VERIFY + "test_one_byte_changed_in_a_file_names_the_file",
                  VERIFY + "test_extra_file", VERIFY + "test_manifest_referencing_unlisted_file_is_malformed",
                  VERIFY + "test_a_refused_package_leaves_neither_files_nor_copy",
                  "tests/integration/models/test_registry.py::test_untrusted_tampered_and_older_packages_are_refused"),
    "U1-refusals": (H + "test_packages.py::test_refused_uploads_are_400_with_the_reason_and_install_nothing"
                    "[U1-refusals]",),
    "U2-bomb-onnx": (VERIFY + "test_an_unsigned_package_with_a_huge_model_is_refused_without_holding_it_in_memory",),
    "U2-bomb-bin": (H + "test_packages.py::test_the_signature_is_checked_before_any_member_is_read[U2-bomb-bin]",),
    "U3-2GB-stream": (ACCESS + "test_a_chunked_upload_past_the_cap_is_cut_and_nothing_stays",
                      UPLOADS + "test_a_body_past_the_cap_is_cut_there_and_removed"),
    "U4-manifest-numbers": (VERIFY + "test_a_manifest_python_cannot_parse_is_refused_naming_why",),
    "U4b-huge-shadow": ("tests/integration/models/test_registry.py::"
                        "test_golden_series_the_box_cannot_decode_refuse_the_model",),
    "U5-card-upload": (H + "test_packages.py::test_hostile_text_in_a_model_card_is_shown_escaped[U5-card-upload]",),
    "R4-upload-full-disk": (UPLOADS + "test_an_upload_keeps_the_spools_free_space_floor_and_a_full_disk_is_named",),
    "R6-kill-during-upload": (UPLOADS + "test_uploads_a_killed_process_left_are_removed_when_the_web_app_starts",),
    # resources
    "R1-disk-floor": (RECEIVE + "test_below_the_free_disk_floor_stores_get_a700_and_nothing_is_written",),
    "R2-fill-to-floor": (DISK + "test_a_full_tmpfs_answers_out_of_resources_and_the_association_carries_on",),
    "R3-enospc-midwrite": (DISK + "test_a_write_failing_with_enospc_answers_out_of_resources",
                           DISK + "test_a_file_whose_first_write_fails_is_removed"),
    "R5-sqlite-locked": ("tests/unit/receive/test_store_busy.py::"
                         "test_a_locked_database_answers_a_retryable_0xa700_and_leaves_no_orphan",
                         H + "test_resources.py::test_a_store_against_a_locked_database_is_answered_in_time"
                         "[R5-sqlite-locked]"),
    "R5b-readyz-locked": ("tests/unit/web/test_readyz_locked.py::test_a_locked_database_is_named_promptly",),
    "S1-web-slowloris": (H + "test_resources.py::test_slow_web_sockets_are_dropped[S1-web-slowloris]",),
    "S1-web-slowloris-nofile1024": (H + "test_resources.py::test_health_and_dicom_work_while_web_sockets_trickle"
                                    "[S1-web-slowloris-nofile1024]",),
    "S1b-log-flood": (H + "test_resources.py::test_trickling_web_sockets_do_not_flood_the_log[S1b-log-flood]",),
    "S3-audit-amplification": ("tests/unit/web/test_web_refusals.py::"
                               "test_a_flood_of_anonymous_sign_ins_without_csrf_writes_one_row",),
    "S4-readyz-flood": (H + "test_resources.py::test_dicom_is_served_while_readyz_is_flooded[S4-readyz-flood]",),
    "S5-dicom-vs-web": (H + "test_resources.py::test_the_web_answers_while_dicom_stores_stream[S5-dicom-vs-web]",),
    # audit
    "A1-edit-payload": (CHAIN + "test_an_intact_chain_verifies_and_each_kind_of_tampering_is_named",
                        AUDIT_CLI + "test_verify_then_tamper_in_three_ways"),
    "A2-delete-middle": (CHAIN + "test_an_intact_chain_verifies_and_each_kind_of_tampering_is_named",
                         AUDIT_CLI + "test_verify_then_tamper_in_three_ways"),
    "A3-reorder": (CHAIN + "test_an_intact_chain_verifies_and_each_kind_of_tampering_is_named",),
    "A7-edit-time": (CHAIN + "test_an_intact_chain_verifies_and_each_kind_of_tampering_is_named",),
    "A4-truncate-tail": (CHAIN + "test_a_log_cut_short_emptied_or_rehashed_is_named_by_its_anchor[A4-truncate-tail]",
                         AUDIT_CLI + "test_verify_names_a_truncated_log",
                         H + "test_audit.py::test_tampering_is_named_by_the_cli_and_the_admin_page[A4-truncate-tail]"),
    "A5-edit-and-rehash": (CHAIN + "test_a_log_cut_short_emptied_or_rehashed_is_named_by_its_anchor"
                           "[A5-edit-and-rehash]",
                           H + "test_audit.py::test_tampering_is_named_by_the_cli_and_the_admin_page"
                           "[A5-edit-and-rehash]"),
    "A6-delete-all": (CHAIN + "test_a_log_cut_short_emptied_or_rehashed_is_named_by_its_anchor[A6-delete-all]",
                      H + "test_audit.py::test_the_hub_names_a_box_whose_chain_went_behind_its_anchor[A6-delete-all]"),
    # drift reports and the hub
    "D1-labels": ("tests/unit/drift/test_drift_monitoring.py::"
                  "test_a_category_seen_in_fewer_than_k_series_leaves_no_trace",),
    "D2-hub-holds-labels": (H + "test_hub.py::test_the_hub_keeps_no_free_text_category[D2-hub-holds-labels]",),
    "H1-enrol-token": (HUB_SYNC + "test_enrolment_refuses_a_wrong_or_used_token_and_pins_the_key[sqlite]",),
    "H2-impersonation": (HUB_SYNC + "test_unknown_key_stale_timestamp_and_replayed_request_are_refused[sqlite]",),
    "H3-replay": (HUB_SYNC + "test_unknown_key_stale_timestamp_and_replayed_request_are_refused[sqlite]",),
    "H4-stale-timestamp": (HUB_SYNC + "test_unknown_key_stale_timestamp_and_replayed_request_are_refused[sqlite]",),
    "H11-revoked": (HUB_SYNC + "test_unknown_key_stale_timestamp_and_replayed_request_are_refused[sqlite]",),
    "H5-oversize-body": (HUB_BODIES + "test_an_oversized_body_is_refused_as_it_arrives_not_after_it_is_buffered",),
    "H6-malformed": (HUB_BODIES + "test_a_body_the_hub_cannot_read_is_a_400_naming_why",),
    "H7-sqli": (H + "test_hub.py::test_sql_in_every_field_is_only_data[H7-sqli]",),
    "H8-fleet-anon": (HUB_BODIES + "test_the_fleet_page_is_for_operators_only",),
    "H9-report-schema": (H + "test_hub.py::test_an_identifying_category_label_is_withheld[H9-report-schema]",
                         HUB_SYNC + "test_reports_from_two_boxes_arrive_exactly_once_and_bad_ones_are_named[sqlite]"),
    "H10-report-id-squat": ("tests/unit/training/test_hub_reports.py::"
                            "test_a_report_id_sent_first_by_another_device_does_not_squat_the_owners",),
    # TUF
    "T0-baseline": (HUB_SYNC + "test_a_published_release_ends_in_shadow_on_both_boxes[sqlite]",),
    "T1-rollback": (RELEASES + "test_bad_metadata_and_a_tampered_package_are_refused_with_the_reason[sqlite]",),
    "T2-freeze": (RELEASES + "test_bad_metadata_and_a_tampered_package_are_refused_with_the_reason[sqlite]",),
    "T3-mix-and-match": (RELEASES + "test_bad_metadata_and_a_tampered_package_are_refused_with_the_reason[sqlite]",),
    "T7-wrong-tuf-key": (RELEASES + "test_bad_metadata_and_a_tampered_package_are_refused_with_the_reason[sqlite]",),
    "T8-tampered-target": (RELEASES + "test_bad_metadata_and_a_tampered_package_are_refused_with_the_reason"
                           "[sqlite]",),
    "T4-endless-metadata": ("tests/unit/sync/test_metadata_fetcher.py::"
                            "test_an_endless_timestamp_is_cut_at_the_length_limit_without_buffering_it",),
    "T4b-slow-metadata": ("tests/unit/sync/test_metadata_fetcher.py::"
                          "test_a_trickled_file_is_given_up_at_its_deadline",),
    "T5-endless-target": (H + "test_tuf.py::test_an_endless_package_is_cut_at_its_signed_length[T5-endless-target]",),
    "T6-wrong-package-key": (H + "test_tuf.py::test_a_package_signed_by_an_untrusted_key_is_not_installed"
                             "[T6-wrong-package-key]",),
    # web
    "W1-idor": (ACCESS + "test_every_route_belongs_to_one_access_area",
                ACCESS + "test_anonymous_requests_are_sent_to_sign_in_or_refused",
                ACCESS + "test_a_radiologist_gets_403_on_every_admin_route_and_api_call",
                ACCESS + "test_a_biomed_user_may_run_the_box_but_not_manage_users"),
    "W2-throttle-user": (SESSIONS + "test_sign_in_is_throttled_per_user_and_per_address",
                         ACCESS + "test_wrong_passwords_are_throttled_per_user"),
    "W3-throttle-race": (SESSIONS + "test_concurrent_guesses_check_no_more_passwords_than_the_limit",),
    "W4-throttle-addr": ("tests/integration/web/test_sign_in_behind_a_proxy.py::"
                         "test_guesses_at_a_user_do_not_lock_them_out_of_the_browser_they_signed_in_from",
                         "tests/integration/web/test_sign_in_behind_a_proxy.py::"
                         "test_a_trusted_proxy_names_the_client_and_no_one_else_can"),
    "W5-fixation": (H + "test_web.py::test_a_planted_session_id_is_useless[W5-fixation]",),
    "W6-cookie-flags": (ACCESS + "test_security_headers_and_cookie_flags",),
    "W7-csrf": (ACCESS + "test_posts_without_the_csrf_token_or_from_another_origin_are_refused",),
    "W8-login-csrf": (H + "test_web.py::test_a_sign_in_without_its_csrf_cookie_or_from_elsewhere_is_refused"
                      "[W8-login-csrf]",),
    "W9-host-header": ("tests/unit/web/test_web_host.py::test_a_foreign_host_is_refused_before_any_route",),
    "W10-open-redirect": (H + "test_web.py::test_sign_in_never_redirects_off_site[W10-open-redirect]",),
    "W11-header-inject": ("tests/unit/web/test_web_dicom_endpoints.py::"
                          "test_bad_changes_are_refused_naming_the_field_and_leave_no_trace",
                          H + "test_web.py::test_crlf_never_reaches_a_response_header[W11-header-inject]"),
    "W12-reflected": ("tests/unit/web/test_web_users_page.py::test_a_token_in_the_url_is_not_shown_as_a_new_token",
                      H + "test_web.py::test_markup_in_query_parameters_is_escaped[W12-reflected]"),
    "W13-traversal": (H + "test_web.py::test_traversal_paths_find_nothing_outside_their_folders[W13-traversal]",),
    "W14-healthz": (ACCESS + "test_health_readiness_and_metrics",),
    "W15-metrics": (ACCESS + "test_health_readiness_and_metrics",),
    "W16-token-revoke": ("tests/integration/web/test_admin_browser.py::"
                         "test_an_admin_adds_a_user_and_creates_and_revokes_a_token",),
    "W17-session-after-reset": (SESSIONS + "test_a_password_reset_or_a_disable_ends_every_session_for_good",),
    "W18-multipart-login": ("tests/unit/web/test_web_bodies.py::"
                            "test_a_multipart_sign_in_is_refused_before_its_file_is_spooled",),
    "W19-tls-cookie": (H + "test_web.py::test_over_tls_the_cookie_is_secure_and_hsts_is_sent[W19-tls-cookie]",),
    "W20-idle-timeout": (SESSIONS + "test_a_session_ends_after_the_idle_timeout_and_after_the_absolute_one",),
    "W21-user-enum": (H + "test_web.py::test_a_wrong_password_reads_the_same_for_real_and_unknown_users"
                      "[W21-user-enum]",),
    "W22-framing-csp": (H + "test_web.py::test_every_page_forbids_framing_and_sniffing[W22-framing-csp]",),
    "X1-stored-xss": ("tests/integration/web/test_worklist_browser.py::test_hostile_patient_names_show_as_text",
                      "tests/unit/web/test_web_templates.py::test_autoescape_is_on_and_no_template_marks_text_safe"),
}
