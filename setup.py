"""Builds the data plane's hot path with mypyc from the package's own source, when it can.

Everything else about the package is in pyproject.toml. Without a C compiler, without mypyc,
or with RINGLB_PURE=1 at build time, nothing is compiled and the same source runs as plain
Python (ringlb.hotpath says at run time which build a process runs).
"""

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import setup

PACKAGE = Path("src/ringlb")


def hot_path_sources() -> list[str]:
    """Returns the modules to compile: the shared types, Maglev's table fill (all of a
    rebuild's cost) and the data plane, not its test fakes."""
    dataplane = sorted(p for p in (PACKAGE / "dataplane").glob("*.py") if p.name != "testing.py")
    fill = PACKAGE / "policies" / "maglev_fill.py"
    return [str(PACKAGE / "model.py"), str(fill), *map(str, dataplane)]


def why_not_compiled() -> str | None:
    """Returns why the hot path is left pure on this machine, or None when it can be built."""
    if os.environ.get("RINGLB_PURE") == "1":
        return "RINGLB_PURE=1"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypyc is not installed"
    return None


def compiled_extensions() -> list:
    """Returns the mypyc extensions, or none (with the reason on stderr)."""
    reason = why_not_compiled()
    if reason is not None:
        print(f"ringlb: hot path left as pure Python: {reason}", file=sys.stderr)
        return []
    from mypyc.build import mypycify

    # Module names come from the paths (src/ringlb/model.py is ringlb.model); one group, so
    # the compiled modules call each other's native classes directly.
    return mypycify(
        ["--ignore-missing-imports", *hot_path_sources()], opt_level="3", group_name="ringlb"
    )


setup(ext_modules=compiled_extensions())
