"""Prefect settings that must be in the environment before ``prefect`` is imported.

Laptop mode (no ``PREFECT_API_URL``): a temporary server (uvicorn + SQLite) started by the first client call,
with a project-local ``PREFECT_HOME`` (``.xcore/prefect``) and a 90 s startup timeout (a fresh database takes
~75 s to migrate; the default is 20 s). Cluster mode: ``PREFECT_API_URL`` names a real server and is used as
is. Telemetry and analytics are off in both. Existing environment values always win.
"""

from __future__ import annotations

import os
from pathlib import Path

TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS": "false",
}


def laptop_mode() -> bool:
    """True when no Prefect server is configured, so a temporary one will be started."""
    return not os.environ.get("PREFECT_API_URL")


def configure(home: Path | str | None = None) -> dict[str, str]:
    """Fill in the Prefect environment (see module docstring); return the values this call set."""
    wanted = dict(TELEMETRY_OFF)
    if laptop_mode():
        wanted.update({
            "PREFECT_HOME": str(Path(home or Path.cwd() / ".xcore" / "prefect").resolve()),
            "PREFECT_SERVER_EPHEMERAL_ENABLED": "true",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        })
    set_now = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(set_now)
    if "PREFECT_HOME" in set_now:
        Path(set_now["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    return set_now
