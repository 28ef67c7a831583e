"""The services' database role and the secrets behind it: derived URL, password verifier, settings that refuse placeholders."""

from __future__ import annotations

import base64
import re
import uuid
from pathlib import Path

import pytest

from shared.db import raw_connect, with_database
from shared.db_roles import SERVICE_ROLE, scram_verifier, service_url
from shared.migrate import migrate
from shared.settings import CommonSettings
from tests.conftest import TEST_AUDIT_KEY


def test_the_services_url_is_the_owners_server_and_database_as_the_services_role() -> None:
    """User and password are replaced (the password quoted), host, database and options kept."""
    assert service_url("postgresql://postgres:@/postgres?host=/tmp/pg", None) == \
        "postgresql://shouhu_service@/postgres?host=/tmp/pg"
    assert service_url("postgresql+asyncpg://shouhu:owner@postgres:5432/shouhu", "p@ss:w/rd") == \
        "postgresql+asyncpg://shouhu_service:p%40ss%3Aw%2Frd@postgres:5432/shouhu"


async def test_the_password_verifier_is_the_one_postgresql_computes(server_url: str) -> None:
    """For the same password and salt, our SCRAM-SHA-256 verifier equals the server's own (so the role can log in)."""
    probe = f"shouhu_probe_{uuid.uuid4().hex[:8]}"
    admin = await raw_connect(server_url)
    try:
        await admin.execute("SET password_encryption = 'scram-sha-256'")
        await admin.execute(f"CREATE ROLE {probe} PASSWORD 'Zhè-is a pässword: 1$'")
        stored = await admin.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", probe)
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {probe}")
        await admin.close()
    iterations, salt = re.match(r"SCRAM-SHA-256\$(\d+):([^$]+)\$", stored).groups()
    assert scram_verifier("Zhè-is a pässword: 1$", iterations=int(iterations), salt=base64.b64decode(salt)) == stored


async def test_migrate_gives_the_services_role_its_password_and_no_superuser(server_url: str) -> None:
    """`shouhu migrate` with SHOUHU_SERVICE_DB_PASSWORD leaves a login role, not a superuser, with that password."""
    name = f"shouhu_t_{uuid.uuid4().hex[:16]}"
    admin = await raw_connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        await migrate(with_database(server_url, name), audit_key=TEST_AUDIT_KEY, service_password="s3cret:with$ymbols")
        role = await admin.fetchrow("SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolpassword"
                                    " FROM pg_authid WHERE rolname = $1", SERVICE_ROLE)
        iterations, salt = re.match(r"SCRAM-SHA-256\$(\d+):([^$]+)\$", role["rolpassword"]).groups()
        assert scram_verifier("s3cret:with$ymbols", iterations=int(iterations), salt=base64.b64decode(salt)) == \
            role["rolpassword"]
        assert (role["rolcanlogin"], role["rolsuper"], role["rolcreaterole"], role["rolcreatedb"]) == (
            True, False, False, False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def test_outside_development_the_audit_key_must_be_real(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset, a placeholder or a short key stops a production service at start; a real one is accepted."""
    monkeypatch.delenv("SHOUHU_AUDIT_KEY")
    for key in (None, "changeme", "secret", "short-key"):
        env = {"SHOUHU_ENV": "production"} | ({"SHOUHU_AUDIT_KEY": key} if key else {})
        with pytest.raises(ValueError, match="SHOUHU_AUDIT_KEY"):
            CommonSettings(**env)
    real = "k" * 16 + "-" + "q" * 20
    assert CommonSettings(SHOUHU_ENV="production", SHOUHU_AUDIT_KEY=real).audit_secret() == real
    with pytest.raises(ValueError, match="SHOUHU_SERVICE_DB_PASSWORD"):
        CommonSettings(SHOUHU_ENV="production", SHOUHU_AUDIT_KEY=real, SHOUHU_SERVICE_DB_PASSWORD="changeme")


def test_in_development_one_audit_key_is_made_and_kept_in_the_data_directory(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Without SHOUHU_AUDIT_KEY every process of a checkout uses the same key, made once (0600)."""
    monkeypatch.delenv("SHOUHU_AUDIT_KEY")
    first = CommonSettings(SHOUHU_DATA_DIR=str(tmp_path)).audit_secret()
    again = CommonSettings(SHOUHU_DATA_DIR=str(tmp_path)).audit_secret()
    assert first == again and len(first) >= 32
    assert (tmp_path / "audit.key").stat().st_mode & 0o777 == 0o600
