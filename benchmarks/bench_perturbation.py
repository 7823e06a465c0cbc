"""Perturbation and surrogate methods against their peers, side by side in one process.

Same torchvision weights (random, from ``--seed``, eval mode) converted to Flax, same
inputs and targets, the peers at their default settings unless stated:

- ``occlusion``: Captum ``Occlusion``, 3x16x16 windows (all channels), stride 8, baseline 0,
  ``perturbations_per_eval=1`` (Captum's default); jaxplain with ``batch_size=--chunk``, its
  default incremental passes (ResNets, VGGs), and the same with ``incremental=False`` as a
  second row ("jaxplain, full passes": the ratio is the incremental passes' gain).
- ``ablation``: Captum ``FeatureAblation`` over 16x16 pixel blocks (196 groups at 224 px); jaxplain's
  incremental passes (each block's box) and, as a second row, full passes.
- ``shapley``: Captum ``ShapleyValueSampling``, ``n_samples=25`` over 8x8 blocks of 32 px (16 groups at 224 px).
- ``kernel_shap`` / ``lime_captum``: Captum ``KernelShap`` / ``Lime`` (25 samples) over the 16x16 blocks.
- ``lime``: the ``lime`` package's ``LimeImageExplainer`` (1000 samples, batch 10, top 5 labels)
  on the same quickshift superpixels, its classifier the torch model with a softmax.
- ``rise``: TorchRay's ``rise`` with ``--rise-masks`` masks (TorchRay's default is 8000),
  batch 32, both sides.

Each contender is warmed up once (compile time = warm-up minus the steady median) and
then timed in interleaved rounds (``_harness.compare``). On a GPU the torch model, inputs,
targets and feature masks go to CUDA (LIME's classifier moves each numpy batch there and
back), and peaks are the device allocators' (``_harness``).

    python benchmarks/bench_perturbation.py --models resnet18 --methods occlusion,lime
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _harness as h  # noqa: E402

METHODS = ("occlusion", "ablation", "shapley", "kernel_shap", "lime_captum", "lime", "rise")


def block_mask(size: int, block: int):
    import numpy as np

    rows = np.arange(size)[:, None] // block
    cols = np.arange(size)[None, :] // block
    return (rows * (-(-size // block)) + cols).astype(np.int32)


def calls(method: str, model: Any, flax_model: Any, inputs: Any, target: Any, args: Any) -> dict[str, Callable[[], Any]]:
    """Zero-argument calls of each contender for ``method``."""
    import captum.attr as ca
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    import jaxplain as jx

    x, t = h.torch_batch(inputs, target)
    xj, tj = jnp.asarray(inputs), jnp.asarray(target)
    key = jax.random.PRNGKey(0)
    size = inputs.shape[1]
    chunk = args.chunk
    if method == "occlusion":
        return {
            "jaxplain": lambda: jx.occlusion(flax_model, xj, tj, sliding_window_shapes=(16, 16), strides=8, batch_size=chunk),
            "Captum": lambda: ca.Occlusion(model).attribute(x, sliding_window_shapes=(3, 16, 16), strides=8, target=t),
            "jaxplain, full passes": lambda: jx.occlusion(flax_model, xj, tj, sliding_window_shapes=(16, 16), strides=8,
                                                          batch_size=chunk, incremental=False),
        }
    blocks = block_mask(size, 16)
    torch_blocks = h.to_device(torch.from_numpy(blocks)[None, None])
    if method == "ablation":
        return {
            "jaxplain": lambda: jx.feature_ablation(flax_model, xj, tj, feature_mask=blocks, batch_size=chunk),
            "Captum": lambda: ca.FeatureAblation(model).attribute(x, feature_mask=torch_blocks, target=t),
            "jaxplain, full passes": lambda: jx.feature_ablation(flax_model, xj, tj, feature_mask=blocks,
                                                                 batch_size=chunk, incremental=False),
        }
    if method == "shapley":
        coarse = block_mask(size, size // 4)
        torch_coarse = h.to_device(torch.from_numpy(coarse)[None, None])
        return {
            "jaxplain": lambda: jx.shapley_value_sampling(flax_model, xj, tj, key=key, feature_mask=coarse, batch_size=chunk),
            "Captum": lambda: ca.ShapleyValueSampling(model).attribute(x, feature_mask=torch_coarse, target=t),
        }
    if method == "kernel_shap":
        return {
            "jaxplain": lambda: jx.kernel_shap(flax_model, xj, tj, key=key, feature_mask=blocks),
            "Captum": lambda: ca.KernelShap(model).attribute(x, feature_mask=torch_blocks, target=t),
        }
    if method == "lime_captum":
        return {
            "jaxplain": lambda: jx.lime(flax_model, xj, tj, key=key, feature_mask=blocks),
            "Captum": lambda: ca.Lime(model).attribute(x, feature_mask=torch_blocks, target=t),
        }
    if method == "lime":
        from lime.lime_image import LimeImageExplainer

        from jaxplain.attribution.lime_image import segment_images

        segments = segment_images(inputs * 0.2 + 0.5, seed=0)

        def classifier(batch: np.ndarray) -> np.ndarray:
            """LIME's ``classifier_fn``: NHWC numpy images in, class probabilities out, the model on its device."""
            images = h.to_device(torch.from_numpy(batch.astype(np.float32)).permute(0, 3, 1, 2))
            with torch.no_grad():
                return torch.softmax(model(images), 1).cpu().numpy()

        def lime_package():
            return [
                LimeImageExplainer(random_state=0).explain_instance(
                    image, classifier, segmentation_fn=lambda _, s=segment: s, random_seed=0
                )
                for image, segment in zip(inputs, segments)
            ]

        return {
            "jaxplain": lambda: jx.lime_image(flax_model, xj, key=key, segments=segments, batch_size=chunk),
            "lime": lime_package,
        }
    from torchray.attribution.rise import rise_class

    return {
        "jaxplain": lambda: jx.rise(flax_model, xj, tj, key=key, num_masks=args.rise_masks, batch_size=32),
        "TorchRay": lambda: rise_class(model, x, target=t, num_masks=args.rise_masks, batch_size=32),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--batch", type=int, default=1, help="images per call")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--chunk", type=int, default=64, help="jaxplain perturbations per forward pass (batch_size)")
    parser.add_argument("--rise-masks", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import jax
    import numpy as np
    import torch
    import torchvision

    import converters

    print(f"# bench_perturbation: {h.device_description()}; "
          f"JAX {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__}; {args.size} px, "
          f"batch {args.batch}, jaxplain chunk {args.chunk}\n")
    headers = ["model", "method", "peer", "jaxplain img/s", "peer img/s", "jaxplain / peer", "same, CPU time",
               "compile s", "jaxplain peak", "peer peak"]
    rows = []
    for arch in args.models.split(","):
        torch.manual_seed(args.seed)
        model = getattr(torchvision.models, arch)().eval()
        flax_model = converters.from_torch(model)
        h.to_device(model)
        rng = np.random.default_rng(args.seed)
        inputs = rng.standard_normal((args.batch, args.size, args.size, 3)).astype(np.float32)
        target = (np.arange(args.batch) * 37 % 1000).astype(np.int64)
        for method in args.methods.split(","):
            contenders = [h.Contender(name, call, h.sync, h.jax_meter() if name.startswith("jaxplain") else h.torch_meter())
                          for name, call in calls(method, model, flax_model, inputs, target, args).items()]
            with torch.no_grad():
                results = h.compare(contenders, args.batch, args.reps, args.budget_s, lambda e: False)
            ours = results["jaxplain"]
            for peer_name, peer in ((n, r) for n, r in results.items() if n != "jaxplain"):
                rows.append([arch, method, peer_name, h.format_rate(ours.rate), h.format_rate(peer.rate),
                             f"{ours.rate / peer.rate:.2f}x", f"{ours.cpu_rate / peer.cpu_rate:.2f}x",
                             f"{ours.compile_s:.1f}", h.format_bytes(ours.peak_bytes), h.format_bytes(peer.peak_bytes)])
                print(h.markdown_table(headers, rows[-1:]).split("\n", 2)[2], flush=True)
    print()
    print(h.markdown_table(headers, rows))


if __name__ == "__main__":
    main()
