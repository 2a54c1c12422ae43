"""``nas-search dashboard``: optuna-dashboard on 127.0.0.1 with the study's artifacts."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from nas_search.errors import UserError
from nas_search.search.study import check_study_name, default_storage_url, driver_url, open_storage
from nas_search.utils import check_output_path


def dashboard_command(study: str, storage: str | None, artifact_dir: str | None, host: str, port: int) -> list[str]:
    """The optuna-dashboard command line for a study (checked: storage reachable)."""
    check_study_name(study)
    url = storage or default_storage_url(study)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        raise UserError(f"no study database at {url}; run `nas-search run --study {study}` first or pass --storage")
    open_storage(url, heartbeat=False)
    artifacts = Path(artifact_dir or Path("studies") / study / "artifacts")
    check_output_path(artifacts, "--artifact-dir", kind="folder")
    if not 0 < port < 65536:
        raise UserError(f"bad --port {port}; accepted: 1 to 65535")
    check_listen_address(host, port)
    artifacts.mkdir(parents=True, exist_ok=True)
    script = Path(sys.executable).parent / "optuna-dashboard"
    program = [str(script)] if script.exists() else [sys.executable, "-c", "from optuna_dashboard._cli import main; main()"]
    return program + [driver_url(url), "--host", host, "--port", str(port), "--artifact-dir", str(artifacts)]


def check_listen_address(host: str, port: int) -> None:
    """Refuse, before the server starts, a ``--host`` that does not resolve and a ``--port``
    that cannot be bound there (already in use, or privileged): a one-line error."""
    import socket

    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise UserError(
            f"--host {host!r} does not resolve ({reason}); accepted: an address or name of this machine, "
            "e.g. 127.0.0.1 (the default) or 0.0.0.0 (every interface)"
        ) from None
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise UserError(
                f"--port {port} on {host}: {error.strerror}; accepted: a free port (e.g. --port {port + 1})"
            ) from None


def launch_dashboard(
    study: str,
    storage: str | None,
    artifact_dir: str | None,
    host: str = "127.0.0.1",
    port: int = 8080,
    json_output: bool = False,
    stream: TextIO | None = None,
) -> int:
    """Run optuna-dashboard in the foreground until Ctrl-C.

    The process is replaced by optuna-dashboard (``exec``), so a signal sent to it, e.g.
    by a process supervisor, stops the server itself rather than leaving it orphaned.
    With ``json_output`` the URL and study are printed as one JSON line first, to ``stream``
    (standard output by default).
    """
    import json

    command = dashboard_command(study, storage, artifact_dir, host, port)
    url = f"http://{host}:{port}/"
    print(
        json.dumps({"url": url, "study": study}) if json_output else f"optuna-dashboard on {url} (Ctrl-C to stop)",
        file=stream or sys.stdout,
        flush=True,
    )
    sys.stderr.flush()
    os.execv(command[0], command)
    return 0  # not reached: execv replaces the process
