"""Side by side: a speedrun record's own script and our experiment, same data, GPUs and steps.

    python -m benchmarks.vs_reference.run --reference ../shared/reference/modded-nanogpt/record12_flexattn.py \
        --experiment record12_flexattn --data /data/fineweb10B --steps 200 --gpus 1

What it does, printing each action:
1. makes a scratch folder (OUT/reference) with data/fineweb10B linked to --data (the scripts read
   `data/fineweb10B/fineweb_{train,val}_*.bin` relative to where they run) and a copy of the script
   with the edits a user would make, each printed:
   - stop after step N with the schedule unchanged (`last_step` also true at step N: a final
     validation at N, then the loop ends), when --steps is below the script's step count;
   - the validation tokens, with --val-tokens (a small sample cannot hold 10,485,760 tokens);
   fewer GPUs need no edit in these scripts (records 4-12 accumulate gradients, record 20 slices
   each step's tokens per rank); a GPU count that does not divide the record's 8 is refused;
2. runs it under torchrun (--gpus processes) in the scratch folder -> OUT/reference.log;
3. runs train.py experiment=E on the same data, GPUs and steps (train.stop_after_step=N, the same
   validation tokens and cadence) -> OUT/ours (run folder) and OUT/ours.log;
4. parses both logs and writes OUT/report.md and OUT/report.png (benchmarks/vs_reference/report.py):
   step time (ours / reference), compile time, wall time, peak memory and the val loss at every
   step both validated.
A run that fails or passes --timeout is stopped and reported with what its log holds.
--dry-run does step 1 and prints both commands (no GPU needed); --report-only redoes step 4 from the
logs of an earlier call (e.g. fetched from a GPU machine without matplotlib: the PNG is made here).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.vs_reference.report import RunResult, parse_ours, parse_reference_log, write_report
from common.paths import REPO

RECORD_GPUS = 8  # every record ran on 8 GPUs
STOP_LINE = re.compile(r"^(?P<indent>\s*)last_step = \(step == (?P<total>[\w.]+)\)\s*$", re.M)
FIELD = r"^(?P<head>\s*{name}\s*(?::\s*\w+\s*)?=\s*)(?P<value>[0-9*+ ]+?)(?P<tail>\s*(?:#.*)?)$"


class VsReferenceError(RuntimeError):
    """Bad input or a script this tool cannot edit; the message names the fix."""


def script_field(text: str, name: str) -> int:
    """Value of a Hyperparameters field such as `val_tokens : int = 10485760` (simple arithmetic allowed)."""
    m = re.search(FIELD.format(name=name), text, re.M)
    if not m:
        raise VsReferenceError(f"the reference script has no `{name} = ...` field: "
                               "is it a modded-nanogpt record script?")
    return int(eval(compile(ast.parse(m["value"], mode="eval"), name, "eval"), {"__builtins__": {}}))


def edit_script(text: str, steps: int | None, val_tokens: int | None,
                compile_kw: bool = True) -> tuple[str, list[str]]:
    """The script with the stop and val-token edits; returns (text, one line per edit).
    compile_kw=False: the target torch's create_block_mask has no `_compile` argument (record 12 passes it)."""
    edits = []
    if not compile_kw and ", _compile=True)" in text:
        text = text.replace(", _compile=True)", ")")
        edits.append("this torch's create_block_mask has no `_compile` argument: `, _compile=True)` -> `)`")
    total = script_field(text, "num_iterations")
    if steps is not None and steps < total:
        found = STOP_LINE.findall(text)
        if len(found) != 1:
            raise VsReferenceError("cannot find the line `last_step = (step == ...)` once in the reference script")
        old = STOP_LINE.search(text)[0]
        new = f"{old.rstrip()} or step == {steps}  # vs_reference: stop after step {steps}, schedule unchanged"
        text = text.replace(old, new)
        edits.append(f"stop after step {steps} of {total} (schedule unchanged): `{old.strip()}` -> `{new.strip()}`")
    if val_tokens is not None and val_tokens != script_field(text, "val_tokens"):
        m = re.search(FIELD.format(name="val_tokens"), text, re.M)
        new = f"{m['head']}{val_tokens}{m['tail']}"
        text = text[:m.start()] + new + text[m.end():]
        edits.append(f"validation tokens: `{m[0].strip()}` -> `{new.strip()}`")
    return text, edits


def torch_has_compile_kw(python: str) -> bool:
    """Whether the interpreter's torch has create_block_mask(..., _compile=...) (older versions do)."""
    probe = ("import inspect; from torch.nn.attention.flex_attention import create_block_mask as c; "
             "print('_compile' in inspect.signature(c).parameters)")
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        return True
    return "False" not in out


def gpu_plan(text: str, gpus: int) -> str:
    """How the script runs on `gpus` GPUs without an edit (raises when it cannot)."""
    if gpus < 1 or RECORD_GPUS % gpus:
        raise VsReferenceError(f"--gpus {gpus}: use 1, 2, 4 or 8 (the record's 8 GPUs' batch must split evenly)")
    if re.search(FIELD.format(name="device_batch_size"), text, re.M):
        seqs, per_gpu = script_field(text, "batch_size"), script_field(text, "device_batch_size")
        return (f"no edit for {gpus} GPU(s): the script accumulates {seqs // (per_gpu * gpus)} micro-batches of "
                f"{per_gpu} sequences per step")
    return f"no edit for {gpus} GPU(s): the script gives each rank 1/{gpus} of every step's tokens"


def check_data(data: Path, steps: int, text: str) -> None:
    """The data folder holds both splits; a loader that never cycles (record 20's) has enough tokens."""
    from data.shards import read_header
    train, val = sorted(data.glob("fineweb_train_*.bin")), sorted(data.glob("fineweb_val_*.bin"))
    if not train or not val:
        raise VsReferenceError(f"--data {data} needs fineweb_train_*.bin and fineweb_val_*.bin shards "
                               "(python -m data.prep.fineweb download --out DIR)")
    if "def distributed_data_generator" in text and "iter(files)" in text:  # record 20: one pass, then StopIteration
        have = sum(read_header(f).num_tokens for f in train)
        need = steps * 524_288 + len(train) * 524_290  # every step's tokens, plus a tail per shard at most
        if have < need:
            raise VsReferenceError(f"the train shards in {data} hold {have:,} tokens; {steps} steps of this script "
                                   f"need up to {need:,} and its loader does not cycle: lower --steps or make more "
                                   "shards (python -m tools.repeat_shards)")


def prepare_scratch(out: Path, reference: Path, data: Path, steps: int | None, val_tokens: int | None,
                    gpus: int, compile_kw: bool = True) -> Path:
    """OUT/reference/ with data/fineweb10B linked and the edited script; returns the script's path."""
    text = reference.read_text()
    scratch = out / "reference"
    (scratch / "data").mkdir(parents=True, exist_ok=True)
    link = scratch / "data" / "fineweb10B"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(data.resolve(), target_is_directory=True)
    print(f"scratch folder {scratch}: data/fineweb10B -> {data.resolve()}")
    edited, edits = edit_script(text, steps, val_tokens, compile_kw)
    for line in edits:
        print(f"edit: {line}")
    print(gpu_plan(text, gpus))
    target = scratch / reference.name
    target.write_text(edited)
    return target


def run_logged(cmd: list[str], cwd: Path, log: Path, timeout: float, tag: str, env: dict | None = None) -> RunResult:
    """Run cmd (its own process group), echo and save its output; stop it after `timeout` seconds."""
    print(f"[{tag}] $ {' '.join(cmd)}  (in {cwd})", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    timed_out = threading.Event()

    def stop():
        timed_out.set()
        os.killpg(proc.pid, signal.SIGTERM)
        time.sleep(10)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, stop)
    timer.start()
    with open(log, "w", encoding="utf-8") as f:
        for line in proc.stdout:
            f.write(line)
            f.flush()
            print(f"[{tag}] {line}", end="", flush=True)
    rc = proc.wait()
    timer.cancel()
    wall = time.perf_counter() - t0
    status = "timed out" if timed_out.is_set() else ("ok" if rc == 0 else f"exit code {rc}")
    print(f"[{tag}] {status}, {wall:.0f} s", flush=True)
    return RunResult(status=status, wall_s=wall)


def torchrun(python: str, gpus: int) -> list[str]:
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.vs_reference.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, required=True, help="the record's script (run by path, never imported)")
    ap.add_argument("--experiment", required=True, help="our experiment file, e.g. record12_flexattn")
    ap.add_argument("--data", type=Path, required=True, help="folder of fineweb_train_*.bin / fineweb_val_*.bin")
    ap.add_argument("--steps", type=int, default=None, help="stop both after this step (default: the whole run)")
    ap.add_argument("--gpus", type=int, default=1)
    ap.add_argument("--val-tokens", type=int, default=None, help="validation tokens for both (default: the script's)")
    ap.add_argument("--device", default="cuda", help="our device= (cpu: the orchestration check with a fake script)")
    ap.add_argument("--out", type=Path, default=None, help="default outputs/vs_reference/<experiment>")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run before it is stopped")
    ap.add_argument("--python", default=sys.executable, help="interpreter for both runs")
    ap.add_argument("--dry-run", action="store_true", help="prepare the scratch folder, print the edits and commands")
    ap.add_argument("--report-only", action="store_true", help="rewrite OUT/report.* from an earlier call's logs")
    ap.add_argument("--title", default=None, help="report title (default: names the script and experiment)")
    ap.add_argument("overrides", nargs="*", help="extra train.py overrides for our run (after --)")
    args = ap.parse_args(argv)
    try:
        return run(args)
    except VsReferenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args) -> int:
    reference, data = args.reference.resolve(), args.data.expanduser()
    if not reference.is_file():
        raise VsReferenceError(f"--reference {args.reference} is not a file")
    if args.steps is not None and args.steps < 1:
        raise VsReferenceError(f"--steps {args.steps} must be >= 1")
    text = reference.read_text()
    total = script_field(text, "num_iterations")
    steps = min(args.steps or total, total)
    if not args.report_only:
        check_data(data, steps, text)
    val_tokens = args.val_tokens or script_field(text, "val_tokens")
    val_every = script_field(text, "val_loss_every")
    out = (args.out or REPO / "outputs" / "vs_reference" / args.experiment).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ours_dir, ref_log, status_file = out / "ours", out / "reference.log", out / "runs.json"
    overrides = [f"experiment={args.experiment}", f"data.dir={data.resolve()}", f"device={args.device}",
                 f"train.val_tokens={val_tokens}", f"train.val_every={val_every}", f"hydra.run.dir={ours_dir}",
                 *([f"train.stop_after_step={steps}"] if steps < total else []), *args.overrides]
    ours_cmd = [*torchrun(args.python, args.gpus), str(REPO / "train.py"), *overrides]

    compile_kw = True
    if args.report_only:  # the logs of an earlier call (e.g. fetched from a GPU machine)
        runs = json.loads(status_file.read_text()) if status_file.exists() else {}
        ref_run, ours_run = (RunResult(**runs.get(k, {"status": "from logs"})) for k in ("reference", "ours"))
        compile_kw = runs.get("compile_kw", True)
    else:
        compile_kw = torch_has_compile_kw(args.python)
        script = prepare_scratch(out, reference, data, steps, args.val_tokens, args.gpus, compile_kw)
        ref_cmd = [*torchrun(args.python, args.gpus), script.name]
        if args.dry_run:
            print(f"dry run: would run in {script.parent}: {' '.join(ref_cmd)}")
            print(f"dry run: would run in {REPO}: {' '.join(ours_cmd)}")
            return 0
        ref_run = run_logged(ref_cmd, script.parent, ref_log, args.timeout, "reference")
        if ours_dir.exists():  # this tool's own output of an earlier call: start over
            print(f"removing the earlier run folder {ours_dir}")
            shutil.rmtree(ours_dir)
        ours_run = run_logged(ours_cmd, REPO, out / "ours.log", args.timeout, "ours")
        status_file.write_text(json.dumps({"reference": vars(ref_run), "ours": vars(ours_run),
                                           "compile_kw": compile_kw}))

    ref = parse_reference_log(ref_log.read_text(encoding="utf-8", errors="replace") if ref_log.exists() else "")
    ref.run = ref_run
    ours = parse_ours(ours_dir)
    ours.run = ours_run
    meta = {"title": args.title or f"{reference.stem} vs experiment={args.experiment}",
            "reference": str(args.reference), "experiment": args.experiment, "data": str(data), "steps": steps,
            "of_steps": total, "gpus": args.gpus, "device": args.device, "val_tokens": val_tokens,
            "val_every": val_every, "edits": edit_script(text, steps, args.val_tokens, compile_kw)[1],
            "gpu_plan": gpu_plan(text, args.gpus), "overrides": overrides}
    max_steps = re.search(r"^\s*max_steps:\s*(\d+)", (ours_dir / "config.yaml").read_text(), re.M) \
        if (ours_dir / "config.yaml").exists() else None
    if max_steps and int(max_steps[1]) != total:
        meta["note"] = (f"**Warning: different schedules.** experiment={args.experiment} has train.max_steps="
                        f"{max_steps[1]}, the script {total} steps: lr (and window) schedules differ.")
    write_report(out, meta, ref, ours)
    return 0 if ref_run.status in ("ok", "from logs") and ours_run.status in ("ok", "from logs") else 1


if __name__ == "__main__":
    sys.exit(main())
