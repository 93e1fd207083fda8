"""Which build of the hot path this process runs: the modules mypyc compiled from the
package's own source (setup.py), or that same source as plain Python.

The compiled modules are extension files beside their `.py`. They are used unless
`RINGLB_PURE=1` is set or a source was edited after the build; then every ringlb module
loads from its `.py`, all of them together: a compiled module calls the native classes of
the others directly, so a mix would hold two copies of a class.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

PURE_ENV = "RINGLB_PURE"
# pip writes an installed wheel's files one after the other: a source up to this much newer
# than its compiled module is the same build, not an edit.
_SAME_BUILD_SECONDS = 5.0


def _compiled_modules(package: Path) -> list[tuple[Path, Path]]:
    """Returns (extension, source) for each compiled module of the package."""
    found = []
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for extension in package.rglob(f"*{suffix}"):
            source = extension.with_name(extension.name[: -len(suffix)] + ".py")
            if source.exists():
                found.append((extension, source))
    return found


class _SourceOnly:
    """A meta path finder that loads ringlb's modules from their `.py` files only."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if not name.startswith("ringlb.") or path is None:
            return None
        for entry in path:
            finder = importlib.machinery.FileFinder(
                entry, (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)
            )
            spec = finder.find_spec(name, target)
            if spec is not None:
                return spec
        return None


def choose(package: Path) -> str:
    """Returns which build runs ("compiled (mypyc)" or "pure Python (why)"), making ringlb's
    later imports load from source when the compiled build is not to be used."""
    compiled = _compiled_modules(package)
    if not compiled:
        return "pure Python (not compiled)"
    if os.environ.get(PURE_ENV) == "1":
        reason = f"{PURE_ENV}=1"
    else:
        edited = [
            source.name
            for extension, source in compiled
            if source.stat().st_mtime > extension.stat().st_mtime + _SAME_BUILD_SECONDS
        ]
        if not edited:
            return "compiled (mypyc)"
        reason = f"{', '.join(sorted(edited))} edited after the build; `make` rebuilds it"
    sys.meta_path.insert(0, _SourceOnly())
    return f"pure Python ({reason})"
