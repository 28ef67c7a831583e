"""The README's walkthrough runs as written: every shell block of its "Try it" sections and of "Emergencies".

The blocks run one after the other in one bash (variables carry over, as in the reader's terminal), with
`set -euo pipefail`, from a directory laid out like the checkout after `make run` (`.shouhu/admin.key`,
`.venv`), against the whole system started in this test. The one change made to the text: the ports of
127.0.0.1:8000/8001/8002/8090 become the ports this test's services listen on (tests run in parallel).
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import textwrap
from pathlib import Path

import pytest

from shared.clock import Clock
from tests.conftest import ROOT, TEST_AUDIT_KEY
from tests.helpers.system import make_keys, running_system

SECTIONS = re.compile(r"^(Try it|Emergencies)")
WALKTHROUGH_TIMEOUT_S = 180.0  # the blocks' own `until` loops end as soon as each outcome is there


def walkthrough_blocks(readme: str) -> list[tuple[str, str]]:
    """(section title, shell block) for every ```sh block of the walkthrough's sections, in order, dedented."""
    blocks = []
    for section in re.split(r"^## ", readme, flags=re.MULTILINE)[1:]:
        title = section.splitlines()[0].strip()
        if not SECTIONS.match(title):
            continue
        for match in re.finditer(r"^( *)```sh\n(.*?)^\1```", section, flags=re.MULTILINE | re.DOTALL):
            blocks.append((title, textwrap.dedent(match.group(2))))
    return blocks


def test_the_walkthrough_has_its_blocks() -> None:
    """The README's walkthrough sections keep their runnable blocks (a renamed heading would skip them silently)."""
    titles = [title for title, _ in walkthrough_blocks((ROOT / "README.md").read_text(encoding="utf-8"))]
    assert any(t.startswith("Try it: post a warning") for t in titles)
    assert any(t.startswith("Try it: the citizen's side") for t in titles)
    assert any(t.startswith("Try it: the 96110 call") for t in titles)
    assert any(t.startswith("Emergencies") for t in titles)
    assert len(titles) >= 7


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("bash")), reason="needs curl and bash")
async def test_the_readme_walkthrough_runs_as_written(db_url: str, tmp_path: Path) -> None:
    """Each command of the README's walkthrough succeeds against a running system, and each outcome it waits for comes."""
    blocks = walkthrough_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    made = await make_keys(db_url, {"admin": "all"})
    # The checkout as `make run` leaves it: the admin key where it prints it, the venv for `.venv/bin/shouhu`.
    (tmp_path / ".shouhu").mkdir()
    (tmp_path / ".shouhu" / "admin.key").write_text(made["admin"] + "\n")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    # Real time (the README's reader runs it so); the sandbox's phones answer 50 times faster.
    async with running_system(db_url, Clock(), phone_time_scale=0.02) as urls:
        ports = {"8000": urls["dispatcher"], "8001": urls["bot"], "8002": urls["callcenter"], "8090": urls["sandbox"]}
        script = "set -euo pipefail\n" + "\n".join(
            f"echo {shlex.quote('### ' + title)} >&2\n{block}" for title, block in blocks)
        script = re.sub(r"http://127\.0\.0\.1:(8000|8001|8002|8090)", lambda m: ports[m.group(1)], script)
        env = {**os.environ, "DATABASE_URL": db_url, "SHOUHU_AUDIT_KEY": TEST_AUDIT_KEY}
        proc = await asyncio.create_subprocess_exec("bash", "-c", script, cwd=tmp_path, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), WALKTHROUGH_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
            raise AssertionError(f"the walkthrough hung:\n{err.decode()[-3000:]}\n{out.decode()[-3000:]}") from None
    assert proc.returncode == 0, f"the walkthrough failed:\n{err.decode()[-3000:]}\n{out.decode()[-3000:]}"
    text = out.decode()
    assert '"tier":"high"' in text  # the first warning's answer, echoed
    assert '"ok":true' in text  # the audit chain verifies
    assert '"status":"confirmed"' in text  # the emergency's payment stop, confirmed


def test_every_picture_in_the_readme_is_taken_by_a_browser_test() -> None:
    """Each docs/*.png the README shows is written by a test (`make screenshots`), so none can go stale unnoticed."""
    pictures = set(re.findall(r"\(docs/([\w-]+\.png)\)", (ROOT / "README.md").read_text(encoding="utf-8")))
    taken = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        calls = [line for line in path.read_text(encoding="utf-8").splitlines() if "readme_screenshot(" in line]
        taken |= {name for line in calls for name in re.findall(r"\"([\w-]+\.png)\"", line)}
    assert pictures, "the README shows no pictures any more: drop this test with them"
    assert pictures <= taken, f"README pictures no browser test takes: {sorted(pictures - taken)}"
    assert all((ROOT / "docs" / name).exists() for name in pictures)
