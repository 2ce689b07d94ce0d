from __future__ import annotations

import socket

from appliance import sd_notify


def test_notifications_reach_the_socket_systemd_names(tmp_path, monkeypatch):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sd_notify.notify("READY=1")
        assert server.recv(64) == b"READY=1"


def test_without_systemd_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sd_notify.notify("READY=1") is False
    assert sd_notify.watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert sd_notify.watchdog_interval_s() == 15.0


def test_a_missing_or_full_socket_never_blocks_or_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sd_notify.notify("WATCHDOG=1") is False
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        sent = [sd_notify.notify("WATCHDOG=1") for _ in range(2_000)]  # nobody reads: the queue (512 by default) fills
        assert sent[0] and not sent[-1]


def test_the_watchdog_pings_from_progress_at_most_once_per_interval():
    now, sent = [0.0], []
    watchdog = sd_notify.Watchdog(15.0, sent.append, lambda: now[0])
    watchdog.progressed()
    now[0] = 10.0
    watchdog.progressed()
    assert sent == ["WATCHDOG=1"]
    now[0] = 15.0
    watchdog.progressed()
    now[0] = 100.0  # no progress for a long while: nothing was sent in between
    assert sent == ["WATCHDOG=1"] * 2
    sd_notify.Watchdog(None, sent.append).progressed()
    assert len(sent) == 2


def test_a_child_does_not_inherit_the_notification_socket(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    env = sd_notify.child_environment()
    assert "NOTIFY_SOCKET" not in env and "WATCHDOG_USEC" not in env and "PATH" in env
