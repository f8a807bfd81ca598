"""CPU allocator tuning for embed calls: keep activation memory freed by one forward pass for the next one.

glibc hands a freed block back to the kernel when it was mmapped (blocks above the mmap threshold) or when the free
space at the top of the heap passes the trim threshold; the next forward pass's activations of the same size then
fault every page in again, freshly zeroed. That cost is large on virtual machines: on the benchmark replica (2 vCPUs,
KVM) 48 texts made ~195k minor faults per run with glibc's defaults and ~10k inside ``freed_memory_kept``, and ran
~10% faster in a process that only embeds.

This changes process-wide state of whoever imports the library (``mallopt`` thresholds; setting one also ends glibc's
dynamic threshold adjustment for the process), so it is opt-in for library users (``EncoderConfig.reuse_cpu_memory``)
and on by default only in the ``e5v-qdrant`` command line, whose process is ours.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading

__all__ = ["glibc", "freed_memory_kept"]

# glibc mallopt parameters (<malloc.h>) and the values ``freed_memory_kept`` uses.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_MMAP_THRESHOLD = 256 << 20  # inside the block: blocks up to this size come from the heap, not fresh mmaps
KEEP_TRIM_THRESHOLD = 1 << 30  # inside the block: free memory at the heap's top is not handed back
AFTER_MMAP_THRESHOLD = 32 << 20  # after it: glibc's own ceiling for its dynamic mmap threshold (64-bit)
AFTER_TRIM_THRESHOLD = 64 << 20  # after it: twice that, as glibc's dynamic scheme sets it

_LOCK = threading.Lock()
_users = 0


@functools.cache
def glibc():
    """The process's C library if it is glibc (the only one with these ``mallopt`` parameters), else ``None``."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    except (OSError, AttributeError, TypeError):  # not Linux/glibc (musl, macOS, Windows)
        return None
    return libc


@contextlib.contextmanager
def freed_memory_kept(enabled: bool = True):
    """Inside the block, memory freed stays in glibc's heap so the next forward pass reuses it without page faults.

    Both thresholds are raised when the first concurrent user enters; when the last one leaves they are set to the
    values glibc's dynamic scheme settles at in a torch process (32 MiB / 64 MiB) and ``malloc_trim`` returns what
    is free, so the process holds no more memory between calls than before. No-op off glibc or when ``enabled`` is
    false.
    """
    global _users
    libc = glibc() if enabled else None
    if libc is None:
        yield
        return
    with _LOCK:
        _users += 1
        if _users == 1:
            libc.mallopt(M_MMAP_THRESHOLD, KEEP_MMAP_THRESHOLD)
            libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)
    try:
        yield
    finally:
        with _LOCK:
            _users -= 1
            if _users == 0:
                libc.mallopt(M_MMAP_THRESHOLD, AFTER_MMAP_THRESHOLD)
                libc.mallopt(M_TRIM_THRESHOLD, AFTER_TRIM_THRESHOLD)
                libc.malloc_trim(0)
