"""HTTP basic auth on every route (``--api-auth USER:PASS[,USER:PASS]``), as plain ASGI middleware so that the
page and the docs are covered as much as the API.

Every configured pair is compared, name and password, in constant time, and the answer to any failure is the same
401: nothing tells a client whether a user name exists.
"""
from __future__ import annotations

import base64
import binascii
import hmac

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

UNAUTHORIZED = JSONResponse({"detail": "Incorrect username or password"}, status_code=401,
                            headers={"WWW-Authenticate": 'Basic realm="nanoldm"'})


def check_credentials(header: bytes | None, credentials: tuple[tuple[str, str], ...]) -> bool:
    """True when the ``Authorization`` header names one of ``credentials``; the work done does not depend on
    which part is wrong."""
    user, password = _basic(header)
    ok = False
    for known_user, known_password in credentials:
        same_user = hmac.compare_digest(user.encode(), known_user.encode())
        same_password = hmac.compare_digest(password.encode(), known_password.encode())
        ok |= same_user & same_password
    return ok


def _basic(header: bytes | None) -> tuple[str, str]:
    """(user, password) of a ``Basic`` header; two empty strings for anything else."""
    scheme, _, token = (header or b"").decode("latin-1").partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        return "", ""
    return (user, password) if sep else ("", "")


class BasicAuth:
    def __init__(self, app: ASGIApp, credentials: tuple[tuple[str, str], ...]):
        self.app, self.credentials = app, credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not check_credentials(dict(scope["headers"]).get(b"authorization"),
                                                             self.credentials):
            await UNAUTHORIZED(scope, receive, send)
            return
        await self.app(scope, receive, send)
