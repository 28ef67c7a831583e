"""The supervisor console in a real headless Chromium, and its sign-in, CSRF and scoping rules over HTTP."""

from __future__ import annotations

from tests.conftest import serve, sign_in


async def test_supervisor_signs_in_and_sees_overview(dispatcher, page) -> None:  # noqa: ANN001
    """A supervisor key signs in through the form and lands on the overview of its own unit."""
    key = (await dispatcher.headers("supervisor", "33"))["Authorization"].removeprefix("Bearer ")
    async with serve(dispatcher.app, lifespan="off") as base:
        await sign_in(page, base, key)
        assert await page.locator("h1").first.inner_text() != ""
        await page.screenshot(path="/tmp/overview.png")
