"""jaxplain's gradient methods against Captum's, on the same converted weights and inputs.

Each configuration (model, batch, method) runs jaxplain and Captum on the same
torchvision ResNet (random weights from ``--seed``, eval mode), converted once to
Flax, and on the same inputs and targets. By default every figure comes from a fresh
worker process (this script with ``--worker``) so peak memory is clean; the workers
rebuild the identical weights and inputs from the seed, and the parent checks that
both sides' attributions agree. ``--in-process`` runs everything in this process.
See ``_harness.py`` for how time and memory are measured.

Examples::

    python benchmarks/bench_gradient.py --quick
    python benchmarks/bench_gradient.py --models resnet18 --batches 8 --methods saliency,ig50
    python benchmarks/bench_gradient.py --models resnet18,resnet50 --batches 1,8,64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from typing import Any, Callable

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _harness as h  # noqa: E402

MODELS = ("resnet18", "resnet50")
METHODS = ("saliency", "ig50", "sg50", "gbp")
STEPS = 50
# Memory of one input gradient at 224 px, per image, with headroom: torch from
# PERFORMANCE.md (Captum IG-50 default on ResNet-18, 400 images, 9.5 GB; ResNet-50
# SmoothGrad, 80 images, 8.1 GB), XLA from its memory_analysis (18 and 58 MB at batch
# 8); used to skip what would not fit and to choose jaxplain's batch_size.
GB_PER_IMAGE = {"captum": {"resnet18": 0.025, "resnet50": 0.1}, "jaxplain": {"resnet18": 0.02, "resnet50": 0.06}}
# Rough CPU gradient evaluations per second, used to skip hopelessly long calls.
CPU_GRADS_PER_S = {"resnet18": 25.0, "resnet50": 10.0}
BASE_GB = 1.0


@dataclass(frozen=True)
class Variant:
    """One table row: a method with one Captum setting (jaxplain's run is shared)."""

    key: str
    method: str
    label: str
    evals: int
    captum_pass: Callable[[int], int]
    captum_options: tuple[tuple[str, Any], ...] = ()


VARIANTS: dict[str, tuple[Variant, ...]] = {
    "saliency": (Variant("saliency", "saliency", "Saliency", 1, lambda n: n),),
    "ig50": (
        Variant("ig50-ibs50", "ig50", "IG-50, Captum internal_batch_size=50", STEPS, lambda n: STEPS,
                (("internal_batch_size", STEPS),)),
        Variant("ig50-default", "ig50", "IG-50, Captum default", STEPS, lambda n: STEPS * n),
    ),
    "sg50": (
        Variant("sg50-nt10", "sg50", "SmoothGrad-50, Captum nt_samples_batch_size=10", STEPS, lambda n: 10 * n,
                (("nt_samples_batch_size", 10),)),
        Variant("sg50-default", "sg50", "SmoothGrad-50, Captum default", STEPS, lambda n: STEPS * n),
    ),
    "gbp": (Variant("gbp", "gbp", "GuidedBackprop", 1, lambda n: n),),
}
VARIANT_BY_KEY = {variant.key: variant for variants in VARIANTS.values() for variant in variants}


@dataclass(frozen=True)
class Spec:
    """What one worker measures."""

    framework: str
    model: str
    batch: int
    size: int
    variant: str
    jax_batch_size: int | None
    reps: int
    budget_s: float
    seed: int
    max_gb: float
    idle_wait_s: float
    sample_path: str


def gb_per_image(framework: str, model: str, size: int) -> float:
    """Estimated memory of one input gradient."""
    return GB_PER_IMAGE[framework][model] * (size / 224) ** 2


def jax_batch_size(model: str, batch: int, size: int, budget_gb: float) -> int | None:
    """The largest divisor of the step count whose pass of ``batch * k`` images fits ``budget_gb``."""
    per_image = gb_per_image("jaxplain", model, size)
    fits = [k for k in range(1, STEPS + 1) if STEPS % k == 0 and batch * k * per_image <= budget_gb]
    best = max(fits, default=1)
    return None if best == STEPS else best


def estimate_gb(spec: Spec) -> float:
    """Estimated peak memory of one call of ``spec``."""
    variant = VARIANT_BY_KEY[spec.variant]
    if spec.framework == "captum":
        images = variant.captum_pass(spec.batch)
    else:
        images = spec.batch * (variant.evals if spec.jax_batch_size is None or variant.evals == 1 else spec.jax_batch_size)
    return BASE_GB + images * gb_per_image(spec.framework, spec.model, spec.size)


def on_gpu() -> bool:
    """Whether a CUDA device is there (torch's view; JAX uses its default device)."""
    import torch

    return torch.cuda.is_available()


def build_inputs(spec: Spec) -> tuple[Any, Any, Any]:
    """The seeded torchvision model (eval) and NHWC inputs / targets as numpy."""
    import numpy as np
    import torch
    import torchvision

    torch.manual_seed(spec.seed)
    model = getattr(torchvision.models, spec.model)().eval()
    inputs = np.random.default_rng(spec.seed).standard_normal((spec.batch, spec.size, spec.size, 3)).astype(np.float32)
    target = (np.arange(spec.batch) * 37 % 1000).astype(np.int64)
    return model, inputs, target


def captum_call(spec: Spec, model: Any, inputs: Any, target: Any) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    """A zero-argument Captum call and its synchronisation."""
    import torch
    from captum.attr import GuidedBackprop, IntegratedGradients, NoiseTunnel, Saliency

    device = "cuda" if on_gpu() else "cpu"
    model = model.to(device)
    x = torch.from_numpy(inputs).permute(0, 3, 1, 2).contiguous().to(device)
    t = torch.from_numpy(target).to(device)
    variant = VARIANT_BY_KEY[spec.variant]
    options = dict(variant.captum_options)
    calls: dict[str, Callable[[], Any]] = {
        "saliency": lambda: Saliency(model).attribute(x, target=t, abs=True),
        "ig50": lambda: IntegratedGradients(model).attribute(
            x, target=t, n_steps=STEPS, method="gausslegendre", **options
        ),
        "sg50": lambda: NoiseTunnel(Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=STEPS, stdevs=1.0, target=t, **options
        ),
        "gbp": lambda: GuidedBackprop(model).attribute(x, target=t),
    }

    def sync(_: Any) -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    return calls[variant.method], sync


def jax_call(spec: Spec, model: Any, inputs: Any, target: Any) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    """A zero-argument jaxplain call and its synchronisation."""
    import jax
    import jax.numpy as jnp

    import converters
    import jaxplain as jx

    flax_model = converters.from_torch(model)
    x, t = jnp.asarray(inputs), jnp.asarray(target)
    key = jax.random.PRNGKey(spec.seed)
    chunk = spec.jax_batch_size
    calls: dict[str, Callable[[], Any]] = {
        "saliency": lambda: jx.saliency(flax_model, x, t),
        "ig50": lambda: jx.integrated_gradients(flax_model, x, t, n_steps=STEPS, method="gausslegendre", batch_size=chunk),
        "sg50": lambda: jx.smoothgrad(flax_model, x, t, key=key, nt_samples=STEPS, stdevs=1.0, batch_size=chunk),
        "gbp": lambda: jx.guided_backprop(flax_model, x, t),
    }
    return calls[VARIANT_BY_KEY[spec.variant].method], jax.block_until_ready


def is_oom(error: BaseException) -> bool:
    """Whether an exception reports exhausted memory (torch or XLA, host or device)."""
    text = str(error).lower()
    return any(s in text for s in ("out of memory", "can't allocate memory", "resource_exhausted", "failed to allocate"))


def meter_for(framework: str) -> h.HostMemory | h.TorchCudaMemory | h.JaxDeviceMemory:
    """The memory meter matching where ``framework`` computes."""
    if framework == "captum":
        return h.TorchCudaMemory() if on_gpu() else h.HostMemory()
    import jax

    return h.HostMemory() if jax.default_backend() == "cpu" else h.JaxDeviceMemory()


def run_spec(spec: Spec, prepared: tuple[Any, Any, Any] | None = None) -> dict[str, Any]:
    """Measure one framework on one configuration; save its first attribution map."""
    import numpy as np

    model, inputs, target = prepared or build_inputs(spec)
    make = captum_call if spec.framework == "captum" else jax_call
    call, sync = make(spec, model, inputs, target)
    meter = meter_for(spec.framework)
    result = h.measure(call, sync, meter, spec.batch, spec.reps, spec.budget_s, is_oom, spec.idle_wait_s)
    if result.error is None:
        sample = call()[0]
        sample = sample.permute(1, 2, 0).detach().cpu().numpy() if spec.framework == "captum" else np.asarray(sample)
        np.save(spec.sample_path, sample)
    return asdict(result)


def worker_main(payload: str) -> None:
    """Entry point of a worker process: one :class:`Spec` in, one result line out."""
    spec = Spec(**json.loads(payload))
    h.die_with_parent()
    if not on_gpu():
        h.limit_host_memory(int(min(spec.max_gb * h.GB + h.HostMemory().base, h.total_host_memory() - 2 * h.GB)))
    h.emit_result(run_spec(spec))


def agreement(variant: Variant, jax_path: str, captum_path: str) -> str:
    """``||jaxplain - Captum|| / ||Captum||`` on the first image (noise-based methods: not comparable).

    An L2 ratio, because a ReLU whose input rounds to the other side of zero in one
    framework moves single pixels by a large fraction of the map's maximum.
    """
    import numpy as np

    if variant.method == "sg50":
        return "n/a (noise)"
    if not (os.path.exists(jax_path) and os.path.exists(captum_path)):
        return "—"
    ours, theirs = np.load(jax_path), np.load(captum_path)
    return f"{np.linalg.norm(ours - theirs) / max(np.linalg.norm(theirs), 1e-30):.1e}"


def measure_framework(spec: Spec, args: argparse.Namespace, cache: dict) -> h.Measurement:
    """Run (or skip) one framework's measurement, in a worker unless ``--in-process``."""
    estimate = estimate_gb(spec)
    if estimate > args.max_gb:
        return h.Measurement(error=f"skipped (est. {estimate:.0f} GB > {args.max_gb:.0f} GB)")
    evals = spec.batch * VARIANT_BY_KEY[spec.variant].evals
    if not args.gpu and evals / CPU_GRADS_PER_S[spec.model] * (spec.size / 224) ** 2 > args.max_call_s:
        seconds = evals / CPU_GRADS_PER_S[spec.model] * (spec.size / 224) ** 2
        return h.Measurement(error=f"skipped (est. {seconds / 60:.0f} min per call)")
    if args.in_process:
        key = (spec.model, spec.batch, spec.size)
        if key not in cache:
            cache.clear()
            cache[key] = build_inputs(spec)
        return h.measurement_from(run_spec(spec, cache[key]))
    payload = h.run_worker([os.path.abspath(__file__), "--worker", json.dumps(asdict(spec))], args.worker_timeout_s)
    return h.measurement_from(payload)


def main(argv: list[str] | None = None) -> None:
    """Parse flags, run every configuration and print the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list of {MODELS}")
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {METHODS}")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=5, help="timed calls after the warm-up (median)")
    parser.add_argument("--budget-s", type=float, default=240.0, help="fewer reps when they would exceed this")
    parser.add_argument("--max-gb", type=float, help="skip configurations estimated above (default 16 on CPU)")
    parser.add_argument("--max-call-s", type=float, default=900.0, help="CPU: skip calls estimated longer")
    parser.add_argument("--jax-gb", type=float, help="memory jaxplain's batch_size is chosen to fit (default 10 on CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--idle-wait-s", type=float, default=0.0,
                        help="on a shared machine: wait up to this long for other jobs to leave the CPU before timing")
    parser.add_argument("--in-process", action="store_true", help="one process for everything (approximate memory)")
    parser.add_argument("--cpus", help="pin to these CPU ids (e.g. 0 or 0,1); thread pools follow, workers inherit it")
    parser.add_argument("--worker-timeout-s", type=float, default=3600.0)
    parser.add_argument("--json", help="append one JSON line per row to this file")
    parser.add_argument("--quick", action="store_true", help="smoke test: resnet18, 64 px, batch 2, 1 rep, in-process")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return
    if args.quick:
        args.models, args.batches, args.size, args.reps, args.in_process = "resnet18", "2", 64, 1, True
    if args.cpus:
        os.sched_setaffinity(0, {int(cpu) for cpu in args.cpus.split(",")})
    args.gpu = on_gpu()
    device_gb = _device_gb() if args.gpu else None
    args.max_gb = args.max_gb or (0.9 * device_gb if device_gb else 16.0)
    jax_gb = args.jax_gb or (0.5 * device_gb if device_gb else min(10.0, 0.4 * h.total_host_memory() / h.GB))
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(VARIANTS)) + sorted(set(args.models.split(",")) - set(MODELS))
    if unknown:
        parser.error(f"unknown methods or models: {unknown}")
    print(_environment(args), flush=True)
    headers = ["model", "batch", "method", "jaxplain img/s", "Captum img/s", "jaxplain / Captum",
               "same, CPU time", "compile s", "jaxplain peak", "Captum peak", "rel. L2 diff"]
    rows, cache = [], {}
    with tempfile.TemporaryDirectory() as samples:
        for model in args.models.split(","):
            for batch in map(int, args.batches.split(",")):
                chunk = jax_batch_size(model, batch, args.size, jax_gb)
                for method in methods:
                    row = _measure_method(args, model, batch, method, chunk, samples, cache)
                    rows += row
                    print(h.markdown_table(headers, row).split("\n", 2)[2], flush=True)
    print()
    print(h.markdown_table(headers, rows))


def _measure_method(args: argparse.Namespace, model: str, batch: int, method: str, chunk: int | None,
                    samples: str, cache: dict) -> list[list[str]]:
    """The table rows of one method: jaxplain measured once, Captum per variant."""
    def spec(framework: str, variant: Variant) -> Spec:
        path = os.path.join(samples, f"{framework}-{model}-{batch}-{variant.key}.npy")
        return Spec(framework, model, batch, args.size, variant.key, chunk, args.reps, args.budget_s, args.seed,
                    args.max_gb, args.idle_wait_s, path)

    variants = VARIANTS[method]
    ours_spec = spec("jaxplain", variants[0])
    ours = measure_framework(ours_spec, args, cache)
    rows = []
    for variant in variants:
        theirs_spec = spec("captum", variant)
        theirs = measure_framework(theirs_spec, args, cache)
        label = variant.label + (f"; jaxplain batch_size={chunk}" if variant.evals > 1 else "")
        ratio = f"{ours.rate / theirs.rate:.2f}x" if ours.rate and theirs.rate else "—"
        cpu_ratio = f"{ours.cpu_rate / theirs.cpu_rate:.2f}x" if ours.cpu_rate and theirs.cpu_rate else "—"
        row = [model, str(batch), label, ours.error or h.format_rate(ours.rate),
               theirs.error or h.format_rate(theirs.rate), ratio, cpu_ratio,
               "—" if ours.compile_s is None else f"{ours.compile_s:.1f}", h.format_bytes(ours.peak_bytes),
               h.format_bytes(theirs.peak_bytes), agreement(variant, ours_spec.sample_path, theirs_spec.sample_path)]
        rows.append(row)
        if args.json:
            with open(args.json, "a") as out:
                out.write(json.dumps({"model": model, "batch": batch, "size": args.size, "variant": variant.key,
                                      "jax_batch_size": chunk, "jaxplain": asdict(ours), "captum": asdict(theirs),
                                      "table_row": row}) + "\n")
    return rows


def _device_gb() -> float:
    """Total memory of CUDA device 0, in GB."""
    import torch

    return torch.cuda.get_device_properties(0).total_memory / h.GB


def _environment(args: argparse.Namespace) -> str:
    """A header naming versions, devices and the measurement protocol."""
    import captum
    import jax
    import torch

    cpus = len(os.sched_getaffinity(0))
    device = torch.cuda.get_device_name(0) if args.gpu else f"CPU, {cpus} of {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    return (
        f"# bench_gradient: {device}; JAX device {jax.devices()[0].device_kind}\n"
        f"torch {torch.__version__}, captum {captum.__version__}, jax {jax.__version__}; {args.size} px, seed {args.seed}, "
        f"median of up to {args.reps} calls after one warm-up; "
        f"{'one process' if args.in_process else 'one worker process per framework and configuration'}; "
        f"skipping configurations estimated above {args.max_gb:.0f} GB\n"
    )


if __name__ == "__main__":
    main()
