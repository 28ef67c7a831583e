"""Take docs/field-page.png: the officers' page (/field) on a 375x812 phone, with two visits.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python docs/field_screenshot.py

Makes a throwaway database on that server (dropped afterwards), runs the
dispatcher in-process on a frozen clock, lets the plan send officers to a
citizen whose four automated calls went unanswered, and photographs the page
in headless Chromium (SHOUHU_CHROMIUM, default /usr/bin/chromium).
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn
from playwright.async_api import async_playwright

from services.dispatcher.app import create_app
from services.dispatcher.jobs import make_worker
from services.dispatcher.settings import DispatcherSettings
from shared import contracts
from shared.auth.service import create_key
from shared.clock import FrozenClock
from shared.db import raw_connect, transaction, with_database
from shared.migrate import migrate
from shared.queue.service import enqueue

OUT = Path(__file__).resolve().parent / "field-page.png"
T0 = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)  # 10:00 in Hangzhou


async def main() -> None:
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"shouhu_docs_{uuid.uuid4().hex[:10]}"
    admin = await raw_connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = with_database(server, name)
    try:
        await migrate(url, audit_key=DispatcherSettings().audit_secret())
        await photograph(url)
    finally:
        admin = await raw_connect(server)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def photograph(url: str) -> None:
    clock = FrozenClock(T0)
    app = create_app(DispatcherSettings(DATABASE_URL=url, SHOUHU_DISPATCHER_WORKER=False), clock=clock)
    async with app.router.lifespan_context(app):
        rt = app.state.runtime
        async with transaction(rt.sessionmaker) as session:
            _, ingest = await create_key(session, role="ingest", unit="", name="bank-icbc-zj")
            _, operator = await create_key(session, role="operator", unit="3301", name="96110 坐席 07")
            _, officer = await create_key(session, role="officer", unit="330106", name="西湖派出所 王警官")
        worker = make_worker(rt.sessionmaker, store=rt.store, clock=clock, database_url=None)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://d") as api:
            async def warn(**fields: object) -> str:
                body = {"source": "bank-icbc-zj", "source_ref": uuid.uuid4().hex, "region_code": "330106",
                        "occurred_at": T0.isoformat(), **fields}
                resp = await api.post("/v1/warnings", json=body, headers={"Authorization": f"Bearer {ingest}"})
                return resp.json()["task_id"]

            chen = await warn(phone="13700137000", signal="transfer_in_progress", fraud_type="impersonating_police",
                              amount_at_risk=50000, subject={"name": "陈建国", "age": 72, "gender": "male"})
            # Every automated call rings out unanswered (what the callcenter would report), and is retried.
            for attempt in range(1, 5):
                clock.set(T0 + timedelta(minutes=5 * attempt - 4))
                result = contracts.ChannelResult(task_id=uuid.UUID(chen), channel="auto_call", attempt=attempt,
                                                 result="no_answer")
                async with transaction(rt.sessionmaker) as session:
                    await enqueue(session, [result.to_job(now=clock.now())])
                await worker.drain()
            clock.set(T0 + timedelta(minutes=30))
            li = await warn(phone="13900139000", signal="remote_control_app", fraud_type="fake_investment",
                            amount_at_risk=120000, subject={"name": "李秀兰", "age": 45, "gender": "female"})
            await api.post(f"/v1/tasks/{li}/visits", json={"note": "她正在文三路工商银行柜台，准备大额转账"},
                           headers={"Authorization": f"Bearer {operator}"})
            clock.set(T0 + timedelta(minutes=45))
            await worker.drain()  # the plan's visit step: officers for 陈建国
            listed = (await api.get("/v1/visits", headers={"Authorization": f"Bearer {officer}"})).json()["items"]
            chen_visit = next(v["visit_id"] for v in listed if v["task_id"] == chen)
            await api.post(f"/v1/visits/{chen_visit}/claim", headers={"Authorization": f"Bearer {officer}"})
            clock.set(T0 + timedelta(minutes=52))

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None, access_log=False))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=os.environ.get("SHOUHU_CHROMIUM", "/usr/bin/chromium"), args=["--no-sandbox"])
                context = await browser.new_context(viewport={"width": 375, "height": 812}, device_scale_factor=2,
                                                    is_mobile=True, has_touch=True, locale="zh-CN")
                page = await context.new_page()
                await page.goto(f"{base}/field")
                await page.fill("input[name=api_key]", officer)
                await page.click("button[type=submit]")
                await page.wait_for_url(f"{base}/field")
                await page.screenshot(path=str(OUT), full_page=True)
                await browser.close()
        finally:
            server.should_exit = True
            await serving
    print(f"wrote {OUT}")


if __name__ == "__main__":
    asyncio.run(main())
