"""Shared pieces of the side-by-side benchmarks: timing, peak memory, workers, tables.

Timing: one warm-up call, then the median of up to ``reps`` calls, each synchronised
(``block_until_ready`` for JAX, ``torch.cuda.synchronize`` on a GPU). The warm-up
call minus the steady-state median is reported as JAX's compile time. Beside wall
time, the process's CPU seconds per call are kept (``cpu_rate``): on a machine shared
with other jobs and pinned to one core, images per CPU-second measure the work
itself, whatever share of the core the other jobs take.

Peak memory on CPU: the process's resident set. The kernel's high-water mark
(``VmHWM``) is reset through ``/proc/self/clear_refs`` after the warm-up call and read
after the timed calls; the figure is that peak minus the resident set measured just
before the warm-up call, with ``malloc_trim`` before each reading so memory freed
earlier does not hide new allocations. Run in a fresh process per configuration
(the default of the benchmarks) the figure is clean; in one shared process it is a
lower bound. On a GPU: the allocator's peak (``torch.cuda.max_memory_allocated``;
JAX's ``peak_bytes_in_use``, which cannot be reset, so only per-process figures hold).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

RESULT_MARKER = "@@result "
GB = 1024**3


@dataclass
class Measurement:
    """One framework's figures for one configuration (``error`` set when it failed)."""

    rate: float | None = None
    cpu_rate: float | None = None
    compile_s: float | None = None
    peak_bytes: int | None = None
    reps: int = 0
    busy_cores: float | None = None
    error: str | None = None


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def release_free_memory() -> None:
    """Hand freed heap pages back to the kernel (glibc ``malloc_trim``), where possible."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class HostMemory:
    """Peak resident-set growth of this process (see the module docstring)."""

    def __init__(self) -> None:
        release_free_memory()
        self.base = _proc_status_kb("VmRSS") * 1024

    def reset_peak(self) -> None:
        """Start a new high-water mark from the current resident set."""
        release_free_memory()
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")

    def peak(self) -> int:
        """Bytes above the starting resident set at the high-water mark."""
        return max(0, _proc_status_kb("VmHWM") * 1024 - self.base)


class TorchCudaMemory:
    """Peak bytes allocated by torch's CUDA caching allocator."""

    def __init__(self) -> None:
        import torch

        self._torch = torch
        torch.cuda.synchronize()
        self.base = torch.cuda.memory_allocated()

    def reset_peak(self) -> None:
        """Start a new peak from the current allocation."""
        self._torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int:
        """Bytes above the starting allocation at the peak."""
        return max(0, self._torch.cuda.max_memory_allocated() - self.base)


class JaxDeviceMemory:
    """Peak bytes in use on JAX's default accelerator (not resettable: one per process)."""

    def __init__(self) -> None:
        import jax

        self._device = jax.devices()[0]
        self.base = self._device.memory_stats().get("bytes_in_use", 0)

    def reset_peak(self) -> None:
        """Nothing to reset: the peak covers the whole process."""

    def peak(self) -> int:
        """Bytes above the starting use at the process's peak."""
        return max(0, self._device.memory_stats().get("peak_bytes_in_use", 0) - self.base)


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    return sum(values), values[3] + values[4]


def busy_cores(window_s: float = 1.0) -> float:
    """Cores kept busy (by anyone) over the next ``window_s`` seconds, from ``/proc/stat``."""
    total, idle = _cpu_times()
    time.sleep(window_s)
    total2, idle2 = _cpu_times()
    return (os.cpu_count() or 1) * (1.0 - (idle2 - idle) / max(total2 - total, 1))


def wait_for_idle(max_wait_s: float, threshold: float = 0.3) -> float | None:
    """Wait (up to ``max_wait_s``) until other processes leave the CPU; return the busy cores seen last.

    On a shared machine a concurrent job slows every thread pool here several-fold,
    so measurements start only on a quiet machine when ``max_wait_s > 0``.
    """
    if max_wait_s <= 0:
        return None
    deadline = time.monotonic() + max_wait_s
    busy = busy_cores()
    while busy > threshold and time.monotonic() < deadline:
        busy = busy_cores()
    return busy


def measure(
    call: Callable[[], Any],
    sync: Callable[[Any], None],
    meter: HostMemory | TorchCudaMemory | JaxDeviceMemory,
    images: int,
    reps: int,
    budget_s: float,
    is_oom: Callable[[BaseException], bool],
    idle_wait_s: float = 0.0,
) -> Measurement:
    """Warm up, then time up to ``reps`` calls (fewer when one call would overrun ``budget_s``).

    With ``idle_wait_s > 0`` the timed calls start only once the machine is quiet
    (:func:`wait_for_idle`); ``busy_cores`` records what other jobs were using then.

    A failure whose exception ``is_oom`` recognises (or a ``MemoryError``) becomes
    ``"fails (X GB)"`` with the peak reached; other exceptions propagate.
    """
    try:
        start = time.perf_counter()
        sync(call())
        first = time.perf_counter() - start
        reps = max(1, min(reps, int(budget_s // max(first, 1e-9))))
        busy = wait_for_idle(idle_wait_s)
        meter.reset_peak()
        times, cpu_times = [], []
        for _ in range(reps):
            start, cpu = time.perf_counter(), time.process_time()
            sync(call())
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu)
    except Exception as error:
        if isinstance(error, MemoryError) or is_oom(error):
            return Measurement(peak_bytes=meter.peak(), error=f"fails ({meter.peak() / GB:.1f} GB)")
        raise
    median = statistics.median(times)
    return Measurement(
        rate=images / median,
        cpu_rate=images / max(statistics.median(cpu_times), 1e-9),
        compile_s=max(0.0, first - median),
        peak_bytes=meter.peak(),
        reps=reps,
        busy_cores=busy,
    )


def limit_host_memory(limit_bytes: int) -> None:
    """Cap this process's private writable memory, so an allocation beyond it fails cleanly."""
    resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, limit_bytes))


def die_with_parent() -> None:
    """Have the kernel end this worker if the benchmark that started it dies (Linux)."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM
    except (OSError, AttributeError):
        pass


def total_host_memory() -> int:
    """Physical memory of the machine, in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def emit_result(payload: dict[str, Any]) -> None:
    """Print a worker's result on one marked stdout line for :func:`run_worker`."""
    print(RESULT_MARKER + json.dumps(payload), flush=True)


def run_worker(argv: Sequence[str], timeout_s: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python argv...`` and return its marked result, or ``{"error": ...}`` if it died."""
    try:
        done = subprocess.run(
            [sys.executable, *argv], capture_output=True, text=True, timeout=timeout_s, env={**os.environ, **(env or {})}
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    reason = f"killed by signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
    tail = done.stderr.strip().splitlines()[-3:]
    return {"error": f"crashed ({reason}): {' | '.join(tail)}"}


def measurement_from(payload: dict[str, Any]) -> Measurement:
    """Rebuild a :class:`Measurement` from a worker's JSON."""
    fields = {key: payload[key] for key in asdict(Measurement()) if key in payload}
    return Measurement(**fields)


def format_rate(value: float | None) -> str:
    """Images per second with three significant figures."""
    if value is None:
        return "—"
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def format_bytes(value: int | None) -> str:
    """Bytes as GB (or MB below 1 GB)."""
    if value is None:
        return "—"
    return f"{value / GB:.1f} GB" if value >= GB else f"{value / 1024**2:.0f} MB"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
