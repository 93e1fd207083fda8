"""Docker test helpers: the engine check, `make` targets, cleanup by label."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OWNER_LABEL = "ringlb.owner"


def engine_problem() -> str | None:
    """Returns why no Docker engine can be used here, or None when one answers."""
    try:
        import docker
    except ImportError:
        return "the docker Python package is not installed (pip install -e '.[dev]')"
    try:
        client = docker.from_env(timeout=10)
        client.ping()
        client.close()
    except Exception as exc:
        return f"no Docker engine reachable ({str(exc).splitlines()[0][:120]})"
    return None


def remove_owned(client, owner: str) -> None:
    """Removes every container and network labelled `ringlb.owner=<owner>` (never fails)."""
    for container in client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner}"}):
        with contextlib.suppress(Exception):
            container.remove(force=True)
    for network in client.networks.list(filters={"label": f"{OWNER_LABEL}={owner}"}):
        with contextlib.suppress(Exception):
            network.remove()


def make(target: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    """Runs `make <target>` in the repository; raises with its output when it fails."""
    done = subprocess.run(
        ["make", "--no-print-directory", target],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"make {target} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return done
