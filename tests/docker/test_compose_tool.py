"""scripts/compose.sh where no compose tool can be had: it says what to install (the case
with a tool is every `make up`; the install itself, as root with apt-get, was checked by
hand in a Debian container, see docs/docker.md)."""

from __future__ import annotations

import shutil
import subprocess

from dockertest import REPO


def test_without_a_compose_tool_it_says_what_to_install(tmp_path) -> None:
    bin_dir = tmp_path / "bin"  # bash and id only: no docker, docker-compose or apt-get
    bin_dir.mkdir()
    for tool in ("bash", "id"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    done = subprocess.run(
        [str(REPO / "scripts" / "compose.sh"), "up", "-d"],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 127
    assert done.stderr == (
        "compose: no compose tool: install the Docker Compose plugin (`docker compose`) or "
        "Debian's docker-compose (apt-get install docker-compose), as root\n"
    )
