"""What a person's browser gets when a console address is wrong: a page in words, not JSON; API clients keep JSON."""

from __future__ import annotations

from tests.console.test_supervisor_console import key_of, signed_in

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


async def test_unknown_console_page_is_a_chinese_page_with_the_way_home(dispatcher) -> None:  # noqa: ANN001
    """A mistyped console address answers 404 as a page in Chinese with a link home, not {"detail": "Not Found"}."""
    resp = await dispatcher.client.get("/console/no-such-page", headers=HTML)
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("text/html")
    assert "页面不存在" in resp.text and 'href="/console"' in resp.text
    assert '"detail"' not in resp.text


async def test_bad_task_id_in_a_console_address_is_explained_in_the_chosen_language(dispatcher) -> None:  # noqa: ANN001
    """A task link cut short (not a UUID) gives a 422 page that says the address is wrong, in English when chosen."""
    await signed_in(dispatcher.client, await key_of(dispatcher))
    resp = await dispatcher.client.get("/console/tasks/not-a-task", headers=HTML)
    assert resp.status_code == 422 and "地址中的参数有误" in resp.text
    dispatcher.client.cookies.set("shouhu_lang", "en")
    resp = await dispatcher.client.get("/console/tasks/not-a-task", headers=HTML)
    assert resp.status_code == 422 and "Something in the address is wrong" in resp.text


async def test_api_clients_and_api_paths_keep_json_errors(dispatcher) -> None:  # noqa: ANN001
    """Without Accept: text/html, or off the console's paths, errors stay the documented JSON."""
    resp = await dispatcher.client.get("/console/no-such-page")
    assert resp.status_code == 404 and resp.json() == {"detail": "Not Found"}
    resp = await dispatcher.client.get("/nothing-here", headers=HTML)
    assert resp.status_code == 404 and resp.json() == {"detail": "Not Found"}


async def test_every_service_has_a_favicon(dispatcher) -> None:  # noqa: ANN001
    """Browsers ask for /favicon.ico on every page: it is an icon, not a 404."""
    resp = await dispatcher.client.get("/favicon.ico")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("image/svg+xml")
    assert resp.content.startswith(b"<svg")
