"""The container deployment files (infra/Dockerfile, docker-compose.yml) hold together without a Docker engine.

No Docker engine runs where the suite runs, so these tests read the files: the
compose file's structure with PyYAML, the Dockerfile line by line, and every
`shouhu ...` command the compose file names against the real CLI.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "infra" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

APP_SERVICES = ("dispatcher", "bot", "callcenter")
IMAGE_SERVICES = ("migrate", *APP_SERVICES)
# The variables the contract lists for the services; each must reach the containers.
CONTRACT_VARIABLES = (
    "DATABASE_URL", "SHOUHU_ENV", "SHOUHU_POLICY", "SHOUHU_BOOTSTRAP_ADMIN_KEY",
    "TELEGRAM_BOT_TOKEN", "TELEGRAM_API_BASE", "TELEGRAM_WEBHOOK_URL", "TELEGRAM_WEBHOOK_SECRET",
    "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER", "TWILIO_API_BASE",
    "CALLCENTER_PUBLIC_URL", "CALLCENTER_AUTODIAL_COUNTRIES",
)


def _load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    return _load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _command(service: dict[str, Any]) -> list[str]:
    """The service's command as an argument list (compose accepts a string or a list)."""
    raw = service.get("command")
    if raw is None:
        return []
    return shlex.split(raw) if isinstance(raw, str) else [str(part) for part in raw]


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    """The service's environment as a mapping (compose accepts a mapping or a list of NAME[=value])."""
    raw = service.get("environment") or {}
    if isinstance(raw, dict):
        return {str(name): None if value is None else str(value) for name, value in raw.items()}
    env: dict[str, str | None] = {}
    for item in raw:
        name, sep, value = str(item).partition("=")
        env[name] = value if sep else None
    return env


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):  # the short form carries no condition
        return {name: {"condition": "service_started"} for name in raw}
    return raw


def _dockerfile_of(service: dict[str, Any]) -> Path | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        build = {"context": build}
    context = ROOT / build.get("context", ".")
    return (context / build.get("dockerfile", "Dockerfile")).resolve()


def _shouhu_commands() -> list[tuple[str, list[str], bool]]:
    """(service, arguments after `shouhu`, in the default profile) for each service that runs the CLI."""
    if not COMPOSE_FILE.is_file():
        return []
    found = []
    for name, service in (_load_compose().get("services") or {}).items():
        argv = [str(part) for part in (service.get("entrypoint") or [])] + _command(service)
        if argv and argv[0] == "shouhu":
            found.append((name, argv[1:], not service.get("profiles")))
    return found


@functools.cache
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shouhu.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def _published_host_port(entry: str | int | dict[str, Any]) -> str | None:
    """The host side of a `ports:` entry ("" or None when Docker picks it)."""
    if isinstance(entry, dict):
        published = entry.get("published")
        return None if published is None else str(published)
    parts = str(entry).split("/")[0].split(":")
    # "C", "H:C", "IP:H:C", "IP::C" (IPv6 addresses are bracketed and not used here).
    return parts[-2] if len(parts) >= 2 else None


def _container_port(entry: str | int | dict[str, Any]) -> str:
    if isinstance(entry, dict):
        return str(entry["target"])
    return str(entry).split("/")[0].split(":")[-1]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: continuations joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    if pending:
        logical.append(pending)
    result = []
    for line in logical:
        instruction, _, arguments = line.partition(" ")
        result.append((instruction.upper(), arguments.strip()))
    return result


def _exec_or_shell(arguments: str) -> list[str]:
    """A CMD/ENTRYPOINT's arguments in exec form (JSON) or shell form."""
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError:
        return shlex.split(arguments)
    return [str(part) for part in parsed]


# --- docker-compose.yml ---------------------------------------------------------------------------------------


def test_compose_defines_database_migration_and_all_three_services(services: dict[str, dict[str, Any]]) -> None:
    """`docker compose up` starts PostgreSQL, the migration and every service of the system."""
    for name in ("postgres", *IMAGE_SERVICES):
        assert name in services, f"docker-compose.yml has no {name!r} service"
    assert str(services["postgres"]["image"]).startswith("postgres:15")


def test_services_and_migration_run_the_project_image(services: dict[str, dict[str, Any]]) -> None:
    """The services and the migration run the image built from infra/Dockerfile, so they run the same code."""
    built = {name: _dockerfile_of(service) for name, service in services.items()}
    images_from_dockerfile = {services[name].get("image") for name, path in built.items() if path == DOCKERFILE}
    images_from_dockerfile.discard(None)
    for name in IMAGE_SERVICES:
        if built[name] is not None:
            assert built[name] == DOCKERFILE, f"{name} builds {built[name]}, not {DOCKERFILE}"
        else:
            assert services[name].get("image") in images_from_dockerfile, (
                f"{name} neither builds infra/Dockerfile nor uses the image built from it")
    tags = {services[name].get("image") for name in IMAGE_SERVICES}
    assert len(tags) == 1, f"the services name different images: {tags}"


def test_migration_waits_for_a_healthy_database_and_runs_once(services: dict[str, dict[str, Any]]) -> None:
    """Migrations start only once PostgreSQL accepts connections, and the one-shot container is not restarted."""
    migrate = services["migrate"]
    assert _command(migrate) == ["shouhu", "migrate"]
    assert _depends_on(migrate).get("postgres", {}).get("condition") == "service_healthy"
    # Quoted in YAML: a bare `no` would be read as a boolean by YAML 1.1 tools.
    assert migrate.get("restart", "no") == "no"
    healthcheck = services["postgres"].get("healthcheck") or {}
    assert "pg_isready" in " ".join(_command({"command": healthcheck.get("test")})), (
        "service_healthy needs a PostgreSQL healthcheck (pg_isready)")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_service_starts_only_after_migrations_succeed(services: dict[str, dict[str, Any]], name: str) -> None:
    """No service runs against a database whose schema is not at head (or whose migration failed)."""
    condition = _depends_on(services[name]).get("migrate", {}).get("condition")
    assert condition == "service_completed_successfully", f"{name} depends on migrate with {condition!r}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_service_can_be_scaled_to_several_replicas(services: dict[str, dict[str, Any]], name: str) -> None:
    """`docker compose up --scale SERVICE=N` works: no fixed container name, no fixed host port."""
    service = services[name]
    assert "container_name" not in service, f"{name} sets container_name, so it cannot run several replicas"
    for entry in service.get("ports") or []:
        host = _published_host_port(entry)
        assert not host or "-" in host, (
            f"{name} publishes fixed host port {host} ({entry!r}); a second replica would collide")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_service_listens_on_the_port_it_publishes_and_probes(services: dict[str, dict[str, Any]], name: str) -> None:
    """The --port a service listens on, the port it publishes and the port its healthcheck probes agree."""
    service = services[name]
    argv = _command(service)
    assert argv[:3] == ["shouhu", "serve", name], f"{name} runs {argv}"
    assert "--host" in argv and argv[argv.index("--host") + 1] == "0.0.0.0", (
        f"{name} must listen on all interfaces to be reachable from outside its container")
    port = argv[argv.index("--port") + 1]
    assert [_container_port(entry) for entry in service.get("ports") or []] in ([], [port])
    # The image's HEALTHCHECK probes SHOUHU_HEALTHCHECK_PORT, 8000 unless the service says otherwise.
    probed = _environment(service).get("SHOUHU_HEALTHCHECK_PORT") or "8000"
    assert probed == port, f"{name} listens on {port} but its healthcheck probes {probed}"


def test_contract_environment_reaches_the_services(services: dict[str, dict[str, Any]]) -> None:
    """Every variable of the contract can be set for the services through compose, and the database is `postgres`."""
    available = set().union(*(_environment(services[name]) for name in APP_SERVICES))
    missing = [variable for variable in CONTRACT_VARIABLES if variable not in available]
    assert not missing, f"docker-compose.yml does not pass {missing} to the services"
    for name in IMAGE_SERVICES:
        env = _environment(services[name])
        url = env.get("DATABASE_URL")
        assert url, f"{name} has no DATABASE_URL (it would start an embedded database inside the container)"
        parts = urlsplit(url)
        assert parts.scheme.startswith("postgres") and parts.hostname == "postgres", (
            f"{name}'s DATABASE_URL {url!r} does not point at the postgres service")
        assert "production" in (env.get("SHOUHU_ENV") or ""), f"{name} does not default SHOUHU_ENV to production"


def test_the_audit_key_and_the_services_role_password_are_required_and_shared(services: dict[str, dict[str, Any]]) -> None:
    """Migration and services get one SHOUHU_AUDIT_KEY and SHOUHU_SERVICE_DB_PASSWORD, required, with no default."""
    # No default: it would be a placeholder secret; and one key per container would break the chain.
    for variable in ("SHOUHU_AUDIT_KEY", "SHOUHU_SERVICE_DB_PASSWORD"):
        values = {_environment(services[name]).get(variable) for name in IMAGE_SERVICES}
        assert len(values) == 1, f"{variable} differs between containers: {values}"
        value = values.pop() or ""
        assert re.fullmatch(rf"\$\{{{variable}:\?[^}}]+\}}", value), f"{variable} is {value!r}, not required"


@pytest.mark.slow
@pytest.mark.parametrize(("service", "args", "default_profile"),
                         [pytest.param(*case, id=case[0]) for case in _shouhu_commands()])
def test_compose_commands_exist_in_the_cli(service: str, args: list[str], default_profile: bool) -> None:
    """Every `shouhu ...` command in docker-compose.yml is a real CLI command that accepts those options."""
    assert args, f"{service} runs a bare `shouhu`"
    exists = _cli(args[0], "--help")
    if exists.returncode != 0 and not default_profile and args[0] == "sandbox":
        pytest.skip("`shouhu sandbox` arrives with issue #3; the sandbox profile's command is checked once it exists")
    assert exists.returncode == 0, f"`shouhu {args[0]}` (used by {service}) is not a CLI command:\n{exists.stderr}"
    # --help is eager, so this exits 0 only if every argument and option before it parses.
    parsed = _cli(*args, "--help")
    assert parsed.returncode == 0, f"`shouhu {shlex.join(args)}` (used by {service}) is rejected:\n{parsed.stderr}"


def test_compose_commands_cover_every_service() -> None:
    """The CLI check above really sees the compose file's commands (it is not silently empty)."""
    checked = {service for service, _, _ in _shouhu_commands()}
    assert set(IMAGE_SERVICES) <= checked, f"commands found only for {sorted(checked)}"


# --- the replica set ---------------------------------------------------------------------------------------------

CADDYFILE = ROOT / "infra" / "Caddyfile"
SERVICE_PORTS = {"dispatcher": "8000", "bot": "8001", "callcenter": "8002"}


def _default(value: str | None) -> str:
    """The value compose uses when the variable is unset: `${NAME:-default}` gives default, a literal itself."""
    found = re.fullmatch(r"\$\{\w+:-([^}]*)\}", value or "")
    return found.group(1) if found else (value or "")


def _proxied() -> dict[str, tuple[str, str]]:
    """Caddyfile: listening port -> (service name, port) of the `dynamic a` upstreams in that site block."""
    sites: dict[str, tuple[str, str]] = {}
    site = None
    for line in CADDYFILE.read_text(encoding="utf-8").splitlines():
        if head := re.match(r"^:(\d+)\s*\{", line):
            site = head.group(1)
        elif (upstream := re.match(r"^\s+dynamic a (\S+) (\d+)", line)) and site:
            sites[site] = (upstream.group(1), upstream.group(2))
    return sites


@pytest.mark.parametrize("name", APP_SERVICES)
def test_each_service_runs_two_replicas_by_default(services: dict[str, dict[str, Any]], name: str) -> None:
    """`docker compose up` starts two replicas of every service (deploy.replicas), not one."""
    assert (services[name].get("deploy") or {}).get("replicas") == 2, f"{name} does not default to 2 replicas"


def test_the_sandbox_stays_one_process(services: dict[str, dict[str, Any]]) -> None:
    """The sandbox keeps chats and calls in memory: two of them would split Telegram and Twilio in halves."""
    assert (services["sandbox"].get("deploy") or {}).get("replicas", 1) == 1


def test_one_proxy_fronts_each_services_replicas_by_name(services: dict[str, dict[str, Any]]) -> None:
    """The proxy mounts infra/Caddyfile, which sends each port to its service's replicas (found by DNS name)."""
    proxy = services["proxy"]
    assert any(str(v).startswith("./infra/Caddyfile:") for v in proxy.get("volumes") or []), proxy.get("volumes")
    assert (proxy.get("deploy") or {}).get("replicas", 1) == 1  # one address
    sites = _proxied()
    for name, port in SERVICE_PORTS.items():
        assert sites.get(port) == (name, port), f"the proxy's :{port} goes to {sites.get(port)}, not {name}:{port}"
        assert port in [_container_port(p) for p in proxy.get("ports") or []], f"the proxy does not publish {port}"


def test_webhooks_reach_every_replica_through_the_proxy(services: dict[str, dict[str, Any]]) -> None:
    """Telegram's updates and Twilio's callbacks go to the proxy's bot and callcenter ports, with one shared secret."""
    sites = _proxied()
    for name in APP_SERVICES:
        env = _environment(services[name])
        webhook = urlsplit(_default(env.get("TELEGRAM_WEBHOOK_URL")))
        assert (webhook.hostname, webhook.path) == ("proxy", "/telegram/webhook"), env.get("TELEGRAM_WEBHOOK_URL")
        assert sites[str(webhook.port)][0] == "bot"
        # Webhook mode refuses every update without a secret, and each replica must check the same one.
        assert re.fullmatch(r"\$\{TELEGRAM_WEBHOOK_SECRET:\?[^}]+\}", env.get("TELEGRAM_WEBHOOK_SECRET") or "")
        public = urlsplit(_default(env.get("CALLCENTER_PUBLIC_URL")))
        assert public.hostname == "proxy" and sites[str(public.port)][0] == "callcenter", env.get("CALLCENTER_PUBLIC_URL")


def test_the_replicas_pools_fit_in_max_connections(services: dict[str, dict[str, Any]]) -> None:
    """Every replica's pool at its fullest (2 x SHOUHU_DB_POOL_SIZE, plus LISTEN and the bot's lock) fits the server."""
    command = " ".join(_command(services["postgres"]))
    max_connections = int(_default(re.search(r"max_connections=(\S+)", command).group(1).strip('"')))
    needed = 0
    for name in APP_SERVICES:
        pool = int(_default(_environment(services[name]).get("SHOUHU_DB_POOL_SIZE")))
        needed += services[name]["deploy"]["replicas"] * (2 * pool + 2)
    assert needed + 3 <= max_connections, f"{needed} connections (+3 reserved) > max_connections {max_connections}"


def test_docker_compose_accepts_the_file() -> None:
    """`docker compose config` (or docker-compose) parses and validates the file, where one is installed."""
    import shutil

    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "SHOUHU_AUDIT_KEY": "k" * 32, "SHOUHU_SERVICE_DB_PASSWORD": "p",
           "TELEGRAM_WEBHOOK_SECRET": "s"}
    for argv in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(argv[0]) and subprocess.run([*argv, "version"], capture_output=True, env=env,
                                                    timeout=60).returncode == 0:
            done = subprocess.run([*argv, "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True,
                                  env=env, cwd=ROOT, timeout=60)
            assert done.returncode == 0, done.stderr
            return
    pytest.skip("neither `docker compose` nor docker-compose is installed")


# --- infra/Dockerfile and .dockerignore ---------------------------------------------------------------------------


def test_dockerfile_installs_the_project_and_serves_by_default() -> None:
    """The image installs the package from pyproject.toml and its default command serves a service."""
    assert DOCKERFILE.is_file(), f"{DOCKERFILE} is missing"
    instructions = _dockerfile_instructions()
    base = next(arguments for instruction, arguments in instructions if instruction == "FROM")
    assert base.split()[0].startswith("python:3.11"), f"base image {base!r} is not Python 3.11"
    copied = " ".join(arguments for instruction, arguments in instructions if instruction in ("COPY", "ADD"))
    for source in ("pyproject.toml", "shared", "services"):
        assert re.search(rf"(^|\s){source}\b", copied), f"the Dockerfile does not copy {source}"
    runs = [arguments for instruction, arguments in instructions if instruction == "RUN"]
    assert any(re.search(r"\bpip3? install\b(?:\s+-{1,2}[\w-]+(?:=\S+)?)*\s+(\.|/\S+)(\s|$)", run) for run in runs), (
        f"no RUN installs the project with pip: {runs}")
    launch = [_exec_or_shell(arguments) for instruction, arguments in instructions
              if instruction in ("ENTRYPOINT", "CMD")]
    assert launch, "the Dockerfile has no CMD or ENTRYPOINT"
    default = [part for argv in launch for part in argv]
    assert default[:2] == ["shouhu", "serve"], f"the default command is {default}, not `shouhu serve ...`"


def test_dockerfile_does_not_run_as_root() -> None:
    """A compromised service does not get root in its container: the image's final USER is not root."""
    users = [arguments.split(":")[0] for instruction, arguments in _dockerfile_instructions() if instruction == "USER"]
    assert users, "the Dockerfile has no USER line, so the services run as root"
    assert users[-1] not in ("root", "0"), f"the final USER is {users[-1]}"


def test_dockerfile_exposes_the_service_ports() -> None:
    """The image documents the three service ports that compose publishes."""
    exposed = {port.split("/")[0] for instruction, arguments in _dockerfile_instructions()
               if instruction == "EXPOSE" for port in arguments.split()}
    assert {"8000", "8001", "8002"} <= exposed, f"EXPOSE lists {sorted(exposed)}"


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    """The build context leaves out the venv and the embedded database's data under .shouhu/."""
    patterns = {line.strip().strip("/") for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")}
    for required in (".venv", ".shouhu", ".git"):
        assert required in patterns, f".dockerignore does not exclude {required}"
