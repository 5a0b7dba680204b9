"""Security headers on every answer: the pages' Content-Security-Policy, no framing, no
sniffing, `no-store`, and over https HSTS and `Secure` cookies."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SecurityHeaders", "content_security_policy"]

_HERE = Path(__file__).parent
# A year; not includeSubDomains nor preload: the server does not own its parent domain.
HSTS = "max-age=31536000"
# The style htmx adds to the page for its request indicators (htmx 2, default class names).
_HTMX_STYLE = (
    ".htmx-indicator{opacity:0;visibility: hidden} .htmx-request .htmx-indicator, "
    ".htmx-request.htmx-indicator{opacity:1;visibility: visible;transition: opacity 200ms "
    "ease-in}"
)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def content_security_policy() -> str:
    """The pages' policy: scripts and styles from the server only (htmx is served from the
    package), the templates' inline scripts, their event handlers (`onchange="…"`, allowed
    by `'unsafe-hashes'`: these exact ones, nothing else inline) and htmx's indicator style
    by hash, no plugin, no framing, forms to the server only."""
    scripts, handlers = set(), set()
    for template in sorted((_HERE / "templates").glob("*.html")):
        html = template.read_text(encoding="utf-8")
        scripts |= {_sha256(s) for s in re.findall(r"<script>(.*?)</script>", html, re.S)}
        handlers |= {_sha256(h) for h in re.findall(r"\son[a-z]+=\"([^\"]*)\"", html)}
    hashes = sorted(scripts | handlers)
    return "; ".join(
        (
            "default-src 'self'",
            " ".join(("script-src 'self'", *(["'unsafe-hashes'"] if handlers else []), *hashes)),
            f"style-src 'self' {_sha256(_HTMX_STYLE)}",
            "img-src 'self' data:",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


class SecurityHeaders:
    """ASGI middleware: security headers on every answer (`Cache-Control: no-store` but on
    the viewer's static files served), and over https (as the server saw the request: uvicorn takes
    `X-Forwarded-Proto` from a proxy it trusts) `Strict-Transport-Security` and `Secure` on
    every cookie set. To cover every answer, Starlette's own 500 included, it wraps the app's
    whole middleware stack (`create_app`), not as one of the app's middleware."""

    def __init__(self, app: ASGIApp, csp: str) -> None:
        self.app = app
        self.headers = {
            "Content-Security-Policy": csp,
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",  # no-referrer would send `Origin: null`
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        static = str(scope.get("path", "")).startswith("/ui/static/")

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                if https:
                    message["headers"] = [
                        (k, v + b"; Secure")
                        if k.lower() == b"set-cookie" and b"secure" not in v.lower()
                        else (k, v)
                        for k, v in message.get("headers", [])
                    ]
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers[name] = value
                if not static or message["status"] >= 400:  # a refusal is never kept
                    headers["Cache-Control"] = "no-store"
                if https:
                    headers["Strict-Transport-Security"] = HSTS
            await send(message)

        await self.app(scope, receive, sending)
