"""Request bodies are small forms or JSON, except a model package to ``/api/models``
(:mod:`appliance.web.uploads` streams that one to disk under its own cap).

Every other body is refused once it passes :data:`MAX_FORM_BYTES` (declared or counted as
it arrives), and a multipart one at once: no page posts files, and a form parser would
spool a multipart body's file parts to disk before any check (a CSRF refusal, say) ran.
"""

from __future__ import annotations

import json

#: Largest body of a form or JSON request.
MAX_FORM_BYTES = 1024 * 1024
#: The routes that take a large body and cap it themselves.
UPLOAD_PATHS = frozenset({"/api/models"})


async def _answer(send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class SmallBodies:
    """ASGI middleware applying the rule above."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in UPLOAD_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if headers.get(b"content-type", b"").lower().startswith(b"multipart/"):
            await _answer(send, 415, "multipart bodies are not accepted here")
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
            await _answer(send, 413, f"body over {MAX_FORM_BYTES} bytes")
            return
        received, started, refused = 0, False, False

        async def counted_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received <= MAX_FORM_BYTES:
                return message
            refused = True  # the app sees the client gone; its answer is dropped for ours
            if not started:
                await _answer(send, 413, f"body over {MAX_FORM_BYTES} bytes")
            return {"type": "http.disconnect"}

        async def noted_send(message):
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted_receive, noted_send)
