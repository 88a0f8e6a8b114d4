"""Commands that moved: `python -m OLD.MODULE` answers with one line naming the new command and exits 2.

The layout of issue 23 moved every tool (scripts/ -> analysis/, tools/, benchmarks/, inference/, evals/;
data.tokenize -> data.prep.tokenize, ...). A package that held an old command installs a finder for its
old names (scripts/__init__.py, data/__init__.py), so an old command line or an old report's first line
fails with the new spelling instead of `No module named ...`.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys


class _MovedLoader(importlib.abc.InspectLoader):
    """Loads a module whose only code prints where it went and exits 2 (common/exit_codes.py's USER_ERROR)."""

    def __init__(self, message: str):
        self.message = message

    def get_source(self, fullname: str) -> str:
        return f"import sys\nprint({self.message!r}, file=sys.stderr)\nsys.exit(2)\n"

    def is_package(self, fullname: str) -> bool:
        return False


class MovedModules(importlib.abc.MetaPathFinder):
    """Finds the old dotted names of `moved` (old -> new command) and nothing else."""

    def __init__(self, moved: dict[str, str]):
        self.moved = moved

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.moved:
            return None
        message = f"{fullname} has moved: run `{self.moved[fullname]}` (README.md, 'Layout')"
        return importlib.machinery.ModuleSpec(fullname, _MovedLoader(message))


def install(moved: dict[str, str]) -> None:
    """Answer the old names in `moved` with their new commands (after the real modules: a name that still
    exists is never shadowed)."""
    sys.meta_path.append(MovedModules(moved))
