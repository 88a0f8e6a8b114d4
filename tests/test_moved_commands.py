"""Old commands (scripts.*, data.tokenize, ...) answer with one line naming the new command and exit 2."""
import subprocess
import sys

import pytest

from common.moved import MovedModules
from tests.conftest import REPO


def test_an_old_name_gets_a_module_that_names_the_new_command():
    finder = MovedModules({"old.tool": "python -m new.tool"})
    assert finder.find_spec("old.other") is None  # only the names it was given
    spec = finder.find_spec("old.tool")
    source = spec.loader.get_source("old.tool")
    assert "python -m new.tool" in source and "sys.exit(2)" in source


def test_every_moved_command_names_a_module_that_exists():
    import importlib.util

    import data
    import scripts  # noqa: F401  (installs the finders)
    from common.moved import MovedModules as Finder

    finders = [f for f in sys.meta_path if isinstance(f, Finder)]
    assert finders, "scripts/ and data/ install their moved names"
    for finder in finders:
        for old, new in finder.moved.items():
            module = new.split()[2] if new.startswith("python -m ") else None
            assert module, (old, new)
            target = "analysis.__main__" if module == "analysis" else module
            assert importlib.util.find_spec(target) is not None, f"{old} -> {new}: {target} does not exist"
    assert data  # the data package's own names stay importable


@pytest.mark.e2e
@pytest.mark.parametrize("old,new", [("scripts.summarize", "python -m analysis summarize"),
                                     ("data.tokenize", "python -m data.prep.tokenize")])
def test_an_old_command_fails_in_one_line_with_exit_2(old, new):
    proc = subprocess.run([sys.executable, "-m", old, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"{old} has moved: run `{new}` (README.md, 'Layout')"]
