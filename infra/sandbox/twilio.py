"""The Twilio sandbox: a fake Twilio Voice that the real `twilio` client talks to unchanged, and a phone network.

One in-memory state, two faces:

- the REST API, `/2010-04-01/Accounts/{AccountSid}/Calls.json` and `.../Calls/{CallSid}.json`, which the
  callcenter calls through `twilio.rest.Client` (point it here with `client.api.base_url`): Twilio's call
  resource, its error bodies and codes, HTTP Basic auth, and Twilio's default of 1 call per second per account;
- the control API, `/sandbox/twilio/...`, which tests, benchmarks and the sandbox page use to play the people
  being called: how each number behaves (answers, is busy, never picks up, is a voicemail, or rings on the
  page), key presses, hang-ups, and a timeline of everything each call did; and calls *in*: a phone dials one
  of the account's incoming numbers (its voice URL set on the control API, as Twilio's console sets it), Twilio
  answers and runs the application's TwiML, and the caller presses keys and hears every <Say> (a desk-phone seat).

How twilio-python 9 encodes a request (twilio/rest/api/v2010/account/call/__init__.py `_create_async`,
twilio/base/client_base.py `request_async`, twilio/http/async_http_client.py): a POST whose body is
`application/x-www-form-urlencoded`, built by aiohttp's FormData from a dict with `urlencode(doseq=True)`, so
a list-valued field such as `StatusCallbackEvent` becomes the key repeated once per value
(`StatusCallbackEvent=initiated&StatusCallbackEvent=ringing&...`); booleans are `true`/`false`; unset
arguments are left out. Credentials go as HTTP Basic auth (AccountSid:AuthToken). Errors are read from a JSON
body `{"code", "message", "more_info", "status"}` into `TwilioRestException(status, uri, msg, code)`.

Once created, each call runs as an asyncio task (at most `max_live_calls` at once; the rest stay queued) that
plays the phone network: status callbacks, the TwiML fetch when the callee answers, and the TwiML verbs. Every
request to the application is signed as Twilio signs it: `X-Twilio-Signature` is
`RequestValidator(auth_token).compute_signature(url, params)` (HMAC-SHA1 over the full URL followed by each
form parameter's name and value in name order, base64), computed by the library itself so it matches byte for
byte. A GET request carries its parameters in the query string and is signed over that full URL alone.

Every wait (ringing, Gather timeouts, Pause, answering-machine detection) is multiplied by `time_scale`, so tests
run a minute of phone time in a fraction of a second; durations are reported in phone seconds (wall time
divided by `time_scale`).

The server is one asyncio process: all state lives in one `TwilioSandbox`, mutated only between awaits, so no
locks are needed. Waiters (`?wait=` on the control API) sleep on an event that every change replaces.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import math
import re
import secrets
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Literal
from urllib.parse import urlencode, urljoin, urlsplit
from xml.etree import ElementTree

import httpx
import phonenumbers
import structlog
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AliasChoices, BaseModel, Field
from twilio.request_validator import RequestValidator

from infra.sandbox.signal import ChangeSignal

log = structlog.get_logger(__name__)

# The account the callcenter uses when TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN are unset (a real SID's shape).
DEFAULT_ACCOUNT_SID = "AC" + "5a" * 16
DEFAULT_AUTH_TOKEN = "sandbox-auth-token"
API_VERSION = "2010-04-01"
ACCOUNT_SID_RE = re.compile(r"^AC[0-9a-zA-Z]{32}$")
# E.164: "+", a country code that does not start with 0, at most 15 digits in all (8 at least, as Twilio checks).
E164_RE = re.compile(r"^\+[1-9]\d{7,14}$")
DIGITS_RE = re.compile(r"^[0-9*#]*$")

# Twilio places 1 call per second per account by default
# (https://help.twilio.com/articles/223180028-Understanding-Twilio-Voice-Calls-Per-Second-CPS-limits).
DEFAULT_CALLS_PER_S = 1
# Arrivals jitter by tens of milliseconds on the way from the application (the first request on a new connection
# lands ~25 ms late, so the next lands early relative to it). A client pacing exactly at the limit is not refused
# (nor counted as over it) for that: two calls count as within one second when they arrive < 0.95 s apart.
CPS_JITTER_S = 0.05
MAX_LIVE_CALLS = 500  # calls simulated at once; later ones wait as "queued"
MAX_KEPT_CALLS = 2000  # finished calls beyond this are forgotten, oldest first
MAX_EVENTS_PER_CALL = 1000
MAX_DOCUMENTS_PER_CALL = 200  # TwiML documents one call may run (a Redirect loop ends here)
WEBHOOK_TIMEOUT_S = 15.0  # Twilio's default timeout for a webhook request

# Phone time, in seconds (each is multiplied by time_scale).
DIAL_DELAY_S = 0.2  # queued -> initiated
FAIL_AFTER_S = 0.5  # initiated -> failed
BUSY_AFTER_S = 1.0  # initiated -> busy (the busy tone comes before any ringing)
DEFAULT_RING_S = 3.0  # how long a scripted callee lets it ring before answering
AMD_S = 2.0  # answering-machine detection, before the TwiML fetch
DEFAULT_TIMEOUT_S = 60  # the call's `Timeout`: ringing longer than this is no-answer
MAX_TIMEOUT_S = 600
DEFAULT_GATHER_TIMEOUT_S = 5
DEFAULT_DIAL_TIMEOUT_S = 30
DEFAULT_DIAL_TIME_LIMIT_S = 14400
DEFAULT_DIAL_TALK_S = 5.0  # how long a dialled party who answers stays on the line unless scripted

BEHAVIOURS = ("answer", "busy", "no-answer", "failed", "machine", "manual")
FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
CALLBACK_EVENTS = ("initiated", "ringing", "answered", "completed")
APPLICATION_ERROR_SAY = "We are sorry, an application error has occurred. Goodbye."


class TwilioError(Exception):
    """A REST API error: the HTTP status, Twilio's error code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if self.status == 401 else None
        return JSONResponse({"code": self.code, "message": self.message,
                             "more_info": f"https://www.twilio.com/docs/errors/{self.code}", "status": self.status},
                            status_code=self.status, headers=headers)


def rfc2822(at: float | None) -> str | None:
    """Twilio's date format: `Tue, 31 Aug 2010 20:36:28 +0000`."""
    if at is None:
        return None
    return format_datetime(datetime.fromtimestamp(int(at), UTC))


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def national_format(number: str) -> str:
    try:
        parsed = phonenumbers.parse(number)
    except phonenumbers.NumberParseException:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)


def with_query(url: str, params: dict[str, str]) -> str:
    if not params:
        return url
    return url + ("&" if urlsplit(url).query else "?") + urlencode(params)


# --- state -------------------------------------------------------------------------------------------------------


@dataclass
class Account:
    sid: str
    token: str
    calls_per_s: int | None = None  # None: the sandbox-wide limit
    created_at: float = field(default_factory=time.time)
    recent_creates: deque[float] = field(default_factory=deque)  # monotonic times in the last second
    created: int = 0
    rejected_429: int = 0
    max_calls_in_any_second: int = 0

    def public(self, default_limit: int) -> dict[str, Any]:
        return {"sid": self.sid, "calls_per_s": self.calls_per_s if self.calls_per_s is not None else default_limit,
                "created": self.created, "rejected_429": self.rejected_429,
                "max_calls_in_any_second": self.max_calls_in_any_second}


@dataclass
class NumberScript:
    """How the person at one number behaves when called."""

    behaviour: str = "answer"
    digits: list[str] = field(default_factory=list)  # pressed one entry per <Gather>, in order; "" stays silent
    ring_s: float = DEFAULT_RING_S
    hangup_after_s: float | None = None  # hangs up this long after answering (default: when the application does)

    def public(self) -> dict[str, Any]:
        return {"behaviour": self.behaviour, "digits": list(self.digits), "ring_s": self.ring_s,
                "hangup_after_s": self.hangup_after_s}


@dataclass
class IncomingNumber:
    """One of an account's Twilio numbers: where a call to it fetches its TwiML (the number's voice webhook)."""

    number: str
    url: str
    method: str = "POST"
    account_sid: str = DEFAULT_ACCOUNT_SID
    status_callback: str | None = None
    status_callback_method: str = "POST"

    def public(self) -> dict[str, Any]:
        return {"number": self.number, "url": self.url, "method": self.method, "account_sid": self.account_sid,
                "status_callback": self.status_callback, "status_callback_method": self.status_callback_method}


@dataclass
class Fetch:
    """Next: fetch TwiML from a URL (the answer URL, a Gather or Dial action, a Redirect)."""

    url: str
    method: str = "POST"
    params: dict[str, str] = field(default_factory=dict)
    reason: str = "answer"


@dataclass
class Inline:
    """Next: run TwiML given in the request (`Twiml`), which has no URL of its own."""

    twiml: str
    reason: str = "twiml"


@dataclass
class Hangup:
    """Next: end the call."""

    by: str


Step = Fetch | Inline | Hangup


class TwimlError(Exception):
    """The application's TwiML cannot be run: Twilio's error code (11200 retrieval, 12100 parse, 11100 URL)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Call:
    """One call leg: a call created through the REST API, or a leg a <Dial> places."""

    def __init__(self, *, account_sid: str, to: str, from_: str, script: NumberScript, direction: str = "outbound-api",
                 parent_call_sid: str | None = None, url: str | None = None, method: str = "POST",
                 twiml: str | None = None, fallback_url: str | None = None, fallback_method: str = "POST",
                 status_callback: str | None = None, status_callback_method: str = "POST",
                 status_callback_events: frozenset[str] = frozenset(), machine_detection: str | None = None,
                 timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
        self.sid = new_sid("CA")
        self.account_sid = account_sid
        self.to = to
        self.from_ = from_
        self.script = script
        self.direction = direction
        self.parent_call_sid = parent_call_sid
        self.url = url
        self.method = method
        self.twiml = twiml
        self.fallback_url = fallback_url
        self.fallback_method = fallback_method
        self.status_callback = status_callback
        self.status_callback_method = status_callback_method
        self.status_callback_events = status_callback_events
        self.machine_detection = machine_detection
        self.timeout_s = timeout_s
        self.phone_number_sid = "PN" + hashlib.sha1(from_.encode()).hexdigest()[:32]

        now = time.time()
        self.created_at = now
        self.updated_at = now
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.duration_s: int | None = None
        self.status = "queued"
        self.answered_by: str | None = None
        self.ended_by: str | None = None
        self.events: list[dict[str, Any]] = []
        self.digits_left = list(script.digits)
        self.keys = ""  # pressed and not yet read by a <Gather>
        self.gathering = False
        self.bridged_to: str | None = None
        self.legs: list[str] = []
        self.done = False  # ended, and every status callback answered

        self.actions: deque[str] = deque()  # "answer", "reject", "cancel", "hangup" from the API or the page
        self.interrupt: Step | None = None  # what replaces the running TwiML (a hang-up or a redirect)
        self.task: asyncio.Task[None] | None = None
        self.doc_task: asyncio.Task[Step] | None = None
        self.outbox: asyncio.Queue[dict[str, str] | None] = asyncio.Queue()
        self.sender: asyncio.Task[None] | None = None
        self.sequence = 0
        self._poked = ChangeSignal()

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def log(self, kind: str, **details: Any) -> dict[str, Any]:
        event = {"at": round(time.time(), 3), "type": kind, **details}
        if len(self.events) < MAX_EVENTS_PER_CALL:
            self.events.append(event)
        self.updated_at = time.time()
        return event

    def poke(self) -> None:
        """Wake this call's own waits (ringing, Gather, bridge); each re-checks what it waits for."""
        self._poked.fire()

    async def wait_poke(self, timeout_s: float) -> None:
        await self._poked.wait(timeout_s)

    def resource(self) -> dict[str, Any]:
        """Twilio's call resource, as the REST API answers it."""
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}"
        return {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": self.answered_by,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": rfc2822(self.created_at),
            "date_updated": rfc2822(self.updated_at),
            "direction": self.direction,
            "duration": None if self.duration_s is None else str(self.duration_s),
            "end_time": rfc2822(self.ended_at),
            "forwarded_from": None,
            "from": self.from_,
            "from_formatted": national_format(self.from_),
            "group_sid": None,
            "parent_call_sid": self.parent_call_sid,
            "phone_number_sid": self.phone_number_sid,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": self.sid,
            "start_time": rfc2822(self.answered_at),
            "status": self.status,
            "subresource_uris": {name: f"{uri}/{path}.json" for name, path in (
                ("feedback", "Feedback"), ("user_defined_messages", "UserDefinedMessages"),
                ("notifications", "Notifications"), ("recordings", "Recordings"), ("streams", "Streams"),
                ("payments", "Payments"), ("user_defined_message_subscriptions", "UserDefinedMessageSubscriptions"),
                ("siprec", "Siprec"), ("events", "Events"), ("feedback_summaries", "FeedbackSummary"))},
            "to": self.to,
            "to_formatted": national_format(self.to),
            "trunk_sid": None,
            "uri": uri + ".json",
        }

    def public(self) -> dict[str, Any]:
        """The control API's view: state, the script it follows, and the timeline."""
        return {"sid": self.sid, "account_sid": self.account_sid, "parent_call_sid": self.parent_call_sid,
                "direction": self.direction, "to": self.to, "from": self.from_, "status": self.status,
                "answered_by": self.answered_by, "behaviour": self.script.behaviour,
                "created_at": round(self.created_at, 3),
                "answered_at": None if self.answered_at is None else round(self.answered_at, 3),
                "ended_at": None if self.ended_at is None else round(self.ended_at, 3),
                "duration": self.duration_s, "ended_by": self.ended_by, "done": self.done,
                "gathering": self.gathering, "keys_buffered": self.keys, "bridged_to": self.bridged_to,
                "legs": list(self.legs), "url": self.url, "machine_detection": self.machine_detection,
                "status_callback": self.status_callback,
                "status_callback_events": sorted(self.status_callback_events, key=CALLBACK_EVENTS.index),
                "events": list(self.events)}


@dataclass
class Document:
    root: ElementTree.Element
    url: str | None  # where it came from (relative URLs resolve against it); None for inline TwiML


class TwilioSandbox:
    """The fake Twilio: accounts, number scripts, calls and the simulation that runs them."""

    def __init__(self, *, time_scale: float = 1.0, calls_per_s: int = DEFAULT_CALLS_PER_S,
                 webhook_timeout_s: float = WEBHOOK_TIMEOUT_S, max_live_calls: int = MAX_LIVE_CALLS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock  # monotonic seconds, for the calls-per-second limit
        self.initial_time_scale = time_scale
        self.initial_calls_per_s = calls_per_s
        self.webhook_timeout_s = webhook_timeout_s
        self._slots = asyncio.Semaphore(max_live_calls)
        self._http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = ChangeSignal()
        self._closing = False
        self._reset_state()

    def _reset_state(self) -> None:
        self.time_scale = self.initial_time_scale
        self.calls_per_s = self.initial_calls_per_s
        self.default_behaviour = "answer"
        self.accounts: dict[str, Account] = {DEFAULT_ACCOUNT_SID: Account(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)}
        self.numbers: dict[str, NumberScript] = {}
        self.incoming: dict[str, IncomingNumber] = {}  # the account's own numbers that take calls
        self.calls: dict[str, Call] = {}  # in creation order
        self.outcomes: Counter[str] = Counter()  # final statuses of REST-created calls
        self.counters: Counter[str] = Counter()
        self.faults = FaultPlan()

    # -- waiting --

    def notify(self) -> None:
        """Wake every control-API waiter; each re-checks its condition."""
        self._changed.fire()

    async def wait_change(self, timeout_s: float) -> None:
        await self._changed.wait(timeout_s)

    def scaled(self, phone_s: float) -> float:
        return max(0.0, phone_s) * self.time_scale

    # -- accounts, numbers, limits --

    def add_account(self, sid: str, token: str, calls_per_s: int | None = None) -> Account:
        account = self.accounts.get(sid)
        if account is None:
            account = self.accounts[sid] = Account(sid, token, calls_per_s)
        else:
            account.token = token
            if calls_per_s is not None:
                account.calls_per_s = calls_per_s
        return account

    def authenticate(self, account_sid: str, authorization: str | None) -> Account:
        """HTTP Basic auth as Twilio checks it: the account's SID and auth token, for that account's own URLs."""
        denied = TwilioError(401, 20003, "Authenticate")
        if not authorization or not authorization.lower().startswith("basic "):
            raise denied
        try:
            user, _, password = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise denied from None
        account = self.accounts.get(user)
        if account is None or user != account_sid or not hmac.compare_digest(account.token.encode(),
                                                                              password.encode()):
            raise denied
        self.faults.check()  # an injected burst answers every authenticated REST request (see "faults" below)
        return account

    def script_for(self, number: str) -> NumberScript:
        script = self.numbers.get(number)
        if script is None:
            return NumberScript(behaviour=self.default_behaviour)
        return NumberScript(script.behaviour, list(script.digits), script.ring_s, script.hangup_after_s)

    def limit_for(self, account: Account) -> int:
        return account.calls_per_s if account.calls_per_s is not None else self.calls_per_s

    def admit(self, account: Account) -> None:
        """Twilio's calls-per-second limit over a sliding second: refuse with 429 (20429), or count the call."""
        now = self.clock()
        window = account.recent_creates
        while window and now - window[0] >= 1.0 - CPS_JITTER_S:
            window.popleft()
        limit = self.limit_for(account)
        if limit and len(window) >= limit:
            account.rejected_429 += 1
            raise TwilioError(429, 20429, "Too Many Requests")
        window.append(now)
        account.created += 1
        account.max_calls_in_any_second = max(account.max_calls_in_any_second, len(window))

    # -- the REST API --

    def create_call(self, account: Account, form: list[tuple[str, str]]) -> Call:
        values: dict[str, str] = {}
        for key, value in form:
            values.setdefault(key, value)
        to = values.get("To", "").strip()
        from_ = values.get("From", "").strip()
        if not to:
            raise TwilioError(400, 21201, "No 'To' number is specified")
        if not from_:
            raise TwilioError(400, 21213, "No 'From' number is specified")
        if not E164_RE.match(to) or to == from_:
            raise TwilioError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not E164_RE.match(from_):
            raise TwilioError(400, 21212, f"The 'From' number {from_} is not a valid phone number, shortcode, "
                                          "or alphanumeric sender ID.")
        url = values.get("Url", "").strip() or None
        twiml = values.get("Twiml") or None
        if url is not None and not is_http_url(url):
            raise TwilioError(400, 21205, f"Url is not a valid URL: {url}")
        if url is None and twiml is None:
            raise TwilioError(400, 21205, "Url is not a valid URL: a 'Url' or 'Twiml' parameter is required")
        events: set[str] = set()
        for key, value in form:
            if key == "StatusCallbackEvent":
                events.update(e for e in re.split(r"[\s,]+", value.strip().lower()) if e in CALLBACK_EVENTS)
        try:
            timeout_s = min(max(int(values.get("Timeout") or DEFAULT_TIMEOUT_S), 1), MAX_TIMEOUT_S)
        except ValueError:
            timeout_s = DEFAULT_TIMEOUT_S
        machine_detection = values.get("MachineDetection") or None
        if machine_detection not in (None, "Enable", "DetectMessageEnd"):
            machine_detection = "Enable"
        self.admit(account)
        call = Call(account_sid=account.sid, to=to, from_=from_, script=self.script_for(to), url=url,
                    method=_method(values.get("Method")), twiml=None if url else twiml,
                    fallback_url=values.get("FallbackUrl") or None, fallback_method=_method(values.get("FallbackMethod")),
                    status_callback=values.get("StatusCallback") or None,
                    status_callback_method=_method(values.get("StatusCallbackMethod")),
                    status_callback_events=frozenset(events), machine_detection=machine_detection,
                    timeout_s=timeout_s)
        self._remember(call)
        call.log("status", status="queued", behaviour=call.script.behaviour)
        self.counters["created"] += 1
        call.task = self._spawn(self._run(call), name=f"twilio-call-{call.sid}")
        log.info("sandbox.twilio.call_created", sid=call.sid, to=to, behaviour=call.script.behaviour)
        self.notify()
        return call

    def call_of(self, account: Account, call_sid: str, path: str) -> Call:
        call = self.calls.get(call_sid)
        if call is None or call.account_sid != account.sid:
            raise TwilioError(404, 20404, f"The requested resource {path} was not found")
        return call

    def update_call(self, call: Call, form: list[tuple[str, str]]) -> None:
        """Status=completed|canceled hangs up or cancels; Url or Twiml redirects a live call."""
        values = dict(reversed(form))  # the first value of each field
        status = (values.get("Status") or "").strip().lower()
        url = (values.get("Url") or "").strip() or None
        twiml = values.get("Twiml") or None
        if status and status not in ("completed", "canceled"):
            raise TwilioError(400, 21220, f"Invalid Status: {status}. Valid values are completed and canceled")
        if url is not None and not is_http_url(url):
            raise TwilioError(400, 21205, f"Url is not a valid URL: {url}")
        # Every accepted update request is on the call's timeline with the time it arrived and the status the call
        # had then (benchmarks measure how soon an application cancels a call after deciding to).
        call.log("api_update", status=status or None, url=url, twiml=bool(twiml), call_status=call.status)
        self.counters["api_updates"] += 1
        if values.get("StatusCallback"):
            call.status_callback = values["StatusCallback"]
            call.status_callback_method = _method(values.get("StatusCallbackMethod"))
        if status:
            if call.final:
                return  # Twilio answers an ended call unchanged
            # Twilio: "canceled" hangs up only a call still queued or ringing; "completed" any live call.
            if status == "completed" or call.status in ("queued", "ringing"):
                self.hang_up(call, by="api")
            return
        if url is None and twiml is None:
            return
        if call.final:
            raise TwilioError(400, 21220, "Unable to update record: Call is not in-progress. Cannot redirect.")
        if call.status in ("queued", "ringing"):
            call.url, call.twiml = (url, None) if url else (None, twiml)
            if url:
                call.method = _method(values.get("Method"))
            return
        if call.direction == "outbound-dial":
            raise TwilioError(400, 21220, "Unable to update record: the sandbox does not redirect a <Dial>'s legs.")
        step: Step = Fetch(url, _method(values.get("Method")), reason="update") if url else Inline(twiml or "",
                                                                                                    reason="update")
        self._interrupt(call, step)

    def dial_in(self, from_: str, to: str) -> Call:
        """A phone at `from_` calls the incoming number `to`: Twilio answers and fetches the number's TwiML. The
        caller follows `from_`'s number script for its keys (one entry per <Gather>) and when it hangs up."""
        number = self.incoming.get(to)
        if number is None:
            raise HTTPException(404, f"{to} is not an incoming number of any account (PUT /sandbox/twilio/incoming/...)")
        if not E164_RE.match(from_):
            raise HTTPException(422, f"from: {from_} is not an E.164 number")
        call = Call(account_sid=number.account_sid, to=to, from_=from_, script=self.script_for(from_),
                    direction="inbound", url=number.url, method=number.method,
                    status_callback=number.status_callback, status_callback_method=number.status_callback_method)
        self._remember(call)
        call.log("status", status="queued", behaviour="caller")
        self.counters["inbound"] += 1
        call.task = self._spawn(self._run(call), name=f"twilio-call-{call.sid}")
        log.info("sandbox.twilio.call_in", sid=call.sid, to=to)
        self.notify()
        return call

    # -- the control API (people at the numbers) --

    def answer(self, call: Call) -> None:
        if call.status not in ("queued", "ringing"):
            raise HTTPException(409, f"call {call.sid} is {call.status}, not ringing")
        call.actions.append("answer")
        call.poke()

    def reject(self, call: Call) -> None:
        if call.status not in ("queued", "ringing"):
            raise HTTPException(409, f"call {call.sid} is {call.status}, not ringing")
        call.actions.append("reject")
        call.poke()

    def press(self, call: Call, digits: str) -> None:
        if call.status != "in-progress":
            raise HTTPException(409, f"call {call.sid} is {call.status}, not in progress")
        call.keys += digits
        call.log("press", digits=digits, source="manual", during_gather=call.gathering)
        call.poke()
        self.notify()

    def hang_up(self, call: Call, *, by: str) -> None:
        """End a call from outside the TwiML: cancel it while it rings, or hang up a live one."""
        if call.final:
            return
        if call.status in ("queued", "ringing"):
            call.actions.append("cancel" if by == "api" else "reject")
            call.poke()
        elif call.direction in ("outbound-api", "inbound"):
            self._interrupt(call, Hangup(by))
        else:
            call.actions.append("hangup")  # a dialled leg: its bridge ends
            call.poke()

    def _interrupt(self, call: Call, step: Step) -> None:
        if call.final or isinstance(call.interrupt, Hangup):
            return  # a hang-up already on its way wins
        call.interrupt = step
        if call.doc_task is not None and not call.doc_task.done():
            call.doc_task.cancel()
        call.poke()

    # -- bookkeeping --

    def _spawn(self, coro: Any, *, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _remember(self, call: Call) -> None:
        self.calls[call.sid] = call
        if len(self.calls) > MAX_KEPT_CALLS:
            for sid in [sid for sid, c in self.calls.items() if c.done][: len(self.calls) - MAX_KEPT_CALLS]:
                del self.calls[sid]

    def _set_status(self, call: Call, status: str) -> None:
        call.status = status
        call.log("status", status=status)
        self.notify()

    def _end(self, call: Call, status: str, *, by: str) -> None:
        """The call's final status; the `completed` status callback goes out with it."""
        if call.final:
            return
        now = time.time()
        call.ended_at = now
        call.ended_by = by
        if call.answered_at is not None:
            call.duration_s = math.ceil(round((now - call.answered_at) / (self.time_scale or 1.0), 3))
        else:
            call.duration_s = 0
        call.status = status
        call.gathering = False
        call.log("status", status=status, by=by, duration=call.duration_s)
        if call.direction == "outbound-api":
            self.outcomes[status] += 1
        self._callback(call, "completed")
        log.info("sandbox.twilio.call_ended", sid=call.sid, status=status, by=by)
        self.notify()

    # -- talking to the application --

    def http(self) -> httpx.AsyncClient:
        if self._http is None or self._http.is_closed:
            self._http = httpx.AsyncClient(timeout=self.webhook_timeout_s, follow_redirects=False)
        return self._http

    def _call_params(self, call: Call, call_status: str) -> dict[str, str]:
        params = {"AccountSid": call.account_sid, "ApiVersion": API_VERSION, "CallSid": call.sid,
                  "CallStatus": call_status, "Called": call.to, "Caller": call.from_, "Direction": call.direction,
                  "From": call.from_, "To": call.to}
        if call.parent_call_sid:
            params["ParentCallSid"] = call.parent_call_sid
        if call.answered_by:
            params["AnsweredBy"] = call.answered_by
        return params

    async def _request(self, call: Call, url: str, method: str, params: dict[str, str]) -> httpx.Response:
        """One signed request to the application, with Twilio's headers."""
        account = self.accounts.get(call.account_sid)
        validator = RequestValidator(account.token if account else DEFAULT_AUTH_TOKEN)
        headers = {"User-Agent": "TwilioProxy/1.1", "Accept": "*/*", "Cache-Control": "max-age=259200",
                   "X-Home-Region": "us1", "I-Twilio-Idempotency-Token": str(uuid.uuid4())}
        if method == "GET":
            full_url = with_query(url, params)
            headers["X-Twilio-Signature"] = validator.compute_signature(full_url, {})
            return await self.http().get(full_url, headers=headers)
        headers["X-Twilio-Signature"] = validator.compute_signature(url, params)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return await self.http().post(url, content=urlencode(params).encode(), headers=headers)

    def _callback(self, call: Call, event: str) -> None:
        """Queue a status callback for a call-progress event (sent in order by the call's sender)."""
        if self._closing or not call.status_callback or (event != "completed"
                                                          and event not in call.status_callback_events):
            return
        call_status = {"initiated": "initiated", "ringing": "ringing", "answered": "in-progress"}.get(event, call.status)
        params = self._call_params(call, call_status)
        params.update({"Timestamp": rfc2822(time.time()) or "", "SequenceNumber": str(call.sequence),
                       "CallbackSource": "call-progress-events"})
        if event == "completed":
            duration = call.duration_s or 0
            params["CallDuration"] = str(duration)
            params["Duration"] = str(math.ceil(duration / 60))  # billed minutes
        call.sequence += 1
        call.outbox.put_nowait(params)
        if call.sender is None:
            call.sender = self._spawn(self._send_callbacks(call), name=f"twilio-callbacks-{call.sid}")

    async def _send_callbacks(self, call: Call) -> None:
        while (params := await call.outbox.get()) is not None:
            url, method = call.status_callback or "", call.status_callback_method
            event = call.log("status_callback", url=url, method=method, call_status=params["CallStatus"],
                             sequence_number=int(params["SequenceNumber"]), http_status=None)
            try:
                response = await self._request(call, url, method, params)
            except httpx.HTTPError as exc:
                event["error"] = f"{type(exc).__name__}: {exc}"
                self.counters["status_callbacks_failed"] += 1
                log.info("sandbox.twilio.callback_failed", sid=call.sid, url=url, error=event["error"])
            else:
                event["http_status"] = response.status_code
                self.counters["status_callbacks_sent"] += 1
                if not response.is_success:
                    self.counters["status_callbacks_failed"] += 1
            self.notify()

    async def _flush_callbacks(self, call: Call) -> None:
        if call.sender is not None:
            call.outbox.put_nowait(None)
            await call.sender

    async def _fetch(self, call: Call, step: Fetch) -> Document:
        """Fetch TwiML from the application; TwimlError when it cannot be had."""
        params = {**self._call_params(call, call.status), **step.params}
        event = call.log("twiml_fetch", url=step.url, method=step.method, reason=step.reason, http_status=None,
                         params={k: v for k, v in step.params.items()})
        self.counters["twiml_fetches"] += 1
        self.notify()
        try:
            response = await self._request(call, step.url, step.method, params)
        except httpx.HTTPError as exc:
            event["error"] = f"{type(exc).__name__}: {exc}"
            raise TwimlError(11200, f"HTTP retrieval failure: {event['error']}") from None
        event["http_status"] = response.status_code
        if not response.is_success:
            raise TwimlError(11200, f"HTTP retrieval failure: {step.url} answered {response.status_code}")
        return Document(parse_twiml(response.text), step.url)

    # -- the simulation --

    async def _run(self, call: Call) -> None:
        """A call created through the REST API, from queued to its final status and last callback."""
        try:
            async with self._slots:
                placed = self._pick_up(call) if call.direction == "inbound" else await self._place(
                    call, timeout_s=call.timeout_s)
                if placed:
                    await self._converse(call)
        except asyncio.CancelledError:
            self._end(call, "completed" if call.status == "in-progress" else "canceled", by="sandbox")
            raise
        except Exception as exc:  # a fault of the sandbox itself: end the call rather than leave it hanging
            log.exception("sandbox.twilio.call_crashed", sid=call.sid)
            call.log("error", code=None, message=f"sandbox fault: {type(exc).__name__}: {exc}")
            self._end(call, "completed" if call.status == "in-progress" else "failed", by="sandbox")
        finally:
            if not self._closing:
                await self._flush_callbacks(call)
            call.done = True
            self.notify()

    async def _wait_action(self, call: Call, phone_s: float, accept: set[str]) -> str | None:
        """Wait up to `phone_s` (scaled) for one of these actions on the call; None when the time runs out."""
        deadline = time.monotonic() + self.scaled(phone_s)
        while True:
            while call.actions:
                action = call.actions.popleft()
                if action in accept:
                    return action
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await call.wait_poke(remaining)

    def _pick_up(self, call: Call) -> bool:
        """A call in: Twilio answers it at once and runs the number's TwiML."""
        call.answered_at = time.time()
        self._set_status(call, "in-progress")
        call.log("answered", by="twilio", answered_by=None)
        return True

    async def _place(self, call: Call, *, timeout_s: float) -> bool:
        """Ring the number as its script says; True when someone (or something) answered."""
        if await self._wait_action(call, DIAL_DELAY_S, {"cancel"}):
            self._end(call, "canceled", by="api")
            return False
        call.log("status", status="initiated")
        self._callback(call, "initiated")
        behaviour = call.script.behaviour
        if behaviour in ("failed", "busy"):
            action = await self._wait_action(call, FAIL_AFTER_S if behaviour == "failed" else BUSY_AFTER_S,
                                             {"cancel"})
            self._end(call, "canceled" if action else behaviour, by="api" if action else "network")
            return False
        self._set_status(call, "ringing")
        self._callback(call, "ringing")
        picks_up = behaviour in ("answer", "machine") and call.script.ring_s <= timeout_s
        action = await self._wait_action(call, call.script.ring_s if picks_up else timeout_s,
                                         {"answer", "reject", "cancel"})
        if action == "cancel":
            self._end(call, "canceled", by="api")
            return False
        if action == "reject":
            self._end(call, "busy", by="callee")
            return False
        if action is None and not picks_up:
            self._end(call, "no-answer", by="network")
            return False
        call.answered_at = time.time()
        if call.machine_detection:
            if behaviour == "machine":
                call.answered_by = "machine_end_beep" if call.machine_detection == "DetectMessageEnd" else "machine_start"
            else:
                call.answered_by = "human"
        self._set_status(call, "in-progress")
        call.log("answered", by="page" if action == "answer" else "script", answered_by=call.answered_by)
        self._callback(call, "answered")
        return True

    async def _converse(self, call: Call) -> None:
        """The answered call: fetch and run TwiML documents until something hangs up."""
        timer = None
        if call.script.hangup_after_s is not None:
            timer = asyncio.get_running_loop().call_later(self.scaled(call.script.hangup_after_s), self._interrupt,
                                                          call, Hangup("callee"))
        try:
            step: Step
            if call.machine_detection:
                deadline = time.monotonic() + self.scaled(AMD_S)
                while call.interrupt is None and (remaining := deadline - time.monotonic()) > 0:
                    await call.wait_poke(remaining)
                call.log("machine_detection", answered_by=call.answered_by)
            step = Fetch(call.url, call.method, reason="answer") if call.url else Inline(call.twiml or "")
            documents = 0
            while not isinstance(step, Hangup):
                if call.interrupt is not None:
                    step, call.interrupt = call.interrupt, None
                    continue
                documents += 1
                if documents > MAX_DOCUMENTS_PER_CALL:
                    call.log("error", code=None, message=f"more than {MAX_DOCUMENTS_PER_CALL} TwiML documents")
                    step = Hangup("sandbox")
                    break
                call.doc_task = asyncio.create_task(self._document(call, step), name=f"twilio-twiml-{call.sid}")
                try:
                    await asyncio.wait({call.doc_task})
                except asyncio.CancelledError:
                    call.doc_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await call.doc_task
                    raise
                task, call.doc_task = call.doc_task, None
                if call.interrupt is not None:
                    step, call.interrupt = call.interrupt, None
                elif task.cancelled():
                    step = Hangup("sandbox")
                elif task.exception() is not None:
                    exc = task.exception()
                    log.error("sandbox.twilio.twiml_crashed", sid=call.sid, error=repr(exc))
                    call.log("error", code=None, message=f"sandbox fault: {type(exc).__name__}: {exc}")
                    step = Hangup("sandbox")
                else:
                    step = task.result()
            call.log("hangup", by=step.by)
            self._end(call, "completed", by=step.by)
        finally:
            if timer is not None:
                timer.cancel()

    async def _document(self, call: Call, step: Fetch | Inline) -> Step:
        """Fetch (or parse) one TwiML document and run it; an application error is spoken and hangs up."""
        try:
            if isinstance(step, Inline):
                document = Document(parse_twiml(step.twiml), None)
            else:
                try:
                    document = await self._fetch(call, step)
                except TwimlError as exc:
                    if step.reason != "answer" or not call.fallback_url:
                        raise
                    call.log("error", code=exc.code, message=exc.message)
                    document = await self._fetch(call, Fetch(call.fallback_url, call.fallback_method, {
                        "ErrorCode": str(exc.code), "ErrorUrl": step.url}, reason="fallback"))
            return await self._execute(call, document)
        except TwimlError as exc:
            call.log("error", code=exc.code, message=exc.message)
            call.log("say", text=APPLICATION_ERROR_SAY, voice=None, language="en-US", loop=1, source="twilio")
            self.counters["application_errors"] += 1
            return Hangup("error")

    def _resolve(self, document: Document, target: str | None) -> str:
        target = (target or "").strip()
        if not target:
            if document.url is None:
                raise TwimlError(11100, "Invalid URL format: no action and no document URL to post to")
            return document.url
        resolved = urljoin(document.url, target) if document.url else target
        if not is_http_url(resolved):
            raise TwimlError(11100, f"Invalid URL format: {target}")
        return resolved

    async def _execute(self, call: Call, document: Document) -> Step:
        for verb in document.root:
            tag = verb.tag
            if tag == "Say":
                self._say(call, verb)
            elif tag == "Play":
                self._play(call, verb)
            elif tag == "Pause":
                length = _int_attr(verb, "length", 1)
                call.log("pause", length_s=length)
                await asyncio.sleep(self.scaled(length))
            elif tag == "Gather":
                step = await self._gather(call, verb, document)
                if step is not None:
                    return step
            elif tag == "Dial":
                step = await self._dial(call, verb, document)
                if step is not None:
                    return step
            elif tag == "Redirect":
                url = self._resolve(document, verb.text)
                call.log("redirect", url=url)
                return Fetch(url, _method(verb.get("method")), reason="redirect")
            elif tag == "Hangup":
                return Hangup("twiml")
            elif tag == "Reject":
                call.log("reject", reason=verb.get("reason", "rejected"))
                return Hangup("twiml")
            else:
                call.log("unsupported", verb=tag)
        return Hangup("end_of_twiml")

    def _say(self, call: Call, verb: ElementTree.Element, *, in_gather: bool = False) -> None:
        text = " ".join("".join(verb.itertext()).split())
        call.log("say", text=text, voice=verb.get("voice"), language=verb.get("language", "en-US"),
                 loop=_int_attr(verb, "loop", 1), in_gather=in_gather)
        self.notify()

    def _play(self, call: Call, verb: ElementTree.Element, *, in_gather: bool = False) -> None:
        call.log("play", url=(verb.text or "").strip(), digits=verb.get("digits"), loop=_int_attr(verb, "loop", 1),
                 in_gather=in_gather)

    async def _keys_within(self, call: Call, phone_s: float) -> bool:
        """Wait up to `phone_s` (scaled) for a key press; True as soon as one is waiting."""
        deadline = time.monotonic() + self.scaled(phone_s)
        while not call.keys:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await call.wait_poke(remaining)
        return True

    async def _gather(self, call: Call, verb: ElementTree.Element, document: Document) -> Step | None:
        """<Gather>: play the nested prompts, take the callee's keys, post them to the action (or move on)."""
        num_digits = _int_attr(verb, "numDigits", 0) or None
        timeout = _int_attr(verb, "timeout", DEFAULT_GATHER_TIMEOUT_S)
        finish_on_key = verb.get("finishOnKey", "#")
        action = self._resolve(document, verb.get("action"))
        method = _method(verb.get("method"))
        dtmf = "dtmf" in verb.get("input", "dtmf").lower().split()
        call.gathering = True
        call.log("gather", num_digits=num_digits, timeout_s=timeout, finish_on_key=finish_on_key, action=action,
                 method=method, input=verb.get("input", "dtmf"))
        self.notify()
        collected, finished = "", ""
        try:
            for child in verb:
                if call.keys and dtmf:
                    break  # a key press interrupts the prompt (barge-in)
                if child.tag == "Say":
                    self._say(call, child, in_gather=True)
                elif child.tag == "Play":
                    self._play(call, child, in_gather=True)
                elif child.tag == "Pause":
                    call.log("pause", length_s=_int_attr(child, "length", 1), in_gather=True)
                    await self._keys_within(call, _int_attr(child, "length", 1))
                else:
                    call.log("unsupported", verb=f"Gather/{child.tag}")
            if dtmf and call.digits_left:
                scripted = call.digits_left.pop(0)
                if scripted:
                    call.keys += scripted
                    call.log("press", digits=scripted, source="script", during_gather=True)
            while dtmf:
                while call.keys:
                    key, call.keys = call.keys[0], call.keys[1:]
                    if finish_on_key and key == finish_on_key:
                        finished = key
                        break
                    collected += key
                    if num_digits and len(collected) >= num_digits:
                        break
                else:
                    if await self._keys_within(call, timeout):
                        continue  # the timeout runs again from each key, as on Twilio
                break
            if not dtmf:
                await asyncio.sleep(self.scaled(timeout))
            call.keys = ""  # keys pressed beyond what the Gather took are dropped
        finally:
            call.gathering = False
        if collected or _flag(verb.get("actionOnEmptyResult")):
            call.log("digits", digits=collected, finished_on_key=finished, action=action)
            self.notify()
            return Fetch(action, method, {"Digits": collected, "FinishedOnKey": finished}, reason="gather")
        call.log("gather_timeout", timeout_s=timeout)
        self.notify()
        return None

    async def _dial(self, call: Call, verb: ElementTree.Element, document: Document) -> Step | None:
        """<Dial>: ring each number (at once; the first to answer is bridged), then post the outcome."""
        timeout = _int_attr(verb, "timeout", DEFAULT_DIAL_TIMEOUT_S)
        time_limit = _int_attr(verb, "timeLimit", DEFAULT_DIAL_TIME_LIMIT_S)
        caller_id = verb.get("callerId") or call.from_
        action = self._resolve(document, verb.get("action")) if verb.get("action") else None
        targets: list[tuple[str, dict[str, str]]] = []
        for noun in verb:
            if noun.tag == "Number":
                targets.append(((noun.text or "").strip(), dict(noun.attrib)))
            else:
                call.log("unsupported", verb=f"Dial/{noun.tag}")
        if not len(verb) and (verb.text or "").strip():
            targets.append(((verb.text or "").strip(), {}))
        legs = [self._new_leg(call, number, attrs, caller_id, timeout) for number, attrs in targets]
        call.log("dial", numbers=[leg.to for leg in legs], leg_sids=[leg.sid for leg in legs], timeout_s=timeout,
                 action=action)
        self.notify()
        winner: Call | None = None
        rings = {asyncio.create_task(self._place(leg, timeout_s=timeout)): leg for leg in legs}
        try:
            pending = set(rings)
            while pending and winner is None:
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    if task.result() and winner is None:
                        winner = rings[task]
            for leg in legs:
                if leg is not winner and not leg.final:
                    self.hang_up(leg, by="api")  # Twilio cancels the others once one answers
            if pending:
                await asyncio.wait(pending)
            for task, leg in rings.items():
                if leg is not winner and task.result():
                    self._end(leg, "completed", by="caller")  # answered at the same moment as the winner
            if winner is not None:
                call.bridged_to = winner.sid
                winner.bridged_to = call.sid
                winner.log("bridged", to=call.sid)
                call.log("bridged", to=winner.sid)
                self.notify()
                talk_s = winner.script.hangup_after_s
                talk_s = min(DEFAULT_DIAL_TALK_S if talk_s is None else talk_s, time_limit)
                hung_up = await self._wait_action(winner, talk_s, {"hangup"})
                winner.log("hangup", by="callee" if hung_up or talk_s < time_limit else "time_limit")
                self._end(winner, "completed", by="callee")
        finally:
            for task in rings:
                task.cancel()
            for leg in legs:
                if not leg.final:
                    leg.log("hangup", by="caller")
                    self._end(leg, "completed" if leg.status == "in-progress" else "canceled", by="caller")
                self._spawn(self._finish_leg(leg), name=f"twilio-leg-{leg.sid}")
            call.bridged_to = None
        if winner is not None:
            dial_status = "completed"
        else:
            statuses = [leg.status for leg in legs]
            dial_status = next((s for s in ("no-answer", "busy", "canceled") if s in statuses), "failed")
        dialled = winner or (legs[0] if legs else None)
        result = {"DialCallStatus": dial_status}
        if dialled is not None:
            result["DialCallSid"] = dialled.sid
        if winner is not None:
            result["DialCallDuration"] = str(winner.duration_s or 0)
        call.log("dial_ended", dial_call_status=dial_status, dial_call_sid=result.get("DialCallSid"),
                 duration=winner.duration_s if winner else None)
        self.notify()
        if action is None:
            return None
        return Fetch(action, _method(verb.get("method")), result, reason="dial_action")

    def _new_leg(self, parent: Call, number: str, attrs: dict[str, str], caller_id: str, timeout: int) -> Call:
        script = self.script_for(number) if E164_RE.match(number) else NumberScript(behaviour="failed")
        events = frozenset(e for e in (attrs.get("statusCallbackEvent") or "").lower().split() if e in CALLBACK_EVENTS)
        leg = Call(account_sid=parent.account_sid, to=number, from_=caller_id, script=script,
                   direction="outbound-dial", parent_call_sid=parent.sid,
                   status_callback=attrs.get("statusCallback") or None,
                   status_callback_method=_method(attrs.get("statusCallbackMethod")), status_callback_events=events,
                   timeout_s=timeout)
        parent.legs.append(leg.sid)
        self._remember(leg)
        leg.log("status", status="queued", behaviour=script.behaviour)
        self.counters["dial_legs"] += 1
        return leg

    async def _finish_leg(self, leg: Call) -> None:
        try:
            if not self._closing:
                await self._flush_callbacks(leg)
        finally:
            leg.done = True
            self.notify()

    # -- lifecycle --

    async def reset(self) -> None:
        await self._stop_calls()
        self._reset_state()
        self.notify()

    async def aclose(self) -> None:
        await self._stop_calls()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _stop_calls(self) -> None:
        self._closing = True
        try:
            tasks = [task for task in self._tasks if not task.done()]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            self._closing = False

    # -- figures --

    def stats(self, account_sid: str | None = None) -> dict[str, Any]:
        accounts = [self.accounts[account_sid]] if account_sid in self.accounts else list(self.accounts.values())
        live = sum(1 for c in self.calls.values() if not c.final and c.direction == "outbound-api")
        return {
            "created": sum(a.created for a in accounts),
            "rejected_429": sum(a.rejected_429 for a in accounts),
            # The most calls any one account had accepted within a sliding second (compare with calls_per_s).
            "max_calls_in_any_second": max((a.max_calls_in_any_second for a in accounts), default=0),
            "completed": self.outcomes["completed"], "busy": self.outcomes["busy"],
            "no_answer": self.outcomes["no-answer"], "failed": self.outcomes["failed"],
            "canceled": self.outcomes["canceled"], "live": live, "dial_legs": self.counters["dial_legs"],
            "twiml_fetches": self.counters["twiml_fetches"],
            "application_errors": self.counters["application_errors"],
            "api_updates": self.counters["api_updates"],
            "status_callbacks_sent": self.counters["status_callbacks_sent"],
            "status_callbacks_failed": self.counters["status_callbacks_failed"],
            "calls_per_s": self.calls_per_s, "time_scale": self.time_scale,
            "accounts": {a.sid: a.public(self.calls_per_s) for a in accounts},
        }


def _method(value: str | None) -> str:
    """Twilio's webhook methods are GET and POST (POST by default)."""
    return "GET" if (value or "").strip().upper() == "GET" else "POST"


def _int_attr(element: ElementTree.Element, name: str, default: int) -> int:
    try:
        return int(float(element.get(name, default)))
    except (TypeError, ValueError):
        return default


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def parse_twiml(text: str) -> ElementTree.Element:
    """A TwiML document's root `<Response>`, or TwimlError 12100 (Document parse failure)."""
    try:
        root = ElementTree.fromstring(text.strip())
    except ElementTree.ParseError as exc:
        raise TwimlError(12100, f"Document parse failure: {exc}") from None
    if root.tag != "Response":
        raise TwimlError(12100, f"Document parse failure: the root element is <{root.tag}>, not <Response>")
    return root


# --- routes ------------------------------------------------------------------------------------------------------


class NumberIn(BaseModel):
    behaviour: Literal["answer", "busy", "no-answer", "failed", "machine", "manual"] = Field(
        "answer", validation_alias=AliasChoices("behaviour", "behavior"))
    digits: list[str] = Field(default_factory=list, max_length=100,
                              description='pressed one entry per <Gather>, in order; "" stays silent at that Gather')
    ring_s: float = Field(DEFAULT_RING_S, ge=0, le=MAX_TIMEOUT_S, description="rings this long before answering")
    hangup_after_s: float | None = Field(None, ge=0, description="hangs up this long after answering")


class IncomingIn(BaseModel):
    url: str = Field(max_length=2000, description="the number's voice webhook: where a call to it fetches TwiML")
    method: str = "POST"
    account_sid: str | None = Field(None, description="the account that owns the number (default: the sandbox's)")
    status_callback: str | None = Field(None, max_length=2000, description="told when each call to it ends")
    status_callback_method: str = "POST"


class DialInIn(BaseModel):
    from_: str = Field(alias="from", description="the calling phone (E.164)")
    to: str = Field(description="one of the incoming numbers")


class PressIn(BaseModel):
    digits: str = Field(min_length=1, max_length=32, pattern=r"^[0-9*#]+$")


class LimitsIn(BaseModel):
    calls_per_s: int = Field(ge=0, description="calls created per second per account; 0 = no limit")
    account_sid: str | None = Field(None, description="only this account (default: every account)")


class SettingsIn(BaseModel):
    time_scale: float | None = Field(None, gt=0, le=100, description="every wait is multiplied by this")
    default_behaviour: Literal["answer", "busy", "no-answer", "failed", "machine", "manual"] | None = Field(
        None, description="how numbers without a script behave")


class AccountIn(BaseModel):
    sid: str = Field(pattern=ACCOUNT_SID_RE.pattern)
    token: str = Field(min_length=1, max_length=128)
    calls_per_s: int | None = Field(None, ge=0)


def _number(raw: str) -> str:
    # "+" in a query string decodes to a space; a number typed into a URL by hand arrives that way.
    return raw.strip().replace(" ", "+") if raw.startswith(" ") else raw.strip()


# --- faults (crash drills, tests) -------------------------------------------------------------------------------
# Twilio answers 429 with code 20429 when an account sends more requests than its concurrency allows, and 5xx
# (20500, 20503) when it is in trouble. A fault plan makes every authenticated REST request (create, fetch,
# list, update) answer so for a window, whatever the calls-per-second limit says; the calls already running
# carry on (the phone network is not the REST API).

FAULT_ERRORS = {429: (20429, "Too Many Requests"), 500: (20500, "Internal Server Error"),
                502: (20502, "Bad Gateway"), 503: (20503, "Service Unavailable")}


@dataclass
class FaultPlan:
    status: int = 0
    until: float = 0.0  # time.monotonic() when the burst ends
    answered: Counter[int] = field(default_factory=Counter)  # faulted answers, by HTTP status

    def check(self) -> None:
        if self.status and time.monotonic() < self.until:
            self.answered[self.status] += 1
            code, message = FAULT_ERRORS[self.status]
            raise TwilioError(self.status, code, message)

    def public(self) -> dict[str, Any]:
        return {"status": self.status, "left_s": round(max(0.0, self.until - time.monotonic()), 3),
                "answered": {str(k): v for k, v in sorted(self.answered.items())}}


class FaultIn(BaseModel):
    status: Literal[429, 500, 502, 503] = Field(description="the answer: 429 (code 20429) or a 5xx (205xx)")
    window_s: float = Field(ge=0, le=3600, description="for this long from now (0 ends a burst)")


def fault_routes(router: APIRouter, sandbox: TwilioSandbox, prefix: str) -> None:
    @router.get(prefix + "/faults", tags=["twilio sandbox control"])
    async def get_faults() -> dict[str, Any]:
        """The burst in force (if any) and how many REST answers each injected status made."""
        return sandbox.faults.public()

    @router.post(prefix + "/faults", tags=["twilio sandbox control"])
    async def set_faults(body: FaultIn) -> dict[str, Any]:
        """A burst: every authenticated REST request answers `status` for `window_s` seconds."""
        sandbox.faults.status = body.status
        sandbox.faults.until = time.monotonic() + body.window_s
        return sandbox.faults.public()


def twilio_router(sandbox: TwilioSandbox) -> APIRouter:
    """The REST API and the control API of one sandbox, as one router."""
    router = APIRouter()
    rest = f"/{API_VERSION}/Accounts/{{account_sid}}"
    rest_tags = ["twilio rest api"]

    async def form_items(request: Request) -> list[tuple[str, str]]:
        if request.method == "GET":
            return list(request.query_params.multi_items())
        form = await request.form()
        return [(k, v) for k, v in form.multi_items() if isinstance(v, str)]

    def answer(body: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(body, status_code=status)

    @router.post(rest + "/Calls.json", tags=rest_tags, status_code=201)
    async def create_call(account_sid: str, request: Request) -> JSONResponse:
        """Create (place) a call: Twilio's call resource with status `queued`, 201."""
        try:
            account = sandbox.authenticate(account_sid, request.headers.get("authorization"))
            call = sandbox.create_call(account, await form_items(request))
        except TwilioError as exc:
            return exc.response()
        return answer(call.resource(), 201)

    @router.get(rest + "/Calls.json", tags=rest_tags)
    async def list_calls(account_sid: str, request: Request) -> JSONResponse:
        """The account's calls, newest first (filters To, From, Status, ParentCallSid; PageSize, Page)."""
        try:
            account = sandbox.authenticate(account_sid, request.headers.get("authorization"))
        except TwilioError as exc:
            return exc.response()
        query = request.query_params
        calls = [c for c in reversed(sandbox.calls.values()) if c.account_sid == account.sid
                 and all(query.get(name) in (None, value) for name, value in (
                     ("To", c.to), ("From", c.from_), ("Status", c.status), ("ParentCallSid", c.parent_call_sid)))]
        try:
            page_size = min(max(int(query.get("PageSize", 50)), 1), 1000)
            page = max(int(query.get("Page", 0)), 0)
        except ValueError:
            return TwilioError(400, 20001, "Invalid PageSize or Page").response()
        chunk = calls[page * page_size:(page + 1) * page_size]
        uri = f"/{API_VERSION}/Accounts/{account.sid}/Calls.json"
        more = (page + 1) * page_size < len(calls)
        return answer({"calls": [c.resource() for c in chunk], "start": page * page_size,
                       "end": page * page_size + max(len(chunk) - 1, 0), "page": page, "page_size": page_size,
                       "uri": f"{uri}?PageSize={page_size}&Page={page}",
                       "first_page_uri": f"{uri}?PageSize={page_size}&Page=0",
                       "previous_page_uri": f"{uri}?PageSize={page_size}&Page={page - 1}" if page else None,
                       "next_page_uri": f"{uri}?PageSize={page_size}&Page={page + 1}" if more else None})

    @router.get(rest + "/Calls/{call_sid}.json", tags=rest_tags)
    async def fetch_call(account_sid: str, call_sid: str, request: Request) -> JSONResponse:
        """One call resource (its status as it stands now)."""
        try:
            account = sandbox.authenticate(account_sid, request.headers.get("authorization"))
            call = sandbox.call_of(account, call_sid, request.url.path)
        except TwilioError as exc:
            return exc.response()
        return answer(call.resource())

    @router.post(rest + "/Calls/{call_sid}.json", tags=rest_tags)
    async def update_call(account_sid: str, call_sid: str, request: Request) -> JSONResponse:
        """Update a call: Status=completed|canceled ends it; Url or Twiml redirects it while live."""
        try:
            account = sandbox.authenticate(account_sid, request.headers.get("authorization"))
            call = sandbox.call_of(account, call_sid, request.url.path)
            sandbox.update_call(call, await form_items(request))
        except TwilioError as exc:
            return exc.response()
        return answer(call.resource())

    @router.get(f"/{API_VERSION}/Accounts/{{account_sid}}.json", tags=rest_tags)
    async def fetch_account(account_sid: str, request: Request) -> JSONResponse:
        """The account resource (what a credentials check fetches)."""
        try:
            account = sandbox.authenticate(account_sid, request.headers.get("authorization"))
        except TwilioError as exc:
            return exc.response()
        uri = f"/{API_VERSION}/Accounts/{account.sid}"
        return answer({"auth_token": account.token, "date_created": rfc2822(account.created_at),
                       "date_updated": rfc2822(account.created_at), "friendly_name": "Shouhu sandbox",
                       "owner_account_sid": account.sid, "sid": account.sid, "status": "active",
                       "subresource_uris": {"calls": f"{uri}/Calls.json"}, "type": "Full", "uri": uri + ".json"})

    prefix = "/sandbox/twilio"
    tags = ["twilio sandbox control"]
    fault_routes(router, sandbox, prefix)

    def find(sid: str) -> Call:
        call = sandbox.calls.get(sid)
        if call is None:
            raise HTTPException(404, f"no call {sid}")
        return call

    async def settled(call: Call, before: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """Answer once the action took effect (the status moved on), so a press right after an answer is safe."""
        deadline = time.monotonic() + timeout_s
        while call.status == before and (remaining := deadline - time.monotonic()) > 0:
            await sandbox.wait_change(remaining)
        return {"sid": call.sid, "accepted": True, "status": call.status}

    def matches(call: Call, statuses: set[str]) -> bool:
        if not statuses:
            return True
        if "final" in statuses and call.final and call.done:
            return True
        if call.status not in statuses:
            return False
        return call.done or not call.final  # a final status counts once its last callback has been answered

    @router.put(prefix + "/numbers/{number}", tags=tags)
    async def script_number(number: str, body: NumberIn) -> dict[str, Any]:
        """How the person at this number behaves on the next calls to it."""
        for entry in body.digits:
            if not DIGITS_RE.match(entry):
                raise HTTPException(422, f"digits entries are keys 0-9 * #, or '' for silence: {entry!r}")
        script = NumberScript(body.behaviour, list(body.digits), body.ring_s, body.hangup_after_s)
        sandbox.numbers[_number(number)] = script
        sandbox.notify()
        return {"number": _number(number), **script.public()}

    @router.get(prefix + "/numbers", tags=tags)
    async def list_numbers() -> dict[str, Any]:
        """Every scripted number, and how unscripted ones behave."""
        return {"default_behaviour": sandbox.default_behaviour,
                "numbers": [{"number": n, **s.public()} for n, s in sandbox.numbers.items()]}

    @router.delete(prefix + "/numbers/{number}", tags=tags)
    async def forget_number(number: str) -> dict[str, bool]:
        """The number behaves as unscripted numbers do again."""
        return {"removed": sandbox.numbers.pop(_number(number), None) is not None}

    @router.put(prefix + "/incoming/{number}", tags=tags)
    async def set_incoming(number: str, body: IncomingIn) -> dict[str, Any]:
        """One of the account's numbers takes calls: a call to it fetches TwiML from `url` (its voice webhook)."""
        if not is_http_url(body.url) or (body.status_callback and not is_http_url(body.status_callback)):
            raise HTTPException(422, "url and status_callback: http(s) URLs")
        e164 = _number(number)
        if not E164_RE.match(e164):
            raise HTTPException(422, f"{e164} is not an E.164 number")
        sid = body.account_sid or DEFAULT_ACCOUNT_SID
        if sid not in sandbox.accounts:
            raise HTTPException(404, f"no account {sid}")
        sandbox.incoming[e164] = IncomingNumber(e164, body.url, _method(body.method), sid, body.status_callback,
                                                _method(body.status_callback_method))
        return sandbox.incoming[e164].public()

    @router.get(prefix + "/incoming", tags=tags)
    async def list_incoming() -> dict[str, Any]:
        """The numbers that take calls, and where each sends them."""
        return {"numbers": [n.public() for n in sandbox.incoming.values()]}

    @router.post(prefix + "/dial-in", tags=tags)
    async def dial_in(body: DialInIn) -> dict[str, Any]:
        """A phone calls one of the incoming numbers (a desk phone dials the seat line); answers with the call.

        Then, as with any call: `press` keys, watch `/calls/{sid}` (every <Say> is on its timeline), `hangup`.
        """
        call = sandbox.dial_in(_number(body.from_), _number(body.to))
        return call.public()

    @router.get(prefix + "/calls", tags=tags)
    async def list_calls_control(
        to: str | None = Query(None, description="only calls to this number"),
        from_: str | None = Query(None, alias="from", description="only calls from this number"),
        status: str | None = Query(None, description="comma-separated statuses; 'final' = any final status"),
        since: float | None = Query(None, description="only calls created after this unix time"),
        parent: str | None = Query(None, description="only the legs a <Dial> of this call placed"),
        wait: float = Query(0, ge=0, le=120, description="wait up to this many seconds for a matching call"),
        limit: int = Query(MAX_KEPT_CALLS, ge=1, le=MAX_KEPT_CALLS, description="at most the newest N"),
    ) -> dict[str, Any]:
        """Calls in creation order with their timelines; with `wait`, answers as soon as one matches.

        A final status (completed, busy, no-answer, failed, canceled) matches only once the call's last status
        callback has been answered, so a test that waits for it can check the application's state at once.
        """
        statuses = {s.strip() for s in (status or "").split(",") if s.strip()}
        number_to = _number(to) if to else None
        number_from = _number(from_) if from_ else None

        def matching() -> list[Call]:
            return [c for c in sandbox.calls.values()
                    if (number_to is None or c.to == number_to) and (number_from is None or c.from_ == number_from)
                    and (since is None or c.created_at > since) and (parent is None or c.parent_call_sid == parent)
                    and matches(c, statuses)]

        deadline = time.monotonic() + wait
        found = matching()
        while not found and (remaining := deadline - time.monotonic()) > 0:
            await sandbox.wait_change(remaining)
            found = matching()
        return {"calls": [c.public() for c in found[-limit:]]}

    @router.get(prefix + "/calls/{sid}", tags=tags)
    async def get_call(
        sid: str,
        status: str | None = Query(None, description="wait for one of these statuses (comma-separated, or 'final')"),
        wait: float = Query(0, ge=0, le=120),
    ) -> dict[str, Any]:
        """One call and its timeline; with `status` and `wait`, answers once it gets there."""
        call = find(sid)
        statuses = {s.strip() for s in (status or "").split(",") if s.strip()}
        deadline = time.monotonic() + wait
        while not matches(call, statuses) and (remaining := deadline - time.monotonic()) > 0:
            await sandbox.wait_change(remaining)
        return call.public()

    @router.post(prefix + "/calls/{sid}/answer", tags=tags)
    async def answer_call(sid: str) -> dict[str, Any]:
        """The callee picks up a ringing call (a 'manual' number, or any other before it would); answers once live."""
        call = find(sid)
        before = call.status
        sandbox.answer(call)
        return await settled(call, before)

    @router.post(prefix + "/calls/{sid}/reject", tags=tags)
    async def reject_call(sid: str) -> dict[str, Any]:
        """The callee declines a ringing call: it ends as busy."""
        call = find(sid)
        before = call.status
        sandbox.reject(call)
        return await settled(call, before)

    @router.post(prefix + "/calls/{sid}/press", tags=tags)
    async def press_keys(sid: str, body: PressIn) -> dict[str, Any]:
        """The callee presses keys; the current (or next) <Gather> reads them."""
        call = find(sid)
        sandbox.press(call, body.digits)
        return {"sid": sid, "accepted": True, "gathering": call.gathering}

    @router.post(prefix + "/calls/{sid}/hangup", tags=tags)
    async def hang_up_call(sid: str) -> dict[str, Any]:
        """The callee hangs up (declines it if it is still ringing)."""
        call = find(sid)
        if call.final:
            raise HTTPException(409, f"call {sid} already ended ({call.status})")
        before = call.status
        sandbox.hang_up(call, by="callee")
        return await settled(call, before)

    @router.get(prefix + "/limits", tags=tags)
    async def get_limits() -> dict[str, Any]:
        return {"calls_per_s": sandbox.calls_per_s,
                "accounts": {a.sid: sandbox.limit_for(a) for a in sandbox.accounts.values()}}

    @router.post(prefix + "/limits", tags=tags)
    async def set_limits(body: LimitsIn) -> dict[str, Any]:
        """Calls per second per account (default: Twilio's 1; 0 = no limit), for all accounts or one."""
        if body.account_sid is None:
            sandbox.calls_per_s = body.calls_per_s
            for account in sandbox.accounts.values():
                account.calls_per_s = None
        else:
            account = sandbox.accounts.get(body.account_sid)
            if account is None:
                raise HTTPException(404, f"no account {body.account_sid}")
            account.calls_per_s = body.calls_per_s
        return await get_limits()

    @router.get(prefix + "/settings", tags=tags)
    async def get_settings() -> dict[str, Any]:
        return {"time_scale": sandbox.time_scale, "default_behaviour": sandbox.default_behaviour}

    @router.post(prefix + "/settings", tags=tags)
    async def set_settings(body: SettingsIn) -> dict[str, Any]:
        """time_scale multiplies every wait (ringing, Gather timeouts, Pause); default_behaviour for unscripted numbers."""
        if body.time_scale is not None:
            sandbox.time_scale = body.time_scale
        if body.default_behaviour is not None:
            sandbox.default_behaviour = body.default_behaviour
        sandbox.notify()
        return await get_settings()

    @router.get(prefix + "/stats", tags=tags)
    async def stats(account_sid: str | None = None) -> dict[str, Any]:
        """Counters: calls created, refused with 429, the most in any second, outcomes, callbacks."""
        return sandbox.stats(account_sid)

    @router.post(prefix + "/accounts", tags=tags)
    async def add_account(body: AccountIn) -> dict[str, Any]:
        """Another account (or a new token for an existing one)."""
        account = sandbox.add_account(body.sid, body.token, body.calls_per_s)
        return account.public(sandbox.calls_per_s)

    @router.post(prefix + "/reset", tags=tags)
    async def reset() -> dict[str, bool]:
        """Hang up everything and forget it: calls, number scripts, extra accounts, counters, limits, settings."""
        await sandbox.reset()
        return {"ok": True}

    return router
