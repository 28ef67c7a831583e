"""`shouhu import`: bulk-ingest warnings from CSV or JSON Lines, with a per-line error report.

Every line is validated as `POST /v1/warnings/batch` validates a record, and
reported with the same field and reason. A line that cannot even be read
(bytes that are not UTF-8, a CSV cell past the size limit, JSON nested too
deep) is reported too, never the end of the import: files are read with
`surrogateescape`, so undecodable bytes reach validation as characters it
refuses, and JSON is parsed as the HTTP routes parse it
(`shared.validation.parse_json`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from services.dispatcher.policy.service import PolicyStore, load_policy
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.warnings.flows import run_ingest
from services.dispatcher.warnings.schemas import Rejected, ValidRecord, parse_record
from shared.db import make_engine, make_sessionmaker, transaction
from shared.validation import escape_invalid, parse_json

# CSV columns that fill the nested `subject` object.
_SUBJECT_COLUMNS = {"subject.name": "name", "subject.age": "age", "subject.gender": "gender",
                    "subject.id_number": "id_number", "name": "name", "age": "age", "gender": "gender",
                    "id_number": "id_number"}


def _iter_csv(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # e.g. a cell past the size limit: that line, not the import
                yield reader.line_num + 1, f"not valid CSV ({exc})"
                continue
            yield reader.line_num, _from_csv_row(row)


def _from_csv_row(row: dict[str, str | None]) -> dict[str, Any] | str:
    record: dict[str, Any] = {}
    subject: dict[str, Any] = {}
    for column, value in row.items():
        if column is None:
            return "more cells than there are columns"
        column = column.strip()
        if value is None or value.strip() == "":
            continue
        value = value.strip()
        if column in _SUBJECT_COLUMNS:
            subject[_SUBJECT_COLUMNS[column]] = value
        elif column == "details":
            try:
                record["details"] = parse_json(value)
            except ValueError:
                return "details: not valid JSON"
        else:
            record[column] = value
    if subject:
        record["subject"] = subject
    return record


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8-sig", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, parse_json(line)
            except ValueError as exc:
                yield number, str(exc)


def read_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, record or error text) for every record in the file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _iter_csv(path)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _iter_jsonl(path)
    raise ValueError(f"{path.name}: expected a .csv or .jsonl file")


async def run_import(path: Path, *, database_url: str, batch_size: int, errors_path: Path | None,
                     actor: str) -> int:
    """Ingest the file batch by batch; return 0 when every line was stored (or was a replay), 1 otherwise."""
    console = Console(stderr=True)
    settings = DispatcherSettings()
    store = PolicyStore(load_policy(settings.policy_path))
    engine = make_engine(database_url, pool_size=2, application_name="shouhu-import",
                         audit_key=settings.audit_secret())
    sessionmaker = make_sessionmaker(engine)
    clock = settings.clock()  # the services' clock (a fast one in a demo: SHOUHU_TIME_SCALE, SHOUHU_TIME_EPOCH)
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    problems: list[tuple[int, str, str]] = []
    total_lines = sum(1 for _ in read_records(path))
    try:
        async with transaction(sessionmaker) as session:
            await store.register_current(session)
        batch: list[ValidRecord] = []
        lines: dict[int, int] = {}

        async def flush() -> None:
            if not batch:
                return
            results = await run_ingest(sessionmaker, batch, actor=actor, store=store, clock=clock)
            for record in batch:
                answer = results[record.index]
                counts[answer["status"]] += 1
                # A record the database refused on its own (the others in its batch were stored).
                problems.extend((lines[record.index], e["field"], e["reason"]) for e in answer.get("errors") or [])
            batch.clear()

        with Progress(TextColumn("[bold]importing[/]"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console) as progress:
            bar = progress.add_task("import", total=total_lines)
            for index, (line, raw) in enumerate(read_records(path)):
                if isinstance(raw, str):
                    problems.append((line, "record", raw))
                    counts["rejected"] += 1
                else:
                    parsed = parse_record(index, raw, now=clock.now())
                    if isinstance(parsed, Rejected):
                        counts["rejected"] += 1
                        problems += [(line, e["field"], e["reason"]) for e in parsed.errors]
                    else:
                        lines[index] = line
                        batch.append(parsed)
                if len(batch) >= batch_size:
                    await flush()
                progress.advance(bar)
            await flush()
    finally:
        await engine.dispose()
    # In line order; undecodable bytes (surrogate-escaped) in a column name are shown as escapes, and text
    # from the file is never read as rich markup.
    problems = sorted(((line, escape_invalid(field), escape_invalid(reason)) for line, field, reason in problems),
                      key=lambda p: p[0])
    for line, field, reason in problems:
        console.print(f"line {line}: {field}: {reason}", highlight=False, markup=False)
    if errors_path is not None:
        with errors_path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["line", "field", "reason"])
            writer.writerows(problems)
    console.print(f"{counts['accepted']} accepted, {counts['duplicate']} duplicates, "
                  f"{counts['rejected']} rejected", highlight=False)
    return 1 if counts["rejected"] else 0
