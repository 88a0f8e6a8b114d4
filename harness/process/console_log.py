"""`<run folder>/train.log`: a copy of rank 0's console (stdout and stderr), as the user saw it.

Everything the trainer says goes through print(): the speedrun lines, warnings, the one-line error or
the preemption message, a traceback. `ConsoleLog` tees sys.stdout and sys.stderr into train.log
(appending, so a resumed run's log continues the interrupted one's) while the context is open. A
terminal's status line (redrawn in place with a carriage return, harness/telemetry/metrics.py ConsoleSink) is
left out: the file gets the lines that stay on screen. Output written by C extensions straight to
file descriptor 1 or 2 bypasses sys.stdout and is not copied.
"""
from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

CLEAR_LINE = "\r\x1b[2K"  # what a status line redraw starts with (harness/telemetry/metrics.py)
_BREAKS = re.compile(r"(\r\x1b\[2K|\r\n|\r|\n)")


class _Tee:
    """A text stream that writes to `stream` and copies finished lines to `log`."""

    def __init__(self, stream, log):
        self.stream, self.log, self.pending = stream, log, ""

    def write(self, text: str) -> int:
        n = self.stream.write(text)
        try:
            self._copy(text)
        except (OSError, ValueError):  # a full disk or a closed log must never break the run's own output
            pass
        return n

    def _copy(self, text: str) -> None:
        for piece in _BREAKS.split(text):
            if piece in ("\n", "\r\n"):
                self.log.write(self.pending + "\n")
                self.pending = ""
            elif piece in (CLEAR_LINE, "\r"):  # an in-place redraw erases the line so far
                self.pending = ""
            else:
                self.pending += piece
        self.log.flush()

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding, ...: the real stream's
        return getattr(self.stream, name)


class ConsoleLog:
    """Context manager: while open, sys.stdout and sys.stderr are also copied into `path` (appended)."""

    def __init__(self, path: Path):
        self.path, self.file, self.saved, self.handlers = Path(path), None, None, []

    def __enter__(self) -> "ConsoleLog":
        try:
            self.file = open(self.path, "a", encoding="utf-8")
        except OSError as e:
            print(f"warning: cannot write {self.path} ({e.strerror or e}): the console is not copied to it",
                  file=sys.stderr, flush=True)
            return self
        self.saved = (sys.stdout, sys.stderr)
        tees = {id(sys.stdout): _Tee(sys.stdout, self.file), id(sys.stderr): _Tee(sys.stderr, self.file)}
        sys.stdout, sys.stderr = tees[id(sys.stdout)], tees[id(sys.stderr)]
        self.handlers = [(h, h.stream) for h in logging.root.handlers  # Hydra's console log records too
                         if isinstance(h, logging.StreamHandler) and id(h.stream) in tees]
        for handler, stream in self.handlers:
            handler.setStream(tees[id(stream)])
        return self

    def __exit__(self, *exc) -> None:
        if self.saved is None:
            return
        for tee in (sys.stdout, sys.stderr):
            if isinstance(tee, _Tee) and tee.pending:
                self.file.write(tee.pending + "\n")
        sys.stdout, sys.stderr = self.saved
        for handler, stream in self.handlers:
            handler.setStream(stream)
        self.saved = None
        self.file.close()
