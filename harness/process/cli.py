"""train.py's process: Hydra's composition errors as one `error:` line, and the exit code.

Hydra reports a bad command line in several lines (a misspelled key even gets the advice to add
`+`, which would store the typo) and exits 1, like a crash. `run_app` runs the Hydra app with
HYDRA_FULL_ERROR=1, so that those errors reach it as exceptions; it prints them as one line naming
the key, the closest valid key or the valid options, and returns 2 (common/exit_codes.py). After
the app returns, the exit code is the largest of the jobs this process ran (harness/process/outcome.py), or
of the whole sweep (harness/process/sweep.py). A user who sets HYDRA_FULL_ERROR=1 gets Hydra's own reports.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable

from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from common import exit_codes
from harness.config.keys import unknown_key_message
from harness.process import outcome, sweep
from harness.process.launch import launcher_rank

_NOISE = ("Set the environment variable HYDRA_FULL_ERROR", "Config search path", "provider=", "full_key:",
          "object_type=", "reference_type=", "To append to your config use")


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return "; ".join(ln for ln in lines if not ln.startswith(_NOISE))


def hydra_error_line(e: BaseException) -> str:
    """One line for an exception Hydra raised while composing the config (no trailing newline)."""
    cause = e.__cause__
    if isinstance(e, MissingConfigException) and e.missing_cfg_file:
        group, _, name = str(e.missing_cfg_file).rpartition("/")
        options = [o for o in (e.options or []) if not o.endswith("_schema")]
        if group and options:
            return f"{group}={name}: no such option; choose one of {', '.join(options)}"
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.full_key:  # a misspelled key
        return unknown_key_message(cause.full_key, cause.object_type, added=False)
    if isinstance(cause, ValidationError):  # a value of the wrong type, or not one of an enum's names
        return f"{_one_line(e).removeprefix('Error merging override ')}: {_one_line(cause)}"
    if isinstance(e, OverrideParseException):
        return f"cannot parse the override {e.override!r}: {_one_line(e.message)}"
    detail = _one_line(e) + (f": {_one_line(cause)}" if isinstance(cause, OmegaConfBaseException) else "")
    return detail.removeprefix("In 'config': ")


def run_app(app: Callable[[], None]) -> int:
    """Run the Hydra app `app` (a @hydra.main function); return this process's exit code."""
    previous = os.environ.get("HYDRA_FULL_ERROR")
    ours = previous != "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
    except (HydraException, OmegaConfBaseException) as e:
        if not ours:
            raise
        if launcher_rank() == 0:  # every rank composes the same config: one line is enough
            print(f"error: {hydra_error_line(e)}", file=sys.stderr, flush=True)
            sweep.print_partial_summary()  # a sweep whose job N could not be composed: jobs 0..N-1 ran
        return exit_codes.ERROR
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous
    return max(outcome.exit_code(), sweep.exit_code())
