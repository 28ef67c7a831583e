"""The console frame each service mounts: sign-in and sign-out, the language switch, CSRF checks, page rendering."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import ChoiceLoader, FileSystemLoader, pass_context
from markupsafe import Markup
from starlette.templating import Jinja2Templates

from shared.audit import service as audit
from shared.clock import LOCAL_TZ
from shared.console import sessions
from shared.console.sessions import ConsoleUser
from shared.contracts.dispatcher import OpenEmergency
from shared.db import transaction
from shared.i18n import LANGS, Catalog, lang_of
from shared.regions import region_name

HERE = Path(__file__).parent
LANG_COOKIE = "shouhu_lang"
SIGNIN_CSRF_COOKIE = "shouhu_signin_csrf"
STATIC_PATH = "/console/static"


class SignInRequired(Exception):
    """Raised by the page dependency when the browser has no live session; `base`: the console to sign in to."""

    def __init__(self, base: str = "/console") -> None:
        super().__init__(base)
        self.base = base


def _from_iso(value: str | None) -> datetime | None:
    """A time an audit body carries (ISO 8601), for `local`; None when it is not one."""
    try:
        return datetime.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None


def local_time(value: datetime | None, fmt: str = "%m-%d %H:%M") -> str:
    return "" if value is None else value.astimezone(LOCAL_TZ).strftime(fmt)


@pass_context
def region_filter(context: Any, code: str | None) -> Markup:
    """`{{ code | region }}`: the region's name in the page's language, its code on hover; no code: nationwide."""
    code = (code or "").strip()
    if not code:
        return Markup("<span>{}</span>").format(context["t"]("unit.all"))
    return Markup('<span class="region" title="{}">{}</span>').format(code, region_name(code, context.get("lang")))


@pass_context
def region_name_filter(context: Any, code: str | None) -> str:
    """`{{ code | region_name }}`: the name alone, as plain text (a chart's label, an attribute, a sentence)."""
    return region_text(code, context.get("lang") or "zh", context["t"])


def region_text(code: str | None, lang: str, t: Callable[..., str]) -> str:
    """A region's name as plain text (for a text placeholder, where no markup may go)."""
    return region_name(code, lang) if code else t("unit.all")


# ---- codes in words ----------------------------------------------------------------------------------
# A code the catalogue has no word for (a state or action added after this release) is shown as a generic word
# with the code on hover: never bare, and never silently dropped.
UNKNOWN_WORD = "word.unknown"


def say(messages: Catalog, lang: str, prefix: str, code: str | None, fallback: str | None = None) -> str:
    """The word for `code` in the vocabulary `prefix` (`result`, `no_answer` -> 无人接听), as plain text."""
    key = f"{prefix}.{code}"
    if code and messages.has(key):
        return messages.text(key, lang)
    return messages.text(fallback if fallback and messages.has(fallback) else UNKNOWN_WORD, lang)


@pass_context
def word_global(context: Any, prefix: str, code: str | None, fallback: str | None = None) -> Markup:
    """`{{ word('result', call.status) }}`: the word; an unknown code is a generic word with the code on hover."""
    messages: Catalog = context["console"].messages
    if code and messages.has(f"{prefix}.{code}"):
        return Markup("{}").format(messages.text(f"{prefix}.{code}", context.get("lang")))
    return Markup('<span class="code" title="{}">{}</span>').format(
        code or "", say(messages, context.get("lang") or "zh", prefix, code, fallback))


def actor_label(actor: str | None, t: Callable[..., str], lang: str = "zh") -> str:
    """Who did it, in words: a key's person (its name), the citizen, a channel, the system, a seat, a unit.

    Actors are recorded as `key:<id>:<name>`, `citizen:<channel>:<chat>`, `channel:<channel>`,
    `system:<component>`, `seat:<key id>`, `unit:<code>` (shared/audit); anything else is "someone else".
    """
    if not actor:
        return t("actor.nobody")
    kind, _, rest = actor.partition(":")
    if kind == "key":
        return rest.split(":", 1)[-1]
    if kind == "channel":
        text = t("channel." + rest)
        return text if text != "channel." + rest else t("actor.other")
    if kind == "citizen":
        return t("banner.citizen")
    if kind == "system":
        text = t("actor.system." + rest)
        return text if text != "actor.system." + rest else t("actor.system")
    if kind in ("seat", "operator"):
        return t("actor.seat")
    if kind == "unit":
        return t("actor.unit", code=region_name(rest, lang))
    return t("actor.other")


@pass_context
def actor_filter(context: Any, actor: str | None) -> Markup:
    """`{{ entry.actor | actor }}`: who, in words, with the recorded actor on hover."""
    label = actor_label(actor, context["t"], context.get("lang") or "zh")
    return Markup('<span class="actor" title="{}">{}</span>').format(actor or "", label)


_SIGNAL_WHY = re.compile(r"^signal (\S+) suggests (\S+)$")


def reason_text(reason: dict[str, Any], t: Callable[..., str]) -> str:
    """A tiering reason in words: why (the rule's words, else the policy's own description) and its effect."""
    rule, effect, why = str(reason.get("rule") or ""), str(reason.get("effect") or ""), str(reason.get("why") or "")
    if rule == "signal":
        found = _SIGNAL_WHY.match(why)
        signal = found.group(1) if found else "other"
        text = t("signal." + signal)
        why = t("reason.signal", signal=text if text != "signal." + signal else t(UNKNOWN_WORD))
        return t("reason.with_effect", why=why, effect=t("tier." + effect)) if effect in ("high", "medium", "low") \
            else why
    words = t("reason.rule." + rule)
    if words != "reason.rule." + rule:
        why = words
    parts = effect.split()
    if effect.startswith("at least") and parts[-1] in ("high", "medium", "low"):
        effect_text = t("reason.at_least", tier=t("tier." + parts[-1]))
    elif effect.startswith("raise") and parts[-1].isdigit():
        effect_text = t("reason.raise", n=parts[-1])
    elif effect.startswith("no change"):
        effect_text = t("reason.no_change")
    else:
        effect_text = ""
    return t("reason.with_effect", why=why, effect=effect_text) if effect_text else why


# What a form field's check said (pydantic's error types), in words. The JSON API keeps pydantic's English for
# programs; a person at a console reads this. Types not listed say "check this field" (form.error.invalid).
_FORM_ERRORS = {
    "missing": "form.error.missing", "string_too_short": "form.error.too_short", "string_too_long": "form.error.too_long",
    "too_short": "form.error.too_short", "too_long": "form.error.too_long",
    "greater_than_equal": "form.error.at_least", "greater_than": "form.error.at_least",
    "less_than_equal": "form.error.at_most", "less_than": "form.error.at_most",
    "int_parsing": "form.error.whole_number", "int_type": "form.error.whole_number",
    "int_from_float": "form.error.whole_number", "decimal_parsing": "form.error.number",
    "float_parsing": "form.error.number", "literal_error": "form.error.choose", "enum": "form.error.choose",
    "string_pattern_mismatch": "form.error.pattern", "datetime_parsing": "form.error.time",
    "datetime_from_date_parsing": "form.error.time", "datetime_type": "form.error.time",
}


def form_error(error: Mapping[str, Any], t: Callable[..., str], *, value_errors: Mapping[str, str] | None = None) -> str:
    """One pydantic error in the reader's language. `value_errors`: a form's own checks (raised as ValueError),
    by the start of their English message -> their catalogue key."""
    kind, ctx = str(error.get("type", "")), dict(error.get("ctx") or {})
    if kind == "value_error":
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        for start, key in (value_errors or {}).items():
            if message.startswith(start):
                return t(key)
        return t("form.error.invalid")
    if kind in ("string_too_short", "too_short") and int(ctx.get("min_length", 1)) <= 1:
        return t("form.error.missing")
    limits = {"n": ctx.get("min_length") or ctx.get("max_length") or ctx.get("ge") or ctx.get("gt")
              or ctx.get("le") or ctx.get("lt") or ""}
    return t(_FORM_ERRORS.get(kind, "form.error.invalid"), **limits)


@pass_context
def reason_global(context: Any, reason: dict[str, Any]) -> str:
    """`{{ reason(r) }}`: one tiering reason in words."""
    return reason_text(reason, context["t"])


def human_span(minutes: int, lang: str) -> str:
    """A time span a person reads at a glance: 45 分钟, 5 小时, 3 天 (rounded down)."""
    minutes = abs(int(minutes))
    if minutes < 120:
        value, unit = minutes, ("分钟", "min")
    elif minutes < 48 * 60:
        value, unit = minutes // 60, ("小时", "h")
    else:
        value, unit = minutes // 1440, ("天", "days")
    return f"{value} {unit[0] if lang == 'zh' else unit[1]}"


def safe_next(target: str | None, default: str) -> str:
    """Only same-site paths are followed after sign-in or a language switch (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


@dataclass(frozen=True, slots=True)
class LiveEmergency:
    """One open emergency as a console's banner shows it: where its link leads here, and a hint after it."""

    emergency: OpenEmergency
    href: str | None = None
    hint_key: str | None = None  # a text key, e.g. "banner.in_queue"


# What a console mounts to feed its emergency banner: the open emergencies the signed-in user may see.
EmergencyProvider = Callable[[Request, ConsoleUser], Awaitable[list[LiveEmergency]]]
LIVE_EVERY_MS = 2500  # the banner's poll interval: a new emergency shows within 2.5 s (+ one request)


def reporter(actor: str, t: Callable[..., str]) -> str:
    """Who reported a loss, in words: the citizen, or the key's name ("key:<id>:<name>")."""
    if actor.startswith("citizen:"):
        return t("banner.citizen")
    if actor.startswith("key:"):
        return actor.split(":", 2)[-1]
    return actor_label(actor, t)


class Console:
    """One console of a service: who may sign in, where it lives, its templates and texts, and its clock.

    A service may mount several (the dispatcher: supervisors at /console, officers at /field).
    Each has its own path (`base`: sign-in, sign-out, language switch under it) and, when
    given a `name`, its own session cookie and sessions, so signing in to one opens no other.

    `live_emergencies`: when given, every signed-in page carries the red emergency
    banner (console_base.html), fed by GET {home}/live/emergencies.
    """

    def __init__(self, *, service: str, title_key: str, roles: Iterable[str], home: str,
                 template_dirs: Iterable[Path], messages_files: Iterable[Path],
                 now: Callable[[Request], datetime], live_emergencies: EmergencyProvider | None = None,
                 base: str = "/console", name: str | None = None,
                 scale: Callable[[Request], float] | None = None) -> None:
        self.service = service
        self.live_emergencies = live_emergencies
        # Under the console's own home (/console, or /field for the officers' page), beside its pages.
        self.live_path = home.rstrip("/") + "/live/emergencies"
        self.live_every_ms = LIVE_EVERY_MS
        self.title_key = title_key
        self.roles = set(roles) | {"admin"}
        self.home = home
        self.base = base
        # What its sessions are stored under (console_sessions.service, 16 characters) and its cookie's name.
        self.session_scope = name or service
        self.cookie = f"shouhu_{self.session_scope}_session"
        self.now = now
        # Clock seconds per real second (a fast clock, SHOUHU_TIME_SCALE): a session is a real shift long.
        self.scale = scale or (lambda _request: 1.0)
        self.messages = Catalog(HERE / "messages.yaml", *messages_files)
        dirs = [str(d) for d in template_dirs] + [str(HERE / "templates")]
        self.templates = Jinja2Templates(directory=dirs[0])
        self.templates.env.loader = ChoiceLoader([FileSystemLoader(d) for d in dirs])
        self.templates.env.filters["local"] = local_time
        self.templates.env.filters["fromjson"] = orjson.loads
        self.templates.env.filters["fromiso"] = _from_iso
        self.templates.env.filters["region"] = region_filter
        self.templates.env.filters["actor"] = actor_filter
        self.templates.env.filters["region_name"] = region_name_filter
        self.templates.env.globals["word"] = word_global
        self.templates.env.globals["reason"] = reason_global
        self.templates.env.globals["static"] = STATIC_PATH

    # ---- texts ----------------------------------------------------------------------------------

    def lang_of(self, request: Request) -> str:
        return lang_of(request.cookies.get(LANG_COOKIE))

    def translator(self, lang: str) -> Callable[..., str]:
        return self.messages.translator(lang)

    # ---- who is signed in -----------------------------------------------------------------------

    async def current_user(self, request: Request) -> ConsoleUser:
        """The page dependency: the signed-in user with a console role, else off to the sign-in page."""
        token = request.cookies.get(self.cookie)
        if not token:
            raise SignInRequired(self.base)
        async with request.app.state.sessionmaker() as session:
            user = await sessions.resolve(session, token, service=self.session_scope, now=self.now(request))
        if user is None or user.principal.role not in self.roles:
            raise SignInRequired(self.base)
        request.state.principal = user.principal
        return user

    async def acting_user(self, request: Request) -> ConsoleUser:
        """For every state-changing request: a live session, a matching CSRF token and no foreign Origin."""
        user = await self.current_user(request)
        origin = request.headers.get("origin")
        if origin and origin.rstrip("/") != str(request.base_url).rstrip("/"):
            raise HTTPException(403, "cross-site request refused (Origin does not match)")
        presented = request.headers.get("x-csrf-token")
        if presented is None and "form" in request.headers.get("content-type", ""):
            presented = (await request.form()).get("csrf_token")
        if not sessions.csrf_matches(user.csrf_token, presented if isinstance(presented, str) else None):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        return user

    def page_user(self) -> Any:
        return Annotated[ConsoleUser, Depends(self.current_user)]

    def action_user(self) -> Any:
        return Annotated[ConsoleUser, Depends(self.acting_user)]

    # ---- rendering ------------------------------------------------------------------------------

    def render(self, request: Request, template: str, user: ConsoleUser | None, *, status_code: int = 200,
               **context: Any) -> HTMLResponse:
        lang = self.lang_of(request)
        context.update(request=request, user=user, lang=lang, t=self.translator(lang), console=self,
                       span=lambda minutes: human_span(minutes, lang),
                       csrf_token=user.csrf_token if user else "", now=self.now(request),
                       here=request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)

    def redirect(self, path: str) -> RedirectResponse:
        # 303: the browser follows a POST with a GET (POST-redirect-GET, no re-submission on reload).
        return RedirectResponse(path, status_code=303)

    # What a browser gets instead of a JSON error on a console page: words, and the way back home.
    ERROR_KEYS = {400: "error.bad_request", 403: "error.forbidden", 404: "error.not_found", 405: "error.method",
                  422: "error.bad_request"}

    def owns(self, path: str) -> bool:
        """Whether `path` is one of this console's pages (under its base or its home)."""
        return any(path == root or path.startswith(root.rstrip("/") + "/") for root in {self.base, self.home})

    def error_page(self, request: Request, status_code: int, detail: str | None) -> HTMLResponse:
        """An error as a page in the reader's language; the technical detail folded away beneath it."""
        key = self.ERROR_KEYS.get(status_code, "error.other")
        return self.render(request, "error_page.html", None, status_code=status_code, headline_key=key,
                           help_key=f"{key}.help", status=status_code, detail=detail)

    # ---- mounting -------------------------------------------------------------------------------

    def install(self, app: FastAPI) -> None:
        # shared.web's error handlers answer a browser on these paths with error_page rather than JSON.
        consoles = getattr(app.state, "consoles", None)
        if consoles is None:
            consoles = app.state.consoles = []
        consoles.append(self)
        # The static files are the same for every console: mounted once, by the first console installed.
        if not any(getattr(route, "path", None) == STATIC_PATH for route in app.routes):
            app.mount(STATIC_PATH, StaticFiles(directory=str(HERE / "static")), name="console-static")
        app.include_router(self._auth_router())
        if self.live_emergencies is not None:
            app.include_router(self._live_router())

        # One handler for the app, whichever console raised: each sends the browser to its own sign-in page.
        @app.exception_handler(SignInRequired)
        async def _to_sign_in(request: Request, exc: SignInRequired) -> Response:
            target = f"{exc.base}/sign-in?next={quote(request.url.path)}"
            if request.headers.get("hx-request"):
                return Response(status_code=401, headers={"HX-Redirect": target})
            if request.method != "GET":
                return Response("sign in first", status_code=401)
            return RedirectResponse(target, status_code=303)

    def _auth_router(self) -> APIRouter:
        router = APIRouter(prefix=self.base, include_in_schema=False)
        console = self

        @router.get("/sign-in")
        async def sign_in_page(request: Request, next: str | None = None) -> HTMLResponse:  # noqa: A002
            return console._sign_in_form(request, next, error=None)

        @router.post("/sign-in")
        async def sign_in(request: Request, api_key: Annotated[str, Form(max_length=300)] = "",
                          csrf_token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "") -> Response:  # noqa: A002
            if not sessions.csrf_matches(request.cookies.get(SIGNIN_CSRF_COOKIE, ""), csrf_token):
                raise HTTPException(403, "missing or wrong CSRF token: reload the sign-in page")
            state = request.app.state
            principal = await state.key_cache.authenticate(state.sessionmaker, api_key.strip()) if api_key else None
            if principal is None or principal.role not in console.roles:
                error = "signin.bad_key" if principal is None else "signin.wrong_role"
                return console._sign_in_form(request, next, error=error, status_code=401)
            now = console.now(request)
            async with transaction(state.sessionmaker) as session:
                token = await sessions.open_session(session, principal, service=console.session_scope, now=now,
                                                    ttl=sessions.SESSION_TTL * console.scale(request))
                audit.record(session, at=now, actor=principal.actor, action="console.signed_in",
                             region_code=principal.unit or None, service=console.session_scope)
            response = console.redirect(safe_next(next, console.home))
            response.set_cookie(console.cookie, token, max_age=int(sessions.SESSION_TTL.total_seconds()),
                                httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/")
            response.delete_cookie(SIGNIN_CSRF_COOKIE, path=console.base)
            return response

        @router.post("/sign-out")
        async def sign_out(request: Request, user: ConsoleUser = Depends(console.acting_user)) -> Response:
            now = console.now(request)
            async with transaction(request.app.state.sessionmaker) as session:
                await sessions.close_session(session, request.cookies[console.cookie])
                audit.record(session, at=now, actor=user.principal.actor, action="console.signed_out",
                             region_code=user.principal.unit or None, service=console.session_scope)
            response = console.redirect(f"{console.base}/sign-in")
            response.delete_cookie(console.cookie, path="/")
            return response

        @router.get("/lang/{lang}")
        async def switch_language(lang: str, next: str | None = None) -> Response:  # noqa: A002
            response = console.redirect(safe_next(next, console.home))
            response.set_cookie(LANG_COOKIE, lang if lang in LANGS else "zh", max_age=365 * 86400,
                                samesite="lax", path="/")
            return response

        return router

    def _live_router(self) -> APIRouter:
        """The emergency banner's feed: an HTML fragment (empty when there is none), polled by emergencies.js.

        Short polling rather than server-sent events: each answer is one small
        indexed query (the open payment stops), it passes every proxy and needs no
        connection held per open console, a replica restart loses nothing, and a
        2.5 s interval is well inside the 5 s the banner must appear in.
        """
        router = APIRouter(include_in_schema=False)
        console = self
        provider = self.live_emergencies
        assert provider is not None

        @router.get(self.live_path)
        async def live_emergencies(request: Request) -> Response:
            try:
                user = await console.current_user(request)
            except SignInRequired:
                # Not a redirect: the banner's script stops polling; the page's next action signs in again.
                return Response("sign in first", status_code=401)
            items = await provider(request, user)
            lang, now = console.lang_of(request), console.now(request)
            t = console.translator(lang)
            rows = [{"item": item, "e": item.emergency, "who": reporter(item.emergency.reported_by, t),
                     "minutes_ago": max(0, int((now - item.emergency.reported_at).total_seconds() // 60))}
                    for item in items]
            response = console.render(request, "emergency_banner.html", user, rows=rows)
            response.headers["Cache-Control"] = "no-store"
            return response

        return router

    def _sign_in_form(self, request: Request, next_path: str | None, *, error: str | None,
                      status_code: int = 200) -> HTMLResponse:
        token = request.cookies.get(SIGNIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
        response = self.render(request, "sign_in.html", None, status_code=status_code, error=error,
                               next=safe_next(next_path, self.home), signin_csrf=token)
        response.set_cookie(SIGNIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path=self.base,
                            secure=request.url.scheme == "https")
        return response
