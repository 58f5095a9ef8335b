"""Who may use ``memfts ui``, and which writes it accepts.

The rules of ``serve --http`` (:mod:`memfts.http`), plus what a page in a browser needs:

- **Host** (DNS rebinding): a request whose Host header does not name this server is
  answered 421, so a web page whose name was rebound to 127.0.0.1 reads nothing.
- **Token**: listening beyond loopback needs one (:func:`memfts.http.check_exposure`); once
  set, every request must carry it (:class:`memfts.http.BearerAuth`). A browser cannot add
  a bearer header to a link it follows, so the printed URL carries ``?token=...`` once: the
  page answers with an HttpOnly, SameSite=Strict cookie and the same URL without the token
  (out of the address bar and history), and the cookie stands for the header after that.
- **Writes**: POST only, from a page of this server (Origin and Sec-Fetch-Site checked when
  the browser sends them), carrying the page's CSRF token; anything else is 403.
- **Every response**: a Content-Security-Policy allowing only this server's own script and
  style (no inline script: text from the database can never run), no framing, and no
  referrer sent to other sites.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import cookie_parser
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memfts.http import BearerAuth, check_exposure, security_settings

TOKEN_PARAMETER = "token"
CSRF_FIELD = "csrf"

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" with the
    # page's own forms, and the Origin check would refuse them
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

_SAFE_METHODS = {"GET", "HEAD"}
_SAME_SITE = {"same-origin", "none"}  # "none": typed in the address bar, a bookmark


def _allowed(value: str, patterns: Iterable[str]) -> bool:
    """``value`` is one of ``patterns``, where ``name:*`` stands for that name with a port."""
    for pattern in patterns:
        if value == pattern:
            return True
        if pattern.endswith(":*"):
            base, _, port = value.rpartition(":")
            if base == pattern[:-2] and port.isdigit():
                return True
    return False


class RequestGuard:
    """ASGI middleware: the Host check for every request; same-origin checks for writes."""

    def __init__(self, app: ASGIApp, host: str, extra_hosts: Iterable[str] = ()) -> None:
        self.app = app
        settings = security_settings(host, extra_hosts)
        self.hosts = settings.allowed_hosts
        self.origins = settings.allowed_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope["method"], headers)
        if refusal is not None:
            status, text = refusal
            await PlainTextResponse(text, status_code=status)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, method: str, headers: Headers) -> tuple[int, str] | None:
        if not _allowed(headers.get("host", ""), self.hosts):
            return 421, "this server does not answer to that host name (Host header refused)"
        if method in _SAFE_METHODS:
            return None
        if method != "POST":
            return 405, "only GET and POST are served"
        origin = headers.get("origin")
        if origin is not None and not _allowed(origin, self.origins):
            return 403, "a write must come from this server's own page (Origin refused)"
        if headers.get("sec-fetch-site", "same-origin") not in _SAME_SITE:
            return 403, "a write must come from this server's own page (cross-site refused)"
        return None


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _cookie_name(port: int) -> str:
    return f"memfts_ui_{port}"  # cookies ignore ports: two pages on one host keep apart


class TokenFromBrowser:
    """ASGI middleware, outside :class:`BearerAuth`: the token a browser can send (the
    ``?token=`` of the printed URL, else the cookie set from it) becomes the bearer header
    BearerAuth checks; a header already there wins."""

    def __init__(self, app: ASGIApp, port: int) -> None:
        self.app = app
        self.cookie = _cookie_name(port)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            cookies = cookie_parser(headers.get("cookie", ""))
            token = query.get(TOKEN_PARAMETER) or cookies.get(self.cookie)
            if token and "authorization" not in headers:
                scope = dict(scope)
                scope["headers"] = [
                    *scope["headers"],
                    (b"authorization", b"Bearer " + token.encode("latin-1", "replace")),
                ]
        await self.app(scope, receive, send)


class RememberToken:
    """ASGI middleware, inside :class:`BearerAuth` (so the token was right): a GET carrying
    ``?token=`` is answered with the cookie and a redirect to the URL without it."""

    def __init__(self, app: ASGIApp, port: int) -> None:
        self.app = app
        self.cookie = _cookie_name(port)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in _SAFE_METHODS:
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
            token = dict(query).get(TOKEN_PARAMETER)
            if token:
                rest = urlencode([(k, v) for k, v in query if k != TOKEN_PARAMETER])
                # the path as it came (still percent-encoded), with one leading slash: to a
                # browser "//evil.example/" is another site
                path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
                response = RedirectResponse(
                    "/" + path.lstrip("/") + (f"?{rest}" if rest else ""), 303
                )
                response.set_cookie(self.cookie, token, httponly=True, samesite="strict")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def guarded(
    app: ASGIApp, *, host: str, port: int, token: str | None, extra_hosts: Iterable[str] = ()
) -> ASGIApp:
    """``app`` behind every rule above; refuses (HttpConfigError) to serve off loopback
    without a token."""
    check_exposure(host, token)
    if token is not None:
        app = TokenFromBrowser(BearerAuth(RememberToken(app, port), token), port)
    return SecurityHeaders(RequestGuard(app, host, extra_hosts))


class CsrfToken:
    """The token every form of the page carries; a POST without it changes nothing.

    One random value per server process: only a page of this server (same origin, after the
    Host check) can read it, so another site cannot forge a write.
    """

    def __init__(self) -> None:
        self.value = secrets.token_urlsafe(32)

    def matches(self, given: object) -> bool:
        return isinstance(given, str) and hmac.compare_digest(given, self.value)
