"""LRP (EpsilonPlusFlat) against Zennit, and against one plain input gradient, side by side in one process.

Same torchvision weights (random, from ``--seed``, eval mode) converted to Flax, same
inputs and targets. Contenders: jaxplain ``lrp``, Zennit's ``Gradient`` attributor with
``EpsilonPlusFlat`` and the architecture's canonizer, and jaxplain's plain input
gradient (``saliency(abs=False)``) as the cost unit. Each is warmed up once (compile
time = warm-up minus the steady median), then timed in interleaved rounds
(``_harness.compare``). On a GPU the torch side runs on CUDA and peaks are the device
allocators' (``_harness``).

    python benchmarks/bench_lrp.py
    python benchmarks/bench_lrp.py --models resnet18,vgg16 --batch 8
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _harness as h  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,vgg16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=90.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import torchvision
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    import converters
    import jaxplain as jx

    print(f"# bench_lrp: {h.device_description()}; "
          f"JAX {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__}; {args.size} px, "
          f"batch {args.batch}\n")
    headers = ["model", "jaxplain LRP img/s", "Zennit img/s", "jaxplain / Zennit", "same, CPU time",
               "cores busy, jaxplain / Zennit",
               "jaxplain gradient img/s", "LRP cost in gradients", "Zennit cost in jaxplain gradients", "compile s",
               "jaxplain peak", "Zennit peak", "max rel. diff"]
    rows = []
    for arch in args.models.split(","):
        torch.manual_seed(args.seed)
        model = getattr(torchvision.models, arch)().eval()
        flax_model = converters.from_torch(model)
        h.to_device(model)
        inputs = np.random.default_rng(args.seed).standard_normal((args.batch, args.size, args.size, 3)).astype(np.float32)
        target = (np.arange(args.batch) * 37 % 1000).astype(np.int64)
        x, t = h.torch_batch(inputs, target)
        xj, tj = jnp.asarray(inputs), jnp.asarray(target)
        canonizer = ResNetCanonizer if arch.startswith("resnet") else VGGCanonizer
        last = {}

        def zennit_call():
            with torch.no_grad():
                seed = torch.nn.functional.one_hot(t, 1000) * model(x)
            with Gradient(model=model, composite=EpsilonPlusFlat(canonizers=[canonizer()])) as attributor:
                last["zennit"] = attributor(x.clone().requires_grad_(), seed)[1]
            return last["zennit"]

        def lrp_call():
            last["jaxplain"] = jx.lrp(flax_model, xj, tj, composite="epsilon_plus_flat")
            return last["jaxplain"]

        contenders = [
            h.Contender("jaxplain", lrp_call, h.sync, h.jax_meter()),
            h.Contender("Zennit", zennit_call, h.sync, h.torch_meter()),
            h.Contender("gradient", lambda: jx.saliency(flax_model, xj, tj, abs=False), h.sync, h.jax_meter()),
        ]
        results = h.compare(contenders, args.batch, args.reps, args.budget_s, lambda e: False)
        ours, zennit, gradient = results["jaxplain"], results["Zennit"], results["gradient"]
        reference = last["zennit"].permute(0, 2, 3, 1).detach().cpu().numpy()
        difference = np.abs(np.asarray(last["jaxplain"]) - reference).max() / np.abs(reference).max()
        rows.append([arch, h.format_rate(ours.rate), h.format_rate(zennit.rate), f"{ours.rate / zennit.rate:.2f}x",
                     f"{ours.cpu_rate / zennit.cpu_rate:.2f}x", h.format_cores(ours, zennit), h.format_rate(gradient.rate),
                     f"{gradient.rate / ours.rate:.2f}", f"{gradient.rate / zennit.rate:.2f}", f"{ours.compile_s:.1f}",
                     h.format_bytes(ours.peak_bytes), h.format_bytes(zennit.peak_bytes), f"{difference:.1e}"])
        print(h.markdown_table(headers, rows[-1:]).split("\n", 2)[2], flush=True)
    print()
    print(h.markdown_table(headers, rows))


if __name__ == "__main__":
    main()
