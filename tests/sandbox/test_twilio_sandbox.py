"""The Twilio sandbox, driven by the real twilio client over real HTTP, calling back a real application.

Each test starts its own sandbox app and its own tiny TwiML application (FastAPI), each with uvicorn on a free
127.0.0.1 port, so tests share nothing and run in parallel. Calls are placed with `twilio.rest.Client` over
`AsyncTwilioHttpClient`, exactly as the callcenter does; the application checks every request's
`X-Twilio-Signature` with `RequestValidator`, as the callcenter must. Phone time runs 100 times faster
(time_scale 0.01), so a 60 s ring is 0.6 s.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from infra.sandbox.app import create_app
from infra.sandbox.twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, TwilioError, TwilioSandbox
from tests.conftest import serve

CONTROL = "/sandbox/twilio"
CITIZEN = "+8613800138000"
RELATIVE = "+8613900139000"
CALLER_ID = "+8657196110"
TIME_SCALE = 0.01

GATHER_TWIML = """<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Gather numDigits="1" action="/gather" timeout="5">
    <Say language="zh-CN">您好，这里是反诈中心。确认收到请按1。</Say>
  </Gather>
  <Say language="zh-CN">我们没有收到您的按键，再见。</Say>
</Response>"""


@dataclass
class Received:
    """One request the application received from the sandbox."""

    method: str
    path: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    signature_valid: bool


TwimlReply = str | Callable[[dict[str, str]], str]


@dataclass
class Application:
    """A TwiML application: answers each path with its TwiML, records every request and checks its signature."""

    token: str = DEFAULT_AUTH_TOKEN
    routes: dict[str, TwimlReply] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    base_url: str = ""

    def asgi(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST"])
        async def handle(request: Request) -> Response:
            params = {k: str(v) for k, v in (await request.form()).items()} if request.method == "POST" else {}
            url = str(request.url)
            valid = RequestValidator(self.token).validate(url, params, request.headers.get("X-Twilio-Signature", ""))
            if request.method == "GET":
                params = dict(request.query_params)
            self.received.append(Received(request.method, request.url.path, url, params, dict(request.headers),
                                          valid))
            reply = self.routes.get(request.url.path)
            if reply is None:
                return Response(status_code=204)  # status callbacks
            text = reply(params) if callable(reply) else reply
            return Response(text, media_type="text/xml")

        return app

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def url(self, path: str) -> str:
        return self.base_url + path


@dataclass
class Phone:
    base_url: str
    twilio: TwilioSandbox
    app: Application
    control: httpx.AsyncClient
    clients: list[Client] = field(default_factory=list)

    def client(self, sid: str = DEFAULT_ACCOUNT_SID, token: str = DEFAULT_AUTH_TOKEN) -> Client:
        """A twilio Client pointed at this sandbox, as the callcenter builds it (closed when the test ends)."""
        client = Client(sid, token, http_client=AsyncTwilioHttpClient())
        client.api.base_url = self.base_url
        self.clients.append(client)
        return client

    async def put(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.control.put(CONTROL + path, json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.control.post(CONTROL + path, json=body or {})
        assert response.status_code == 200, response.text
        return response.json()

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = await self.control.get(CONTROL + path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def ended(self, sid: str) -> dict[str, Any]:
        """The call once it reached a final status and its last status callback was answered."""
        call = await self.get(f"/calls/{sid}", status="final", wait=10)
        assert call["done"], call
        return call

    async def until(self, sid: str, condition: Callable[[dict[str, Any]], bool], timeout_s: float = 5) -> dict[str, Any]:
        """The call as soon as its timeline satisfies `condition` (for conditions the wait helper does not cover)."""
        deadline = time.monotonic() + timeout_s
        while not condition(call := await self.get(f"/calls/{sid}")):
            assert time.monotonic() < deadline, call
            await asyncio.sleep(0.01)
        return call

    async def dial(self, to: str = CITIZEN, **kwargs: Any) -> Any:
        kwargs.setdefault("url", self.app.url("/voice"))
        kwargs.setdefault("status_callback", self.app.url("/status"))
        return await self.client().calls.create_async(to=to, from_=CALLER_ID, **kwargs)


@pytest.fixture
async def phone() -> AsyncIterator[Phone]:
    twilio = TwilioSandbox(time_scale=TIME_SCALE)
    application = Application()
    async with serve(create_app(twilio=twilio)) as base_url, serve(application.asgi()) as app_url:
        application.base_url = app_url
        harness = Phone(base_url, twilio, application, httpx.AsyncClient(base_url=base_url, timeout=30))
        try:
            yield harness
        finally:
            for client in harness.clients:
                await client.http_client.close()
            await harness.control.aclose()


def _types(call: dict[str, Any]) -> list[str]:
    return [e["type"] for e in call["events"]]


def _said(call: dict[str, Any]) -> list[str]:
    return [e["text"] for e in call["events"] if e["type"] == "say"]


# --- the REST API ----------------------------------------------------------------------------------------------


async def test_create_returns_a_call_instance_and_fetch_reads_it(phone: Phone) -> None:
    """calls.create_async answers a CallInstance the client parses (CA sid, queued, outbound-api); fetch finds it."""
    phone.app.routes["/voice"] = "<Response><Say>你好</Say></Response>"
    before = time.time()
    call = await phone.dial()
    assert re.fullmatch(r"CA[0-9a-f]{32}", call.sid)
    assert (call.account_sid, call.to, call._from, call.status) == (DEFAULT_ACCOUNT_SID, CITIZEN, CALLER_ID, "queued")
    assert call.direction == "outbound-api" and call.api_version == "2010-04-01"
    assert call.date_created is not None and abs(call.date_created.timestamp() - before) < 5
    assert call.uri == f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Calls/{call.sid}.json"
    assert call.start_time is None and call.duration is None

    await phone.ended(call.sid)
    fetched = await phone.client().calls(call.sid).fetch_async()
    assert (fetched.sid, fetched.status) == (call.sid, "completed")
    assert fetched.start_time is not None and fetched.end_time is not None and int(fetched.duration or -1) >= 0
    listed = await phone.client().calls.list_async(to=CITIZEN)
    assert [c.sid for c in listed] == [call.sid]


async def test_wrong_token_is_401_authenticate(phone: Phone) -> None:
    """A wrong auth token (or an unknown account) is refused: TwilioRestException 401, code 20003."""
    for client in (phone.client(token="not-the-token"), phone.client(sid="AC" + "0" * 32)):
        with pytest.raises(TwilioRestException) as refused:
            await client.calls.create_async(to=CITIZEN, from_=CALLER_ID, url=phone.app.url("/voice"))
        assert (refused.value.status, refused.value.code) == (401, 20003)
        assert "Authenticate" in refused.value.msg
    assert (await phone.get("/stats"))["created"] == 0


async def test_invalid_to_and_missing_url_are_400_with_twilios_codes(phone: Phone) -> None:
    """A To that is not E.164 (or equals From) is 400/21211 naming the number; no Url and no Twiml is 400/21205."""
    client = phone.client()
    for bad in ("13800138000", "+86 138 0013 8000", "+8612", CALLER_ID):
        with pytest.raises(TwilioRestException) as refused:
            await client.calls.create_async(to=bad, from_=CALLER_ID, url=phone.app.url("/voice"))
        assert (refused.value.status, refused.value.code) == (400, 21211)
        assert f"The 'To' number {bad} is not a valid phone number." in refused.value.msg
    for url in ({}, {"url": "not a url"}):
        with pytest.raises(TwilioRestException) as refused:
            await client.calls.create_async(to=CITIZEN, from_=CALLER_ID, **url)
        assert (refused.value.status, refused.value.code) == (400, 21205)
    with pytest.raises(TwilioRestException) as missing:
        await client.calls("CA" + "0" * 32).fetch_async()
    assert (missing.value.status, missing.value.code) == (404, 20404)


async def test_calls_per_second_limit_is_429(phone: Phone) -> None:
    """Twilio's 1 call/s per account: a second call within the second is 429/20429; the limit is configurable."""
    phone.app.routes["/voice"] = "<Response><Hangup/></Response>"
    await phone.dial()
    with pytest.raises(TwilioRestException) as refused:
        await phone.dial()
    assert (refused.value.status, refused.value.code) == (429, 20429)
    stats = await phone.get("/stats")
    assert (stats["created"], stats["rejected_429"], stats["max_calls_in_any_second"]) == (1, 1, 1)

    assert (await phone.post("/limits", {"calls_per_s": 3}))["calls_per_s"] == 3
    await asyncio.sleep(1.05)  # let the first call leave the window
    for _ in range(3):
        await phone.dial()
    with pytest.raises(TwilioRestException):
        await phone.dial()
    stats = await phone.get("/stats")
    assert (stats["created"], stats["rejected_429"], stats["max_calls_in_any_second"]) == (4, 2, 3)


def test_a_client_pacing_exactly_at_the_limit_is_not_refused() -> None:
    """Calls paced at exactly the limit pass despite arrival jitter (< 50 ms); a real burst is refused."""
    now = [0.0]
    sandbox = TwilioSandbox(calls_per_s=2, clock=lambda: now[0])
    account = sandbox.accounts[DEFAULT_ACCOUNT_SID]
    # 0.5 s apart as sent; the first arrived 30 ms late (a new connection), another 40 ms early.
    for arrival in (0.03, 0.5, 1.0, 1.46, 2.0):
        now[0] = arrival
        sandbox.admit(account)
    assert (account.created, account.rejected_429, account.max_calls_in_any_second) == (5, 0, 2)
    now[0] = 2.2  # a third call within the same second
    with pytest.raises(TwilioError) as refused:
        sandbox.admit(account)
    assert (refused.value.status, refused.value.code, refused.value.message) == (429, 20429, "Too Many Requests")
    assert (account.created, account.rejected_429, account.max_calls_in_any_second) == (5, 1, 2)


async def test_accounts_can_be_added_and_sign_with_their_own_token(phone: Phone) -> None:
    """An account added through the control API places calls; its callbacks are signed with its own token."""
    sid, token = "AC" + "1b" * 16, "second-token"
    await phone.post("/accounts", {"sid": sid, "token": token})
    phone.app.token = token
    phone.app.routes["/voice"] = "<Response><Hangup/></Response>"
    call = await phone.client(sid, token).calls.create_async(to=CITIZEN, from_=CALLER_ID, url=phone.app.url("/voice"),
                                                             status_callback=phone.app.url("/status"))
    assert call.account_sid == sid
    await phone.ended(call.sid)
    assert phone.app.received and all(r.signature_valid for r in phone.app.received)
    assert {r.params["AccountSid"] for r in phone.app.received} == {sid}


# --- the phone network -----------------------------------------------------------------------------------------


async def test_answered_call_runs_twiml_posts_digits_and_sends_signed_callbacks_in_order(phone: Phone) -> None:
    """Answered: TwiML fetched, the scripted digit posted to the Gather action, callbacks signed and in order."""
    await phone.put(f"/numbers/{CITIZEN}", {"behaviour": "answer", "digits": ["9", "1"]})
    phone.app.routes["/voice"] = GATHER_TWIML
    phone.app.routes["/gather"] = lambda p: (
        "<Response><Say>谢谢，已确认。</Say><Hangup/></Response>" if p["Digits"] == "1"
        else "<Response><Say>按键无效。</Say><Redirect>/voice</Redirect></Response>")
    call = await phone.dial(status_callback_event=["initiated", "ringing", "answered", "completed"])
    ended = await phone.ended(call.sid)
    assert (ended["status"], ended["ended_by"]) == ("completed", "twiml")
    assert ended["status_callback_events"] == ["initiated", "ringing", "answered", "completed"]

    received = phone.app.received
    assert received and all(r.signature_valid for r in received), [(r.path, r.signature_valid) for r in received]
    for r in received:
        assert r.method == "POST" and r.headers["user-agent"] == "TwilioProxy/1.1"
        assert r.headers["i-twilio-idempotency-token"]
        assert r.headers["content-type"].startswith("application/x-www-form-urlencoded")
        assert (r.params["CallSid"], r.params["AccountSid"]) == (call.sid, DEFAULT_ACCOUNT_SID)
        assert (r.params["From"], r.params["To"], r.params["Direction"]) == (CALLER_ID, CITIZEN, "outbound-api")
        assert r.params["ApiVersion"] == "2010-04-01" and "AnsweredBy" not in r.params
    assert [r.path for r in received if r.path != "/status"] == ["/voice", "/gather", "/voice", "/gather"]
    assert all(r.params["CallStatus"] == "in-progress" for r in received if r.path != "/status")
    assert [r.params["Digits"] for r in phone.app.at("/gather")] == ["9", "1"]  # one scripted entry per Gather

    callbacks = phone.app.at("/status")
    assert [c.params["CallStatus"] for c in callbacks] == ["initiated", "ringing", "in-progress", "completed"]
    assert [c.params["SequenceNumber"] for c in callbacks] == ["0", "1", "2", "3"]
    assert {c.params["CallbackSource"] for c in callbacks} == {"call-progress-events"}
    for c in callbacks:
        assert abs(parsedate_to_datetime(c.params["Timestamp"]).timestamp() - time.time()) < 10
    completed = callbacks[-1].params
    # Duration is Twilio's billed minutes, CallDuration's seconds rounded up (a loaded machine stretches the call).
    assert int(completed["CallDuration"]) >= 0
    assert int(completed["Duration"]) == math.ceil(int(completed["CallDuration"]) / 60)
    assert "CallDuration" not in callbacks[0].params

    assert _said(ended) == ["您好，这里是反诈中心。确认收到请按1。", "按键无效。", "您好，这里是反诈中心。确认收到请按1。",
                            "谢谢，已确认。"]
    digits = [e for e in ended["events"] if e["type"] == "digits"]
    assert [d["digits"] for d in digits] == ["9", "1"] and digits[0]["action"] == phone.app.url("/gather")
    assert [e["http_status"] for e in ended["events"] if e["type"] == "status_callback"] == [204] * 4


async def test_silence_at_a_gather_continues_with_the_next_verb(phone: Phone) -> None:
    """No key within the Gather's timeout: nothing is posted to the action and the next verb runs, as on Twilio."""
    await phone.put(f"/numbers/{CITIZEN}", {"behaviour": "answer", "digits": [""]})
    phone.app.routes["/voice"] = GATHER_TWIML
    call = await phone.dial()
    ended = await phone.ended(call.sid)
    assert phone.app.at("/gather") == []
    assert _said(ended)[-1] == "我们没有收到您的按键，再见。"
    types = _types(ended)
    assert types.index("gather") < types.index("gather_timeout") < types.index("hangup")
    assert ended["ended_by"] == "end_of_twiml"
    assert [c.params["CallStatus"] for c in phone.app.at("/status")] == ["completed"]  # only completed by default


@pytest.mark.parametrize("behaviour", ["busy", "no-answer", "failed"])
async def test_unanswered_outcomes_reach_the_status_callback(phone: Phone, behaviour: str) -> None:
    """Busy, no-answer and failed numbers end with that CallStatus in the completed callback and no TwiML fetch."""
    await phone.put(f"/numbers/{CITIZEN}", {"behaviour": behaviour})
    call = await phone.dial(status_callback_event=["initiated", "ringing", "answered", "completed"], timeout=10)
    ended = await phone.ended(call.sid)
    assert ended["status"] == behaviour and ended["duration"] == 0
    assert phone.app.at("/voice") == []
    statuses = [c.params["CallStatus"] for c in phone.app.at("/status")]
    assert statuses == (["initiated", "ringing", behaviour] if behaviour == "no-answer" else ["initiated", behaviour])
    assert phone.app.at("/status")[-1].params["CallDuration"] == "0"
    assert (await phone.client().calls(call.sid).fetch_async()).status == behaviour
    stats = await phone.get("/stats")
    assert stats[behaviour.replace("-", "_")] == 1 and stats["completed"] == 0


async def test_machine_detection_reports_answered_by(phone: Phone) -> None:
    """With MachineDetection, a voicemail answers as machine_start and a person as human, in TwiML and callbacks."""
    await phone.post("/limits", {"calls_per_s": 0})
    machine, person = CITIZEN, RELATIVE
    await phone.put(f"/numbers/{machine}", {"behaviour": "machine"})
    phone.app.routes["/voice"] = lambda p: "<Response><Hangup/></Response>" if p["AnsweredBy"].startswith(
        "machine") else "<Response><Say>您好</Say></Response>"
    first = await phone.dial(machine, machine_detection="Enable")
    second = await phone.dial(person, machine_detection="DetectMessageEnd")
    for call, answered_by in ((first, "machine_start"), (second, "human")):
        ended = await phone.ended(call.sid)
        assert ended["answered_by"] == answered_by
        requests = [r for r in phone.app.received if r.params["CallSid"] == call.sid]
        assert [r.params["AnsweredBy"] for r in requests] == [answered_by, answered_by]  # TwiML fetch, completed
        assert (await phone.client().calls(call.sid).fetch_async()).answered_by == answered_by
    assert phone.app.at("/status")[0].params["CallStatus"] == "completed"


async def test_dial_rings_a_second_number_and_posts_the_outcome(phone: Phone) -> None:
    """<Dial><Number> places a second leg by that number's script, bridges it, and posts DialCallStatus to action."""
    await phone.put(f"/numbers/{RELATIVE}", {"behaviour": "answer", "hangup_after_s": 2})
    phone.app.routes["/voice"] = (f'<Response><Say>正在为您转接家属</Say><Dial action="/dial-done" timeout="20" '
                                  f'callerId="{CALLER_ID}"><Number>{RELATIVE}</Number></Dial>'
                                  "<Say>不应说到这里</Say></Response>")
    phone.app.routes["/dial-done"] = "<Response><Say>转接已结束</Say></Response>"
    call = await phone.dial()
    ended = await phone.ended(call.sid)
    [done] = phone.app.at("/dial-done")
    assert done.signature_valid and done.params["DialCallStatus"] == "completed"
    assert int(done.params["DialCallDuration"]) >= 2
    [leg] = (await phone.get("/calls", parent=call.sid))["calls"]
    assert leg["sid"] == done.params["DialCallSid"] == ended["legs"][0]
    assert (leg["to"], leg["from"], leg["direction"], leg["status"]) == (RELATIVE, CALLER_ID, "outbound-dial",
                                                                         "completed")
    assert _said(ended) == ["正在为您转接家属", "转接已结束"]
    dial = next(e for e in ended["events"] if e["type"] == "dial")
    assert dial["numbers"] == [RELATIVE]
    assert "bridged" in _types(leg) and "bridged" in _types(ended)


async def test_dial_to_a_busy_number_continues_after_dial(phone: Phone) -> None:
    """A busy dialled party ends the Dial with busy; without an action the next verb runs."""
    await phone.put(f"/numbers/{RELATIVE}", {"behaviour": "busy"})
    phone.app.routes["/voice"] = f"<Response><Dial>{RELATIVE}</Dial><Say>家属忙线</Say></Response>"
    call = await phone.dial()
    ended = await phone.ended(call.sid)
    result = next(e for e in ended["events"] if e["type"] == "dial_ended")
    assert result["dial_call_status"] == "busy"
    assert _said(ended) == ["家属忙线"]


async def test_update_status_completed_hangs_up_a_live_call(phone: Phone) -> None:
    """calls(sid).update_async(status='completed') ends a call in progress at once; completed is called back."""
    phone.app.routes["/voice"] = '<Response><Say>请稍候</Say><Pause length="600"/></Response>'
    call = await phone.dial()
    live = await phone.get(f"/calls/{call.sid}", status="in-progress", wait=5)
    assert live["status"] == "in-progress"
    started = time.monotonic()
    updated = await phone.client().calls(call.sid).update_async(status="completed")
    assert updated.sid == call.sid
    ended = await phone.ended(call.sid)
    assert time.monotonic() - started < 2  # the 600 s pause (6 s here) did not run out
    assert (ended["status"], ended["ended_by"]) == ("completed", "api")
    assert [c.params["CallStatus"] for c in phone.app.at("/status")] == ["completed"]


async def test_update_status_canceled_ends_only_a_call_still_ringing(phone: Phone) -> None:
    """Status=canceled cancels a ringing call and leaves one in progress alone (as Twilio does); every update
    request is on the call's timeline with its arrival time and the status the call had then."""
    await phone.post("/limits", {"calls_per_s": 0})
    await phone.put(f"/numbers/{CITIZEN}", {"behaviour": "manual"})
    ringing = await phone.dial()
    await phone.get(f"/calls/{ringing.sid}", status="ringing", wait=5)
    before = time.time()
    await phone.client().calls(ringing.sid).update_async(status="canceled")
    ended = await phone.ended(ringing.sid)
    assert (ended["status"], ended["ended_by"]) == ("canceled", "api")
    again = await phone.client().calls(ringing.sid).update_async(status="canceled")  # an ended call: unchanged
    assert again.status == "canceled"
    requests = [e for e in (await phone.get(f"/calls/{ringing.sid}"))["events"] if e["type"] == "api_update"]
    assert [(e["status"], e["call_status"]) for e in requests] == [("canceled", "ringing"), ("canceled", "canceled")]
    assert before <= requests[0]["at"] <= time.time()
    phone.app.routes["/voice"] = '<Response><Pause length="600"/></Response>'
    live = await phone.dial(to=RELATIVE)
    await phone.get(f"/calls/{live.sid}", status="in-progress", wait=5)
    assert (await phone.client().calls(live.sid).update_async(status="canceled")).status == "in-progress"
    await phone.client().calls(live.sid).update_async(status="completed")
    assert (await phone.ended(live.sid))["status"] == "completed"


async def test_dial_rings_several_numbers_at_once_and_the_first_to_answer_wins(phone: Phone) -> None:
    """<Dial> with two <Number>s rings both; the first to answer is bridged and called back as answered (with its
    ParentCallSid), the other is cancelled and called back as such."""
    slow, quick = "+8657187000001", "+8657187000002"
    await phone.put(f"/numbers/{slow}", {"behaviour": "answer", "ring_s": 20})
    await phone.put(f"/numbers/{quick}", {"behaviour": "answer", "ring_s": 1, "hangup_after_s": 1})
    leg_url = phone.app.url("/leg")
    phone.app.routes["/voice"] = (
        f'<Response><Dial action="/dial-done" timeout="60">'
        f'<Number statusCallbackEvent="answered completed" statusCallback="{leg_url}?seat=a">{slow}</Number>'
        f'<Number statusCallbackEvent="answered completed" statusCallback="{leg_url}?seat=b">{quick}</Number>'
        "</Dial></Response>")
    phone.app.routes["/dial-done"] = "<Response><Hangup/></Response>"
    call = await phone.dial()
    await phone.ended(call.sid)
    await phone.until(call.sid, lambda c: len(phone.app.at("/leg")) >= 3)
    [done] = phone.app.at("/dial-done")
    assert done.params["DialCallStatus"] == "completed"
    legs = [(r.url.rsplit("=", 1)[1], r.params["CallStatus"], r.params["ParentCallSid"]) for r in phone.app.at("/leg")]
    assert sorted(legs) == [("a", "canceled", call.sid), ("b", "completed", call.sid), ("b", "in-progress", call.sid)]
    assert all(r.signature_valid for r in phone.app.at("/leg"))


async def test_update_with_twiml_redirects_a_live_call(phone: Phone) -> None:
    """update_async(twiml=...) replaces what a live call is doing; update_async(url=...) fetches new TwiML."""
    phone.app.routes["/voice"] = '<Response><Pause length="600"/></Response>'
    phone.app.routes["/moved"] = '<Response><Say>已转到新的流程</Say><Pause length="600"/></Response>'
    call = await phone.dial()
    await phone.get(f"/calls/{call.sid}", status="in-progress", wait=5)
    await phone.client().calls(call.sid).update_async(url=phone.app.url("/moved"))
    await phone.until(call.sid, lambda c: "已转到新的流程" in _said(c))
    await phone.client().calls(call.sid).update_async(twiml="<Response><Say>通话结束</Say></Response>")
    ended = await phone.ended(call.sid)
    assert _said(ended) == ["已转到新的流程", "通话结束"]
    assert ended["ended_by"] == "end_of_twiml"
    assert phone.app.at("/moved")[0].signature_valid


async def test_manual_number_rings_until_answered_and_takes_pressed_keys(phone: Phone) -> None:
    """A 'manual' number rings until the page answers; keys pressed through the control API reach the Gather."""
    await phone.put(f"/numbers/{CITIZEN}", {"behaviour": "manual"})
    phone.app.routes["/voice"] = GATHER_TWIML
    phone.app.routes["/gather"] = "<Response><Say>收到</Say></Response>"
    call = await phone.dial(timeout=600)
    ringing = await phone.get(f"/calls/{call.sid}", status="ringing", wait=5)
    assert ringing["status"] == "ringing"
    bad = await phone.control.post(f"{CONTROL}/calls/{call.sid}/press", json={"digits": "2"})
    assert bad.status_code == 409  # nobody on the line yet
    assert (await phone.post(f"/calls/{call.sid}/answer"))["status"] == "in-progress"
    await phone.post(f"/calls/{call.sid}/press", {"digits": "2"})  # kept for the Gather, however soon it starts
    ended = await phone.ended(call.sid)
    assert [r.params["Digits"] for r in phone.app.at("/gather")] == ["2"]
    assert _said(ended)[-1] == "收到"
    press = next(e for e in ended["events"] if e["type"] == "press")
    assert (press["digits"], press["source"]) == ("2", "manual")


async def test_manual_number_rejected_from_the_page_is_busy(phone: Phone) -> None:
    """Rejecting a ringing call (the page's red button) ends it as busy."""
    await phone.put(f"/numbers/{CITIZEN}", {"behaviour": "manual"})
    call = await phone.dial(timeout=600)
    await phone.get(f"/calls/{call.sid}", status="ringing", wait=5)
    await phone.post(f"/calls/{call.sid}/reject")
    ended = await phone.ended(call.sid)
    assert (ended["status"], ended["ended_by"]) == ("busy", "callee")
    assert phone.app.at("/status")[-1].params["CallStatus"] == "busy"


async def test_get_methods_are_signed_over_the_full_url(phone: Phone) -> None:
    """Method=GET and StatusCallbackMethod=GET put the parameters in the query string, signed over the full URL."""
    phone.app.routes["/voice"] = "<Response><Say>GET</Say></Response>"
    call = await phone.dial(method="GET", status_callback_method="GET")
    await phone.ended(call.sid)
    assert [r.method for r in phone.app.received] == ["GET", "GET"]
    assert all(r.signature_valid and "CallSid=" + call.sid in r.url for r in phone.app.received)


async def test_application_error_is_spoken_and_the_call_completes(phone: Phone) -> None:
    """TwiML that cannot be fetched or parsed: Twilio's application-error message, then hang-up (code recorded)."""
    await phone.post("/limits", {"calls_per_s": 0})
    phone.app.routes["/voice"] = "this is not TwiML"
    call = await phone.dial()
    ended = await phone.ended(call.sid)
    assert ended["status"] == "completed" and ended["ended_by"] == "error"
    assert [e["code"] for e in ended["events"] if e["type"] == "error"] == [12100]
    assert _said(ended) == ["We are sorry, an application error has occurred. Goodbye."]
    phone.app.routes["/fallback"] = "<Response><Say>备用流程</Say></Response>"
    phone.app.routes["/voice"] = "<Response><Say>x</Say>"  # unclosed
    missing = await phone.dial(RELATIVE, url=phone.app.url("/voice"), fallback_url=phone.app.url("/fallback"))
    ended = await phone.ended(missing.sid)
    assert _said(ended) == ["备用流程"]
    [fallback] = phone.app.at("/fallback")
    assert fallback.params["ErrorCode"] == "12100" and fallback.params["ErrorUrl"] == phone.app.url("/voice")


async def test_wait_helper_answers_when_the_call_ends(phone: Phone) -> None:
    """GET /calls?to=&status=completed&wait= returns as soon as the call has ended, not before and not later."""
    await phone.put(f"/numbers/{CITIZEN}", {"behaviour": "answer", "hangup_after_s": 30})  # 0.3 s here
    phone.app.routes["/voice"] = '<Response><Pause length="600"/></Response>'
    call = await phone.dial()
    started = time.monotonic()
    found = await phone.get("/calls", to=CITIZEN, status="completed", wait=10)
    elapsed = time.monotonic() - started
    [ended] = found["calls"]
    assert ended["sid"] == call.sid and ended["ended_by"] == "callee" and ended["done"]
    assert 0.25 < elapsed < 3
    assert phone.app.at("/status")[-1].params["CallStatus"] == "completed"
    nothing = await phone.get("/calls", to=RELATIVE, wait=0.1)
    assert nothing["calls"] == []


async def test_reset_hangs_up_and_forgets(phone: Phone) -> None:
    """POST /reset ends live calls and forgets calls, scripts, counters and limits."""
    await phone.put(f"/numbers/{CITIZEN}", {"behaviour": "manual"})
    await phone.post("/limits", {"calls_per_s": 5})
    await phone.dial(timeout=600)
    await phone.get("/calls", status="ringing", wait=5)
    await phone.post("/reset")
    assert (await phone.get("/calls"))["calls"] == []
    assert (await phone.get("/numbers"))["numbers"] == []
    stats = await phone.get("/stats")
    assert (stats["created"], stats["calls_per_s"], stats["live"]) == (0, 1, 0)


async def test_page_has_the_calls_panel(phone: Phone) -> None:
    """GET / carries the calls panel and its script, which drives /sandbox/twilio."""
    page = await phone.control.get("/")
    assert page.status_code == 200 and "/sandbox/static/calls.js" in page.text and 'id="calls"' in page.text
    script = await phone.control.get("/sandbox/static/calls.js")
    assert script.status_code == 200 and "/sandbox/twilio" in script.text


async def test_the_page_answers_a_seats_phone_rung_by_a_dial(phone: Phone, page: Any) -> None:
    """A <Dial> to a 'manual' number (a seat's desk phone, key 2) is listed under its caller's call on the page,
    with a button that answers it as that seat: the caller and the seat are bridged."""
    seat = "+8657187000009"
    await phone.put(f"/numbers/{seat}", {"behaviour": "manual"})
    phone.app.routes["/voice"] = (f'<Response><Say>正在为您转接民警</Say><Dial timeout="600" action="/dial-done">'
                                  f"<Number>{seat}</Number></Dial></Response>")
    phone.app.routes["/dial-done"] = "<Response><Hangup/></Response>"
    call = await phone.dial()
    await phone.get("/calls", to=seat, status="ringing", wait=5)
    await page.goto(phone.base_url + "/")
    await page.click("#calls li:not(.leg)")  # the citizen's call
    await page.get_by_role("button", name="坐席接听 (answer as this seat)").click()
    await phone.until(call.sid, lambda c: "bridged" in _types(c), timeout_s=10)
    [leg] = (await phone.get("/calls", parent=call.sid))["calls"]
    assert leg["to"] == seat and "bridged" in _types(leg) and leg["answered_at"]


# --- calls in (a desk phone dials the seat line) ------------------------------------------------------------------


async def test_a_call_in_runs_the_numbers_twiml_signed_and_takes_the_callers_keys(phone: Phone) -> None:
    """A phone dials an incoming number: Twilio answers at once, fetches the number's voice URL (signed, From the
    caller, Direction inbound), says the <Say>s, takes the keys the caller presses, tells the status callback
    at the end, and the caller can hang up; a number nobody set up is 404."""
    desk, line = "+8657187000001", "+8657196111"
    # A long keypad wait (600 s of phone time is 6 s here): the test must see the Gather before pressing.
    phone.app.routes["/voice"] = GATHER_TWIML.replace('timeout="5"', 'timeout="600"')
    phone.app.routes["/gather"] = '<Response><Say language="zh-CN">已记录。</Say><Pause length="60"/></Response>'
    missing = await phone.control.post(CONTROL + "/dial-in", json={"from": desk, "to": line})
    assert missing.status_code == 404
    await phone.put(f"/incoming/{line}", {"url": phone.app.url("/voice"), "status_callback": phone.app.url("/status")})
    call = await phone.post("/dial-in", {"from": desk, "to": line})
    assert (call["direction"], call["from"], call["to"]) == ("inbound", desk, line)
    await phone.until(call["sid"], lambda c: c["gathering"])
    await phone.post(f"/calls/{call['sid']}/press", {"digits": "1"})
    await phone.until(call["sid"], lambda c: "已记录。" in _said(c))
    await phone.post(f"/calls/{call['sid']}/hangup")
    ended = await phone.ended(call["sid"])
    assert ended["status"] == "completed" and ended["ended_by"] == "callee"
    (voice,) = phone.app.at("/voice")
    assert voice.signature_valid and voice.params["From"] == desk and voice.params["Direction"] == "inbound"
    (gathered,) = phone.app.at("/gather")
    assert gathered.signature_valid and gathered.params["Digits"] == "1"
    (status,) = phone.app.at("/status")
    assert status.params["CallStatus"] == "completed" and status.params["CallSid"] == call["sid"]
