"""Old commands (scripts.*, data.tokenize, ...) answer with one line naming the new command and exit 2."""
import sys


from common.moved import MovedModules


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
