"""CaBRNet PRP and SmoothGrad for every prototype of an image at every location, against CaBRNet 1.2.

A CaBRNet ProtoPNet built from a configuration (``--arch`` cut at ``--layer``, a 1x1 add-on of
``--features`` channels, ``--protos`` prototypes per class over ``--classes`` classes), seeded
random weights, converted to Flax.
CaBRNet explains one image and one prototype per call, looping in Python over the similarity
map's locations (one Captum LRP, or one NoiseTunnel of ``--samples`` Saliency draws, per
location); jaxplain explains all prototypes of the image in one call (``proto_idx`` ``[1, P]``),
one forward pass per noise sample with the backward passes vmapped over prototypes and
locations (PRP: one backward pass per prototype, seeded at every location at once).
``similarity_threshold=0`` so every location counts (ProtoPNet similarities are positive).
Rates are images per second (one image = all its prototypes); ``CPU time`` compares images per
CPU-second, which a shared machine's other jobs do not skew. On a GPU CaBRNet is given the CUDA
device (its model and image go there) and peaks are the device allocators' (``_harness``).

CaBRNet's time is linear in the prototypes (one independent call each), so with many prototypes
``--peer-protos K`` times it on the first ``K`` and scales its rate by ``K / P``; its map
difference is then taken over those ``K``. ProtoPNet's CUB configuration (200 classes x 10
prototypes over 128 channels) is ``--classes 200 --protos 10 --features 128``.

    python benchmarks/bench_prototype.py
    python benchmarks/bench_prototype.py --arch resnet50 --layer layer3 --size 112
    python benchmarks/bench_prototype.py --methods smoothgrad --classes 200 --protos 10 --features 128 --peer-protos 6
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _harness as h  # noqa: E402


def cabrnet_model(arch: str, layer: str, protos: int, seed: int, classes: int = 3, features: int = 64):
    import torch
    from cabrnet.archs.generic.model import CaBRNet

    config = {
        "top_arch": {"module": "cabrnet.archs.protopnet.model", "name": "ProtoPNet"},
        "extractor": {
            "backbone": {"arch": arch, "weights": "None", "layer": layer},
            "add_on": {
                "conv1": {"type": "Conv2d", "params": {"out_channels": features, "kernel_size": 1}},
                "relu1": {"type": "ReLU"},
                "conv2": {"type": "Conv2d", "params": {"out_channels": features, "kernel_size": 1}},
                "sigmoid": {"type": "Sigmoid"},
            },
        },
        "classifier": {"module": "cabrnet.archs.protopnet.decision", "name": "ProtoPNetClassifier",
                       "params": {"num_classes": classes, "num_proto_per_class": protos,
                                  "num_features": features}},
        "similarity": {"name": "ProtoPNetSimilarity"},
    }
    torch.manual_seed(seed)
    return CaBRNet.build_from_config(copy.deepcopy(config)).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--layer", default="layer2")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--protos", type=int, default=2, help="prototypes per class")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--features", type=int, default=64, help="add-on output channels")
    parser.add_argument("--peer-protos", type=int, help="time CaBRNet on this many prototypes and scale (default all)")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--methods", default="prp,smoothgrad")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=120.0)
    parser.add_argument("--batch-size", type=int, help="jaxplain's batch_size (noise samples per step; default all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from cabrnet.core.visualization import gradients
    from cabrnet.core.visualization.prp_utils import get_cabrnet_lrp_composite_model
    from loguru import logger
    from PIL import Image

    import converters
    import jaxplain.attribution.prototype as proto

    logger.disable("cabrnet")
    model = cabrnet_model(args.arch, args.layer, args.protos, args.seed, args.classes, args.features)
    lrp_model = get_cabrnet_lrp_composite_model(model)
    ours = converters.from_torch(model)
    device = h.torch_device()
    h.to_device(model)
    h.to_device(lrp_model)
    count = args.classes * args.protos
    peer_count = min(args.peer_protos or count, count)
    inputs = np.random.default_rng(args.seed).standard_normal((1, args.size, args.size, 3)).astype(np.float32)
    x, xj = h.to_device(torch.from_numpy(inputs).permute(0, 3, 1, 2).contiguous()), jnp.asarray(inputs)
    image = Image.new("RGB", (args.size, args.size))
    everything = jnp.arange(count)[None]
    key = jax.random.PRNGKey(args.seed)
    hw = ours.similarities(xj).shape[1:3]
    print(f"# bench_prototype: {h.device_description()}; "
          f"JAX {jax.__version__}; torch {torch.__version__}; {args.arch} cut at {args.layer}, {args.size} px, "
          f"{count} prototypes over {args.features} channels x {hw[0]}x{hw[1]} locations, {args.samples} noise "
          f"samples; CaBRNet timed on {peer_count} prototypes, its rate scaled by {peer_count}/{count}\n")
    options = dict(similarity_threshold=0.0, normalize=True)
    calls = {
        "prp": (lambda: [gradients.prp(lrp_model, image, x, p, device, **options) for p in range(peer_count)],
                lambda: proto.prototype_prp(ours, xj, everything, **options)),
        "smoothgrad": (lambda: [gradients.smoothgrad(model, image, x, p, device, num_samples=args.samples, **options)
                                for p in range(peer_count)],
                       lambda: proto.prototype_smoothgrad(ours, xj, everything, key=key, num_samples=args.samples,
                                                          batch_size=args.batch_size, **options)),
    }
    headers = ["method", "jaxplain img/s", "CaBRNet img/s", "jaxplain / CaBRNet", "same, CPU time", "compile s",
               "jaxplain peak", "CaBRNet peak", "max abs diff (normalised maps)"]
    rows = []
    for method in args.methods.split(","):
        theirs_call, ours_call = calls[method]
        last = {}

        def run_theirs(call=theirs_call):
            last["CaBRNet"] = np.stack(call())
            return last["CaBRNet"]

        def run_ours(call=ours_call):
            last["jaxplain"] = call()
            return last["jaxplain"]

        results = h.compare([h.Contender("jaxplain", run_ours, h.sync, h.jax_meter()),
                             h.Contender("CaBRNet", run_theirs, h.sync, h.torch_meter())], 1, args.reps, args.budget_s,
                            lambda e: False)
        mine, theirs = results["jaxplain"], results["CaBRNet"]
        theirs.rate, theirs.cpu_rate = theirs.rate * peer_count / count, theirs.cpu_rate * peer_count / count
        difference = np.abs(np.asarray(last["jaxplain"])[0, :peer_count] - last["CaBRNet"]).max()
        rows.append([method, h.format_rate(mine.rate), h.format_rate(theirs.rate), f"{mine.rate / theirs.rate:.1f}x",
                     f"{mine.cpu_rate / theirs.cpu_rate:.1f}x", f"{mine.compile_s:.1f}",
                     h.format_bytes(mine.peak_bytes),
                     h.format_bytes(theirs.peak_bytes), f"{difference:.1e}"])
        print(h.markdown_table(headers, rows[-1:]).split("\n", 2)[2], flush=True)
    print()
    print(h.markdown_table(headers, rows))


if __name__ == "__main__":
    main()
