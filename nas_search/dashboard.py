"""``nas-search dashboard``: optuna-dashboard on 127.0.0.1 with the study's artifacts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from nas_search.errors import UserError
from nas_search.search.study import check_study_name, default_storage_url, driver_url, open_storage


def dashboard_command(study: str, storage: str | None, artifact_dir: str | None, host: str, port: int) -> list[str]:
    """The optuna-dashboard command line for a study (checked: storage reachable)."""
    check_study_name(study)
    url = storage or default_storage_url(study)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise UserError(f"no study database at {url}; run `nas-search run --study {study}` first or pass --storage")
    open_storage(url, heartbeat=False)
    artifacts = Path(artifact_dir or Path("studies") / study / "artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    if not 0 < port < 65536:
        raise UserError(f"bad --port {port}; accepted: 1 to 65535")
    script = Path(sys.executable).parent / "optuna-dashboard"
    program = [str(script)] if script.exists() else [sys.executable, "-c", "from optuna_dashboard._cli import main; main()"]
    return program + [driver_url(url), "--host", host, "--port", str(port), "--artifact-dir", str(artifacts)]


def launch_dashboard(study: str, storage: str | None, artifact_dir: str | None, host: str = "127.0.0.1", port: int = 8080,
                     json_output: bool = False) -> int:
    """Run optuna-dashboard in the foreground until Ctrl-C.

    The process is replaced by optuna-dashboard (``exec``), so a signal sent to it, e.g.
    by a process supervisor, stops the server itself rather than leaving it orphaned.
    With ``json_output`` the URL and study are printed as one JSON line first.
    """
    import json

    from nas_search.cli import json_stream

    command = dashboard_command(study, storage, artifact_dir, host, port)
    url = f"http://{host}:{port}/"
    print(json.dumps({"url": url, "study": study}) if json_output else f"optuna-dashboard on {url} (Ctrl-C to stop)",
          file=json_stream(), flush=True)
    sys.stderr.flush()
    os.execv(command[0], command)
    return 0  # not reached: execv replaces the process
