"""The ``jaxplain`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

METHODS: tuple[tuple[str, str, str], ...] = (
    ("saliency", "gradient", "Captum Saliency"),
    ("input_x_gradient", "gradient", "Captum InputXGradient"),
    ("integrated_gradients", "gradient", "Captum IntegratedGradients"),
    ("noise_tunnel", "gradient", "Captum NoiseTunnel (smoothgrad, smoothgrad_sq, vargrad)"),
    ("smoothgrad", "gradient", "Captum NoiseTunnel(Saliency); CaBRNet / xdeep noise conventions"),
    ("gradient_shap", "gradient", "Captum GradientShap"),
    ("guided_backprop", "gradient", "Captum GuidedBackprop; TorchRay guided_backprop"),
    ("deconvolution", "gradient", "Captum Deconvolution; TorchRay deconvnet"),
    ("deeplift", "gradient", "Captum DeepLift (rescale; flavour='captum' for its numbers)"),
    ("deeplift_shap", "gradient", "Captum DeepLiftShap"),
    ("layer_gradcam", "cam", "Captum LayerGradCam; TorchRay grad_cam"),
    ("guided_gradcam", "cam", "Captum GuidedGradCam"),
    ("score_cam", "cam", "Score-CAM authors' code; pytorch-cnn-visualizations ScoreCam"),
    ("layer_activation", "layer", "Captum LayerActivation"),
    ("layer_gradient_x_activation", "layer", "Captum LayerGradientXActivation"),
    ("internal_influence", "layer", "Captum InternalInfluence"),
    ("layer_conductance", "layer", "Captum LayerConductance"),
    ("layer_deeplift", "layer", "Captum LayerDeepLift"),
    ("layer_gradient_shap", "layer", "Captum LayerGradientShap"),
    ("layer_activation_guided_backprop", "layer", "pytorch-cnn-visualizations layer activation with guided backprop"),
    ("convergence_delta", "helper", "Captum compute_convergence_delta"),
)


def _methods(_: argparse.Namespace) -> int:
    width = max(len(name) for name, _, _ in METHODS)
    for name, family, peer in METHODS:
        print(f"{name:<{width}}  {family:<9}  {peer}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxplain`` command."""
    parser = argparse.ArgumentParser(prog="jaxplain", description="Explanation methods in JAX.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("methods", help="list the available methods and the peer each reproduces").set_defaults(
        run=_methods
    )
    arguments = parser.parse_args(argv)
    return arguments.run(arguments)


if __name__ == "__main__":
    sys.exit(main())
