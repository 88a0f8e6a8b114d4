"""A stand-in for a modded-nanogpt record script, for benchmarks/vs_reference/run.py's CPU tests: the same
Hyperparameters fields, loop line and log format (no model: it sleeps instead of training)."""
import glob
import os
import time
from dataclasses import dataclass


@dataclass
class Hyperparameters:
    input_bin : str = 'data/fineweb10B/fineweb_train_*.bin'  # as the records: relative to where it runs
    input_val_bin : str = 'data/fineweb10B/fineweb_val_*.bin'
    batch_size : int = 8*2  # sequences per step over all GPUs
    device_batch_size : int = 2
    num_iterations : int = 40
    val_loss_every : int = 10
    val_tokens : int = 10485760


args = Hyperparameters()
assert glob.glob(args.input_bin) and glob.glob(args.input_val_bin), "data/fineweb10B is not linked"
world = int(os.environ["WORLD_SIZE"])  # run under torchrun
training_time_ms = 0
t0 = time.perf_counter()
for step in range(args.num_iterations + 1):
    last_step = (step == args.num_iterations)
    if step == 10:
        training_time_ms = 0
        t0 = time.perf_counter()
    timed_steps = float('nan') if step <= 11 else (step - 10) + 1
    if last_step or (args.val_loss_every > 0 and step % args.val_loss_every == 0):
        training_time_ms += 1000 * (time.perf_counter() - t0)
        val_loss = 4.0 + 6.0 / (1 + step) + args.val_tokens / 1e9  # depends on the edited val_tokens
        print(f'step:{step}/{args.num_iterations} val_loss:{val_loss:.4f} train_time:{training_time_ms:.0f}ms step_avg:{training_time_ms/(timed_steps-1):.2f}ms')
        t0 = time.perf_counter()
    if last_step:
        break
    time.sleep(0.5 if step == 0 else 0.02)  # "compilation" in the first step
    approx_time = training_time_ms + 1000 * (time.perf_counter() - t0)
    print(f"step:{step+1}/{args.num_iterations} train_loss:{5.0:.4f} train_time:{approx_time:.0f}ms step_avg:{approx_time/timed_steps:.2f}ms")
print("peak memory consumption: 123 MiB")
