"""CPU training: keep freed memory for reuse instead of returning it to the OS every step.

glibc serves every allocation above 32 MiB (its largest mmap threshold) with a fresh mmap and
unmaps it on free, so each step's big temporaries (a [tokens, 50304] logits tensor is 100 MiB at
512 tokens) are zero-filled page by page again: on track3_proxy_cpu_v1 that is 208k page faults and
0.34 of 0.95 CPU-seconds per step. With mmap off and a high trim threshold the heap keeps those
pages (8.6k faults, 0.013 s of system time per step; results/benchmarks/track3_proxy_cpu.md).
The process then holds on to its peak heap, which a training process reaches every step anyway.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
TRIM_THRESHOLD_BYTES = 1 << 30         # return free heap top to the OS only above 1 GiB


def keep_freed_memory() -> bool:
    """Switch glibc's malloc to reuse freed memory (idempotent). False where there is no glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
