"""Which build of the hot path runs (ringlb.hotpath), checked in fresh interpreters: the
choice changes how every later ringlb import loads, so it is not made in the test process."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ringlb

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
CHOOSE = (
    "import sys; from pathlib import Path; from ringlb import hotpath;"
    " print(hotpath.choose(Path(sys.argv[1])))"
)


def choose(package: Path, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "RINGLB_PURE"} | env
    done = subprocess.run(
        [sys.executable, "-c", CHOOSE, str(package)],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A package with one module and an extension file beside it, built after the source."""
    (tmp_path / "forward.py").write_text("")
    (tmp_path / f"forward{SUFFIX}").write_bytes(b"")
    os.utime(tmp_path / "forward.py", (1_000_000, 1_000_000))
    os.utime(tmp_path / f"forward{SUFFIX}", (2_000_000, 2_000_000))
    return tmp_path


def test_a_build_newer_than_its_sources_is_used(package: Path) -> None:
    assert choose(package) == "compiled (mypyc)"


def test_pure_is_forced_by_the_variable(package: Path) -> None:
    assert choose(package, RINGLB_PURE="1") == "pure Python (RINGLB_PURE=1)"


def test_a_source_edited_after_the_build_runs_as_source(package: Path) -> None:
    os.utime(package / "forward.py")  # now: long after the extension was written
    assert choose(package) == (
        "pure Python (forward.py edited after the build; `make` rebuilds it)"
    )


def test_without_extensions_it_is_pure(tmp_path: Path) -> None:
    (tmp_path / "forward.py").write_text("")
    assert choose(tmp_path) == "pure Python (not compiled)"


def test_pure_means_every_ringlb_module_loads_from_its_source() -> None:
    environment = os.environ | {"RINGLB_PURE": "1"}
    code = "import ringlb.dataplane.forward as f, ringlb.model as m; print(f.__file__, m.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    )
    assert [Path(p).suffix for p in done.stdout.split()] == [".py", ".py"]


@pytest.mark.skipif(
    os.environ.get("RINGLB_REQUIRE_COMPILED") != "1" or os.environ.get("RINGLB_PURE") == "1",
    reason="the compiled build is required only in CI's first pass (RINGLB_REQUIRE_COMPILED=1)",
)
def test_ci_runs_the_compiled_build() -> None:
    assert ringlb.BUILD == "compiled (mypyc)"
