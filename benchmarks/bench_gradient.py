"""jaxplain's gradient methods against Captum's, on the same converted weights and inputs.

Each configuration (model, batch, method) runs jaxplain and Captum side by side in one
process, on the same torchvision ResNet (random weights from ``--seed``, eval mode)
converted to Flax, and on the same inputs and targets: each warmed up and measured for
memory alone, then timed in interleaved rounds (``_harness.compare``). By default each
configuration gets a fresh worker process (this script with ``--worker``), so peak
memory figures are clean; ``--in-process`` runs every configuration in this process.
The table also gives the relative L2 difference between the two attributions.

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
# RESULTS.md's gradient table (Captum IG-50 default peaks: ResNet-18 batch 8, i.e. 400
# images, 8.3 GB; ResNet-50 batch 1, 50 images, 4.0 GB), XLA from its memory_analysis
# (18 and 58 MB at batch 8); used to skip what would not fit and to choose jaxplain's batch_size.
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


def variants_of(method: str, sg_draws: int = 10) -> tuple[Variant, ...]:
    """The rows of ``method``; SmoothGrad's memory-bounded row passes ``sg_draws`` draws of every image at once."""
    if method != "sg50" or sg_draws == 10:
        return VARIANTS[method]
    bounded = Variant(f"sg50-nt{sg_draws}", "sg50", f"SmoothGrad-50, Captum nt_samples_batch_size={sg_draws}", STEPS,
                      lambda n: sg_draws * n, (("nt_samples_batch_size", sg_draws),))
    return (bounded, VARIANTS[method][1])


def variant_by_key(key: str, sg_draws: int = 10) -> Variant:
    """The variant called ``key``."""
    return next(v for method in VARIANTS for v in variants_of(method, sg_draws) if v.key == key)


@dataclass(frozen=True)
class Cell:
    """One configuration, as handed to a worker: which contenders to run and how."""

    model: str
    batch: int
    size: int
    method: str
    jax_batch_size: int | None
    run_jax: bool
    captum_variants: tuple[str, ...]
    reps: int
    budget_s: float
    seed: int
    max_gb: float
    idle_wait_s: float
    sample_dir: str
    peer_once: bool = False
    sg_draws: int = 10


def gb_per_image(framework: str, model: str, size: int) -> float:
    """Estimated memory of one input gradient."""
    return GB_PER_IMAGE[framework][model] * (size / 224) ** 2


def jax_batch_size(model: str, batch: int, size: int, budget_gb: float, method: str = "ig50",
                   equal_batching: bool = False, sg_draws: int = 10) -> int | None:
    """jaxplain's ``batch_size``: the largest divisor ``k`` of the step count whose pass of ``batch * k`` images fits.

    It must fit ``budget_gb``; with ``equal_batching`` a pass also holds no more images than
    Captum's memory-bounded setting does (IG: ``internal_batch_size=50`` images; SmoothGrad:
    ``nt_samples_batch_size=sg_draws`` draws of every image).
    """
    per_image = gb_per_image("jaxplain", model, size)
    cap = {"ig50": STEPS, "sg50": sg_draws * batch}.get(method) if equal_batching else None
    fits = [k for k in range(1, STEPS + 1)
            if STEPS % k == 0 and batch * k * per_image <= budget_gb and (cap is None or batch * k <= cap)]
    best = max(fits, default=1)
    return None if best == STEPS else best


def estimate_gb(framework: str, variant: Variant, model: str, batch: int, size: int, chunk: int | None) -> float:
    """Estimated peak memory of one call."""
    if framework == "captum":
        images = variant.captum_pass(batch)
    else:
        images = batch * (variant.evals if chunk is None or variant.evals == 1 else chunk)
    return BASE_GB + images * gb_per_image(framework, model, size)


def build_inputs(cell: Cell) -> tuple[Any, Any, Any]:
    """The seeded torchvision model (eval) and NHWC inputs / targets as numpy."""
    import numpy as np
    import torch
    import torchvision

    torch.manual_seed(cell.seed)
    model = getattr(torchvision.models, cell.model)().eval()
    inputs = np.random.default_rng(cell.seed).standard_normal((cell.batch, cell.size, cell.size, 3)).astype(np.float32)
    target = (np.arange(cell.batch) * 37 % 1000).astype(np.int64)
    return model, inputs, target


def captum_call(variant: Variant, model: Any, inputs: Any, target: Any) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    """A zero-argument Captum call and its synchronisation."""
    from captum.attr import GuidedBackprop, IntegratedGradients, NoiseTunnel, Saliency

    model = h.to_device(model)
    x, t = h.torch_batch(inputs, target)
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
    return calls[variant.method], h.sync


def jax_call(cell: Cell, model: Any, inputs: Any, target: Any) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    """A zero-argument jaxplain call and its synchronisation."""
    import jax
    import jax.numpy as jnp

    import converters
    import jaxplain as jx

    flax_model = converters.from_torch(model)
    x, t = jnp.asarray(inputs), jnp.asarray(target)
    key = jax.random.PRNGKey(cell.seed)
    chunk = cell.jax_batch_size
    calls: dict[str, Callable[[], Any]] = {
        "saliency": lambda: jx.saliency(flax_model, x, t),
        "ig50": lambda: jx.integrated_gradients(flax_model, x, t, n_steps=STEPS, method="gausslegendre", batch_size=chunk),
        "sg50": lambda: jx.smoothgrad(flax_model, x, t, key=key, nt_samples=STEPS, stdevs=1.0, batch_size=chunk),
        "gbp": lambda: jx.guided_backprop(flax_model, x, t),
    }
    return calls[cell.method], h.sync


def is_oom(error: BaseException) -> bool:
    """Whether an exception reports exhausted memory (torch or XLA, host or device)."""
    text = str(error).lower()
    return any(s in text for s in ("out of memory", "can't allocate memory", "resource_exhausted", "failed to allocate"))


def run_cell(cell: Cell, prepared: tuple[Any, Any, Any] | None = None) -> dict[str, Any]:
    """Measure the cell's contenders side by side; save each one's first attribution map."""
    import numpy as np

    model, inputs, target = prepared or build_inputs(cell)
    last: dict[str, Any] = {}
    contenders = []

    def contender(name: str, call: Callable[[], Any], sync: Callable[[Any], None], framework: str) -> h.Contender:
        def remembered() -> Any:
            last[name] = call()
            return last[name]

        return h.Contender(name, remembered, sync, h.torch_meter() if framework == "captum" else h.jax_meter(),
                           warm=not (cell.peer_once and framework == "captum"))

    # Captum first, its memory-bounded setting before its default, jaxplain last: a
    # contender measured after a larger one could reuse memory that one freed.
    for key in cell.captum_variants:
        contenders.append(contender(key, *captum_call(variant_by_key(key, cell.sg_draws), model, inputs, target),
                                    "captum"))
    if cell.run_jax:
        contenders.append(contender("jaxplain", *jax_call(cell, model, inputs, target), "jaxplain"))
    results = h.compare(contenders, cell.batch, cell.reps, cell.budget_s, is_oom, cell.idle_wait_s)
    for name, output in last.items():
        sample = output[0]
        sample = np.asarray(sample) if name == "jaxplain" else sample.permute(1, 2, 0).detach().cpu().numpy()
        np.save(os.path.join(cell.sample_dir, f"{name}.npy"), sample)
    return {name: asdict(result) for name, result in results.items()}


def worker_main(payload: str) -> None:
    """Entry point of a worker process: one :class:`Cell` in, one result line out."""
    fields = json.loads(payload)
    cell = Cell(**{**fields, "captum_variants": tuple(fields["captum_variants"])})
    h.die_with_parent()
    if not h.on_gpu():
        h.limit_host_memory(int(min(cell.max_gb * h.GB + h.HostMemory().base, h.total_host_memory() - 2 * h.GB)))
    h.emit_result(run_cell(cell))


def agreement(method: str, sample_dir: str, variant: str) -> str:
    """``||jaxplain - Captum|| / ||Captum||`` on the first image (noise-based methods: not comparable).

    An L2 ratio, because a ReLU whose input rounds to the other side of zero in one
    framework moves single pixels by a large fraction of the map's maximum.
    """
    import numpy as np

    if method == "sg50":
        return "n/a (noise)"
    paths = [os.path.join(sample_dir, f"{name}.npy") for name in ("jaxplain", variant)]
    if not all(os.path.exists(path) for path in paths):
        return "—"
    ours, theirs = (np.load(path) for path in paths)
    return f"{np.linalg.norm(ours - theirs) / max(np.linalg.norm(theirs), 1e-30):.1e}"


def skip_reason(framework: str, variant: Variant, model: str, batch: int, args: argparse.Namespace,
                chunk: int | None) -> str | None:
    """Why a contender is not run (estimated memory or CPU time beyond the limits), or None."""
    estimate = estimate_gb(framework, variant, model, batch, args.size, chunk)
    if estimate > args.max_gb:
        return f"skipped (est. {estimate:.0f} GB > {args.max_gb:.0f} GB)"
    seconds = batch * variant.evals / CPU_GRADS_PER_S[model] * (args.size / 224) ** 2
    if not args.gpu and seconds > args.max_call_s:
        return f"skipped (est. {seconds / 60:.0f} min per call)"
    return None


def measure_method(args: argparse.Namespace, model: str, batch: int, method: str, chunk: int | None,
                   cache: dict) -> list[list[str]]:
    """The table rows of one method: jaxplain and Captum's settings measured in one process."""
    variants = variants_of(method, args.sg_draws)
    skipped = {"jaxplain": skip_reason("jaxplain", variants[0], model, batch, args, chunk)}
    skipped.update({v.key: skip_reason("captum", v, model, batch, args, chunk) for v in variants})
    results: dict[str, h.Measurement] = {name: h.Measurement(error=why) for name, why in skipped.items() if why}
    with tempfile.TemporaryDirectory() as sample_dir:
        cell = Cell(model, batch, args.size, method, chunk, skipped["jaxplain"] is None,
                    tuple(v.key for v in variants if skipped[v.key] is None), args.reps, args.budget_s, args.seed,
                    args.max_gb, args.idle_wait_s, sample_dir, args.peer_once, args.sg_draws)
        if cell.run_jax or cell.captum_variants:
            if args.in_process:
                key = (model, batch, args.size)
                if key not in cache:
                    cache.clear()
                    cache[key] = build_inputs(cell)
                payload = run_cell(cell, cache[key])
            else:
                payload = h.run_worker([os.path.abspath(__file__), "--worker", json.dumps(asdict(cell))],
                                       args.worker_timeout_s)
            for name in ("jaxplain", *cell.captum_variants) if cell.run_jax else cell.captum_variants:
                results[name] = h.measurement_from(payload.get(name, payload))
        rows = []
        for variant in variants:
            ours, theirs = results["jaxplain"], results[variant.key]
            label = variant.label + (f"; jaxplain batch_size={chunk}" if variant.evals > 1 else "")
            ratio = f"{ours.rate / theirs.rate:.2f}x" if ours.rate and theirs.rate else "—"
            cpu_ratio = f"{ours.cpu_rate / theirs.cpu_rate:.2f}x" if ours.cpu_rate and theirs.cpu_rate else "—"
            row = [model, str(batch), label, ours.error or h.format_rate(ours.rate),
                   theirs.error or h.format_rate(theirs.rate), ratio, cpu_ratio, h.format_cores(ours, theirs),
                   "—" if ours.compile_s is None else f"{ours.compile_s:.1f}", h.format_bytes(ours.peak_bytes),
                   h.format_bytes(theirs.peak_bytes), agreement(method, sample_dir, variant.key)]
            rows.append(row)
            if args.json:
                with open(args.json, "a") as out:
                    out.write(json.dumps({"model": model, "batch": batch, "size": args.size, "variant": variant.key,
                                          "jax_batch_size": chunk, "jaxplain": asdict(ours),
                                          "captum": asdict(theirs), "table_row": row}) + "\n")
    return rows


def main(argv: list[str] | None = None) -> None:
    """Parse flags, run every configuration and print the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list of {MODELS}")
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {METHODS}")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=5, help="timed rounds after the warm-up (median)")
    parser.add_argument("--budget-s", type=float, default=240.0, help="fewer rounds when they would exceed this")
    parser.add_argument("--max-gb", type=float, help="skip contenders estimated above (default 16 on CPU)")
    parser.add_argument("--max-call-s", type=float, default=900.0, help="CPU: skip calls estimated longer")
    parser.add_argument("--jax-gb", type=float, help="memory jaxplain's batch_size is chosen to fit (default 10 on CPU)")
    parser.add_argument("--equal-batching", action="store_true",
                        help="jaxplain's passes no larger than Captum's memory-bounded setting (IG: 50 images, SG: --sg-draws)")
    parser.add_argument("--sg-draws", type=int, default=10,
                        help="SmoothGrad draws per Captum pass in its memory-bounded row (nt_samples_batch_size; "
                             "a divisor of 50; fewer where 10 draws of the batch would not fit)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peer-once", action="store_true",
                        help="call Captum once, its untimed warm-up skipped (torch compiles nothing; for calls of many minutes)")
    parser.add_argument("--idle-wait-s", type=float, default=0.0,
                        help="on a shared machine: wait up to this long for other jobs to leave the CPU before timing")
    parser.add_argument("--in-process", action="store_true", help="every configuration in this process")
    parser.add_argument("--cpus", help="pin to these CPU ids (e.g. 0 or 0,1); thread pools follow, workers inherit it")
    parser.add_argument("--worker-timeout-s", type=float, default=3600.0)
    parser.add_argument("--json", help="append one JSON line per row to this file")
    parser.add_argument("--quick", action="store_true", help="smoke test: resnet18, 64 px, batch 2, 1 round, in-process")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return
    if args.quick:
        args.models, args.batches, args.size, args.reps, args.in_process = "resnet18", "2", 64, 1, True
    if STEPS % args.sg_draws:
        parser.error(f"--sg-draws must divide {STEPS}")
    if args.cpus:
        os.sched_setaffinity(0, {int(cpu) for cpu in args.cpus.split(",")})
    args.gpu = h.on_gpu()
    device_gb = _device_gb() if args.gpu else None
    args.max_gb = args.max_gb or (0.9 * device_gb if device_gb else 16.0)
    jax_gb = args.jax_gb or (0.5 * device_gb if device_gb else min(10.0, 0.4 * h.total_host_memory() / h.GB))
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(VARIANTS)) + sorted(set(args.models.split(",")) - set(MODELS))
    if unknown:
        parser.error(f"unknown methods or models: {unknown}")
    print(_environment(args), flush=True)
    headers = ["model", "batch", "method", "jaxplain img/s", "Captum img/s", "jaxplain / Captum",
               "same, CPU time", "cores busy, jaxplain / Captum", "compile s", "jaxplain peak", "Captum peak", "rel. L2 diff"]
    rows, cache = [], {}
    for model in args.models.split(","):
        for batch in map(int, args.batches.split(",")):
            for method in methods:
                chunk = jax_batch_size(model, batch, args.size, jax_gb, method, args.equal_batching, args.sg_draws)
                new = measure_method(args, model, batch, method, chunk, cache)
                rows += new
                print(h.markdown_table(headers, new).split("\n", 2)[2], flush=True)
    print()
    print(h.markdown_table(headers, rows))


def _device_gb() -> float:
    """Total memory of CUDA device 0, in GB."""
    import torch

    return torch.cuda.get_device_properties(0).total_memory / h.GB


def _environment(args: argparse.Namespace) -> str:
    """A header naming versions, devices and the measurement protocol."""
    import captum
    import jax
    import torch

    return (
        f"# bench_gradient: {h.device_description(cores_of_total=True)}; JAX device {jax.devices()[0].device_kind}\n"
        f"torch {torch.__version__}, captum {captum.__version__}, jax {jax.__version__}; {args.size} px, seed {args.seed}, "
        f"median of up to {args.reps} interleaved rounds after one warm-up each; "
        f"{'one process' if args.in_process else 'one worker process per configuration'}; "
        f"skipping configurations estimated above {args.max_gb:.0f} GB\n"
    )


if __name__ == "__main__":
    main()
