"""Shared pieces of the side-by-side benchmarks: timing, peak memory, workers, tables.

Timing (:func:`compare`): the contenders (jaxplain and Captum's settings) run in one
process on the same inputs; each is warmed up alone, then all are called in rotating
rounds and each one's median is kept, so that a shared machine's noise falls on every
side alike. Calls are synchronised (``block_until_ready`` for JAX,
``torch.cuda.synchronize`` on a GPU). The warm-up call minus the steady-state median is
JAX's compile time (noise can make it slightly negative). Beside wall time, the
process's CPU seconds per call are kept (``cpu_rate``): pinned to one core on a machine
shared with other jobs, images per CPU-second measure the work itself, whatever share
of the core the other jobs take.

Peak memory on CPU: the growth of the process's resident set during the contender's
warm-up call (contenders run one at a time; for jaxplain this includes XLA's
compilation). The kernel's high-water mark (``VmHWM``) is reset through
``/proc/self/clear_refs`` just before that call and read after it. So that memory
freed earlier and kept by ``malloc`` cannot hide new allocations, ``malloc_trim`` runs
first and, for that call only, every block from 128 KiB up is a fresh mapping
(``mallopt(M_MMAP_THRESHOLD)``, restored to glibc's 32 MiB ceiling afterwards). On a GPU: the allocator's peak
(``torch.cuda.max_memory_allocated``; JAX's ``peak_bytes_in_use``, which cannot be
reset, so JAX runs first in each worker process; a benchmark that runs several JAX
contenders in one process reports, for the later ones, the process's peak so far).

Device: the peers' torch models and tensors go to CUDA when torch sees a GPU
(:func:`on_gpu`, :func:`to_device`, :func:`torch_batch`); JAX computes on its default
device; :func:`sync` waits for both, and :func:`torch_meter` / :func:`jax_meter` pick
the matching memory meter.
"""

from __future__ import annotations

import ctypes
import functools
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

    MMAP_THRESHOLD = -3  # mallopt's M_MMAP_THRESHOLD
    MEASURED_THRESHOLD = 128 * 1024
    STEADY_THRESHOLD = 32 * 1024 * 1024  # glibc's ceiling for its own dynamic threshold

    def __init__(self) -> None:
        release_free_memory()
        self.base = _proc_status_kb("VmRSS") * 1024

    def reset_peak(self) -> None:
        """Start a new high-water mark; until :meth:`peak`, blocks from 128 KiB are fresh mappings."""
        _mallopt(self.MMAP_THRESHOLD, self.MEASURED_THRESHOLD)
        release_free_memory()
        self.base = _proc_status_kb("VmRSS") * 1024
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")

    def peak(self) -> int:
        """Bytes above the starting resident set at the high-water mark (ends the measurement)."""
        _mallopt(self.MMAP_THRESHOLD, self.STEADY_THRESHOLD)
        return max(0, _proc_status_kb("VmHWM") * 1024 - self.base)


def _mallopt(option: int, value: int) -> None:
    try:
        ctypes.CDLL("libc.so.6").mallopt(option, value)
    except (OSError, AttributeError):
        pass


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


Meter = HostMemory | TorchCudaMemory | JaxDeviceMemory


@functools.cache
def on_gpu() -> bool:
    """Whether torch sees a CUDA device (the peers then run there; JAX uses its default device)."""
    import torch

    return torch.cuda.is_available()


def torch_device() -> str:
    """The torch device the peers run on: ``"cuda"`` when there is one, else ``"cpu"``."""
    return "cuda" if on_gpu() else "cpu"


def to_device(item: Any) -> Any:
    """A torch module or tensor on :func:`torch_device` (modules are moved in place)."""
    return item.to(torch_device())


def torch_batch(inputs: Any, target: Any) -> tuple[Any, Any]:
    """NHWC numpy images and their numpy targets as an NCHW torch batch and targets on the device."""
    import torch

    return to_device(torch.from_numpy(inputs).permute(0, 3, 1, 2).contiguous()), to_device(torch.from_numpy(target))


def sync(output: Any) -> None:
    """Wait until a contender's result is computed: the JAX arrays in it, and CUDA's queue on a GPU."""
    import jax

    jax.block_until_ready(jax.tree_util.tree_leaves(output))
    if on_gpu():
        import torch

        torch.cuda.synchronize()


def torch_meter() -> Callable[[], Meter]:
    """The memory meter for torch peers: CUDA's allocator on a GPU, else the process's resident set."""
    return TorchCudaMemory if on_gpu() else HostMemory


def jax_meter() -> Callable[[], Meter]:
    """The memory meter for jaxplain: the JAX device's peak off CPU, else the process's resident set."""
    import jax

    return HostMemory if jax.default_backend() == "cpu" else JaxDeviceMemory


def device_description(cores_of_total: bool = False) -> str:
    """The GPU's name, or the CPU cores this process may use and torch's thread count."""
    import torch

    if on_gpu():
        return torch.cuda.get_device_name(0)
    cores = len(os.sched_getaffinity(0))
    counted = f"{cores} of {os.cpu_count()}" if cores_of_total else str(cores)
    return f"CPU, {counted} cores, torch threads {torch.get_num_threads()}"


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


@dataclass
class Contender:
    """One side of a comparison: a zero-argument call, its synchronisation and its memory meter."""

    name: str
    call: Callable[[], Any]
    sync: Callable[[Any], None]
    meter: Callable[[], Meter]
    warm: bool = True


def compare(
    contenders: Sequence[Contender],
    images: int,
    reps: int,
    budget_s: float,
    is_oom: Callable[[BaseException], bool],
    idle_wait_s: float = 0.0,
) -> dict[str, Measurement]:
    """Measure contenders side by side in this process.

    Each contender is warmed up alone, with its peak memory read around that call
    (see the module docstring); its compile time is the warm-up minus the steady
    median. Then up to ``reps`` rounds call every contender once, in rotating order, so
    that a shared machine's noise falls on all of them alike (fewer rounds when they
    would exceed ``budget_s``). A failure that ``is_oom`` recognises (or a
    ``MemoryError``) becomes ``"fails (X GB)"``; other exceptions propagate. A contender
    with ``warm=False`` (a peer that compiles nothing and takes many minutes per call) is
    called once: that call is its one timed round and its compile time is 0.
    """
    results: dict[str, Measurement] = {}
    first: dict[str, float] = {}
    once: dict[str, tuple[float, float]] = {}

    def guarded(contender: Contender, meter: Meter) -> bool:
        try:
            contender.sync(contender.call())
        except Exception as error:
            if not (isinstance(error, MemoryError) or is_oom(error)):
                raise
            results[contender.name] = Measurement(peak_bytes=meter.peak(), error=f"fails ({meter.peak() / GB:.1f} GB)")
            return False
        return True

    for contender in contenders:
        meter = contender.meter()
        meter.reset_peak()
        start, cpu = time.perf_counter(), time.process_time()
        if guarded(contender, meter):
            first[contender.name] = time.perf_counter() - start
            results[contender.name] = Measurement(peak_bytes=meter.peak())
            if not contender.warm:
                once[contender.name] = (first[contender.name], time.process_time() - cpu)
    alive = [c for c in contenders if c.name in first and c.name not in once]
    rounds = max(1, min(reps, int(budget_s // max(sum(first[c.name] for c in alive), 1e-9)))) if alive else 0
    busy = wait_for_idle(idle_wait_s)
    times: dict[str, list[tuple[float, float]]] = {c.name: [] for c in alive}
    for index in range(rounds):
        for contender in alive[index % len(alive) :] + alive[: index % len(alive)]:
            start, cpu = time.perf_counter(), time.process_time()
            if not guarded(contender, contender.meter()):
                times.pop(contender.name, None)
                continue
            times[contender.name].append((time.perf_counter() - start, time.process_time() - cpu))
        alive = [c for c in alive if c.name in times]
    times.update({name: [measured] for name, measured in once.items()})
    for contender in alive + [c for c in contenders if c.name in once]:
        wall = statistics.median(t for t, _ in times[contender.name])
        cpu = statistics.median(c for _, c in times[contender.name])
        result = results[contender.name]
        result.rate, result.cpu_rate, result.busy_cores = images / wall, images / max(cpu, 1e-9), busy
        result.reps = len(times[contender.name])
        result.compile_s = first[contender.name] - wall
    return results


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


def format_cores(*measurements: Measurement) -> str:
    """Cores kept busy by each contender while it ran (CPU seconds per wall second), joined by ``/``."""
    return " / ".join(f"{m.rate / m.cpu_rate:.2f}" if m.rate and m.cpu_rate else "—" for m in measurements)


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
