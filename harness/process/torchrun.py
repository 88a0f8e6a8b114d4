"""`python -m harness.process.torchrun ARGS`: torchrun (same arguments), ending a stopped run with exit 0.

A SIGTERM or SIGINT sent to torchrun itself (Kubernetes and most schedulers signal the launcher) reaches
its elastic agent as a SignalException: the agent forwards the signal to the ranks, which finish the step,
write their checkpoint and exit 0 (harness/process/preemption.py), and then re-raises it, so torchrun prints
a `SignalException ... got signal: 15` traceback and exits 1, as if the run had crashed. This launcher runs
the same agent and, for that case only, prints one line and exits 0 when every rank exited 0 (the same
command resumes), else 1 naming each rank's exit code. Everything else (a failed rank's report and exit 1,
elastic restarts, rendezvous) is torchrun's own.
"""
from __future__ import annotations

import signal
import sys
from typing import ClassVar

from torch.distributed import run as torch_run
from torch.distributed.elastic.agent.server.local_elastic_agent import LocalElasticAgent
from torch.distributed.elastic.multiprocessing import SignalException
from torch.distributed.launcher import api as launcher_api

from common import exit_codes


class _Agent(LocalElasticAgent):
    """torchrun's agent, remembering how its ranks exited when it shut them down."""

    exit_codes: ClassVar[dict[int, int | None]] = {}  # local rank -> exit code (negative: killed by that signal)

    def _shutdown(self, death_sig: signal.Signals = signal.SIGTERM, timeout: int = 30) -> None:
        context = self._pcontext
        super()._shutdown(death_sig, timeout)
        for local_rank, handler in getattr(context, "subprocess_handlers", {}).items():
            _Agent.exit_codes[local_rank] = handler.proc.poll()


def stopped_line(sigval: signal.Signals, codes: dict[int, int | None]) -> tuple[int, str]:
    """(exit code, the one line to print) after torchrun got `sigval` and its ranks exited with `codes`."""
    name = signal.Signals(sigval).name
    if codes and all(code == 0 for code in codes.values()):
        return exit_codes.OK, (f"torchrun: {name} received: every rank stopped after writing its checkpoint "
                               "(exit 0); the same command resumes")
    listed = ", ".join(f"rank {r}: {c}" for r, c in sorted(codes.items())) or "none started"
    return exit_codes.CRASH, f"torchrun: {name} received: not every rank stopped cleanly ({listed})"


def _run(args) -> None:
    try:
        torch_run_original(args)
    except SignalException as e:
        code, line = stopped_line(e.sigval, _Agent.exit_codes)
        print(line, file=sys.stderr, flush=True)
        raise SystemExit(code) from None  # torchrun's @record returns quietly on 0, exits with it otherwise


torch_run_original = torch_run.run


def main(argv: list[str] | None = None) -> None:
    launcher_api.LocalElasticAgent = _Agent  # launch_agent builds the agent by this name
    torch_run.run = _run                      # torchrun's main() calls run(args) inside its error recorder
    torch_run.main(argv)


if __name__ == "__main__":
    main()
