"""The analysis tools behind one command: `python -m analysis SUBCOMMAND ARGS`.

    python -m analysis summarize outputs/multirun/2026-01-02_03-04-05-123456
    python -m analysis compare outputs/runs/A --record record05_modernarch
    python -m analysis significance outputs/runs/seed*
    python -m analysis mfu outputs/gpu_checks/gpt2_adamw_compile

Each subcommand is the module of that name (`python -m analysis.summarize ARGS` is the same run);
`python -m analysis SUBCOMMAND --help` shows its arguments. Exit status: the subcommand's; 2 for a
missing or unknown subcommand.
"""
from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = ("summarize", "compare", "significance", "mfu")  # modules of analysis/, each with main(argv)


def usage() -> str:
    """This docstring's first line, then one line per subcommand: its module docstring's first line."""
    lines = [__doc__.splitlines()[0], "", "subcommands:"]
    for name in SUBCOMMANDS:
        lines.append(f"  {name:<13} {importlib.import_module(f'analysis.{name}').__doc__.splitlines()[0]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not argv or argv[0] not in SUBCOMMANDS:
        given = f"unknown subcommand {argv[0]!r}" if argv else "no subcommand given"
        print(f"error: {given}: choose one of {', '.join(SUBCOMMANDS)} (python -m analysis --help)", file=sys.stderr)
        return 2
    code = importlib.import_module(f"analysis.{argv[0]}").main(argv[1:])
    return code or 0  # summarize's main returns None on success


if __name__ == "__main__":
    sys.exit(main())
