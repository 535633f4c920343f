"""Threads, and numbers that do not depend on how many there are.

oneDNN's convolutions sum in an order that depends on the intra-op thread count, so a model
trained or evaluated on 2 threads gives (slightly) other numbers than on 1 or 32. The default
engine therefore runs every computation that decides a number on one torch thread and gets its
speed from running independent computations side by side (client updates, evaluation batches):
the results are then the same on a 2-core laptop, a 32-core node and a busy machine, and no
thread waits at an OpenMP barrier for a core another process holds.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which a batch system sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_threads(num_threads: int) -> int:
    """The `num_threads` parameter as a count: 0 means every available core."""
    return num_threads or available_cores()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch's intra-op thread count set to `n` (0 = left as it is) and restored afterwards,
    so a notebook kernel or a test process goes on with the count it had."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def one_thread_pool(workers: int) -> ThreadPoolExecutor:
    """`workers` threads, each with one torch thread (torch releases the GIL in its kernels)."""
    _limit_malloc_arenas()
    return ThreadPoolExecutor(max(1, workers), initializer=torch.set_num_threads, initargs=(1,))


_ARENAS_LIMITED = False


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates under contention a heap (arena) of its own and
    keeps what it freed there: worker threads' activations then pile up in several heaps, and
    the default run's peak memory grew by ~30 MB a round (1.40 GB after 10 rounds, 1.25 GB with
    two arenas, at the same speed). Once per process; a no-op where libc is not glibc."""
    global _ARENAS_LIMITED
    if _ARENAS_LIMITED:
        return
    _ARENAS_LIMITED = True
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def one_thread_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """[fn(x) for x in items], each call on one torch thread, on up to `workers` threads at
    once. Each call computes what it computes on one thread anywhere, so the results do not
    depend on `workers`."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        with torch_threads(1):
            return [fn(x) for x in items]
    with one_thread_pool(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))
