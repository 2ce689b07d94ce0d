"""TUF metadata is streamed: an endless file is cut at ngclient's length limit, a trickled
one at its deadline, and neither is held in memory first."""

from __future__ import annotations

import time

import httpx
import pytest
from tuf.api import exceptions as tuf_errors

from appliance.sync.releases import HttpxFetcher, refusal_reason


def client_serving(chunks, pulled: list[int]) -> httpx.Client:
    def body():
        for chunk in chunks:
            pulled.append(len(chunk))
            yield chunk

    return httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, content=body())))


def test_an_endless_timestamp_is_cut_at_the_length_limit_without_buffering_it():
    """Issue 24, T4-endless-metadata. Before: the whole body was read first (3.24 GB) and
    the round reported 'hub unreachable'."""
    pulled: list[int] = []
    fetcher = HttpxFetcher(client_serving((bytes(1 << 20) for _ in range(64)), pulled))
    with pytest.raises(tuf_errors.DownloadLengthMismatchError) as cut:
        fetcher.download_bytes("http://hub/tuf/metadata/timestamp.json", 16384)
    assert sum(pulled) <= 2 << 20
    assert refusal_reason(cut.value).startswith("oversized metadata (cut at its length limit)")


def test_a_trickled_file_is_given_up_at_its_deadline():
    """Issue 24, T4b-slow-metadata. Before: a byte every 5 s kept the round going past 75 s."""

    def trickle():
        while True:
            time.sleep(0.1)
            yield b"{"

    fetcher = HttpxFetcher(client_serving(trickle(), []), deadline_s=0.5)
    started = time.monotonic()
    with pytest.raises(tuf_errors.DownloadError, match="not whole within 0.5 s"):
        fetcher.download_bytes("http://hub/tuf/metadata/timestamp.json", 16384)
    assert time.monotonic() - started < 3


def test_an_http_error_is_a_download_error_naming_the_status():
    fetcher = HttpxFetcher(httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(404))))
    with pytest.raises(tuf_errors.DownloadHTTPError, match="404"):
        fetcher.download_bytes("http://hub/tuf/metadata/2.root.json", 16384)
