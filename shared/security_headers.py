"""Security headers on every response: nosniff everywhere, and a Content-Security-Policy on every page.

Why (issue 11): the consoles sent none, so another site could frame them
(clickjacking a "send to the seats" button), and a script that slipped into a
page would run. The consoles load every script from /console/static and carry
no inline script or handler (the templates' few were moved to console.js), so
their policy allows scripts from this origin only. Styles keep 'unsafe-inline':
the pages' small style attributes (progress bars, spacing) and htmx's own
indicator style need it, and a style cannot run code.

FastAPI's /docs and /redoc pages load Swagger UI / ReDoc from a CDN with an
inline start-up script; they get a policy that allows exactly that and still
cannot be framed. Anything that is not HTML (JSON, CSV, TwiML, static files)
gets `default-src 'none'`: it is never a page to run anything in.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONSOLE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
_CDN = "https://cdn.jsdelivr.net"
DOCS_POLICY = (
    f"default-src 'self'; script-src 'self' 'unsafe-inline' {_CDN}; style-src 'self' 'unsafe-inline' {_CDN}; "
    f"img-src 'self' data: https://fastapi.tiangolo.com; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
NON_HTML_POLICY = "default-src 'none'; frame-ancestors 'none'"
DOCS_PATHS = ("/docs", "/redoc")

_ALWAYS = [(b"x-content-type-options", b"nosniff")]
_PAGE = [(b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin"),
         (b"cross-origin-opener-policy", b"same-origin")]


class SecurityHeadersMiddleware:
    """A plain ASGI middleware (no task per request): adds the headers to each response's start."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope.get("path", "").startswith(DOCS_PATHS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
                added = list(_ALWAYS)
                if content_type.startswith(b"text/html"):
                    policy = DOCS_POLICY if docs else CONSOLE_POLICY
                    added += [(b"content-security-policy", policy.encode()), *_PAGE]
                else:
                    added.append((b"content-security-policy", NON_HTML_POLICY.encode()))
                headers += [(name, value) for name, value in added if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
