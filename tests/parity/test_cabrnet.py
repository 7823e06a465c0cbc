"""CaBRNet 1.2 prototype models and attributions against ours, on the same weights.

ProtoPNets built by CaBRNet from a configuration (``CaBRNet.build_from_config``) over a
ResNet-18 cut at ``layer2`` and a VGG-11 cut at ``features.10``, seeded random weights and
randomised BatchNorm statistics, 64x64 inputs. Tolerances: similarity maps and logits 1e-4
relative to the reference's largest value; attributions before post-processing 1e-3 of the
reference map's scale (``assert_close``).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from cabrnet.archs.generic.model import CaBRNet
from loguru import logger

import converters
from tests.parity._torch import assert_close, nchw, nhwc

logger.disable("cabrnet")

SIZE = 64
FEATURES = 16


def config(arch: str, layer: str, similarity: str = "ProtoPNetSimilarity", compatibility: bool = False) -> dict:
    """A CaBRNet ProtoPNet configuration: 3 classes, 2 prototypes each, a 16-wide add-on."""
    return {
        "top_arch": {"module": "cabrnet.archs.protopnet.model", "name": "ProtoPNet"},
        "extractor": {
            "backbone": {"arch": arch, "weights": "None", "layer": layer},
            "add_on": {
                "conv1": {"type": "Conv2d", "params": {"out_channels": FEATURES, "kernel_size": 1}},
                "relu1": {"type": "ReLU"},
                "conv2": {"type": "Conv2d", "params": {"out_channels": FEATURES, "kernel_size": 1}},
                "sigmoid": {"type": "Sigmoid"},
            },
        },
        "classifier": {
            "module": "cabrnet.archs.protopnet.decision",
            "name": "ProtoPNetClassifier",
            "params": {"num_classes": 3, "num_proto_per_class": 2, "num_features": FEATURES,
                       "compatibility_mode": compatibility},
        },
        "similarity": {"name": similarity},
    }


def build(arch: str = "resnet18", layer: str = "layer2", seed: int = 0, **options) -> torch.nn.Module:
    """A CaBRNet model with seeded weights and randomised BatchNorm statistics (eval mode)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CaBRNet.build_from_config(copy.deepcopy(config(arch, layer, **options))).eval()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.5, 0.5)
                    module.running_var.uniform_(0.5, 1.5)
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.uniform_(-0.2, 0.2)
    return model


def image(seed: int = 1, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def resnet_pair():
    model = build()
    return model, converters.from_torch(model)


CASES = [
    ("resnet18", "layer2", "ProtoPNetSimilarity", False),
    ("vgg11", "features.10", "LegacyProtoPNetSimilarity", True),
    ("resnet18", "layer3", "ProtoTreeSimilarity", False),
]


@pytest.mark.parametrize("arch,layer,similarity,compatibility", CASES)
def test_similarities_and_logits(arch, layer, similarity, compatibility):
    model = build(arch, layer, similarity=similarity, compatibility=compatibility)
    ours = converters.from_torch(model)
    x = image(batch=2)
    with torch.no_grad():
        theirs = nhwc(model.similarities(nchw(x)))
        logits = model(nchw(x))[0].numpy()
    assert ours.similarities(x).shape == (2, SIZE // 8 if layer != "layer3" else SIZE // 16, *theirs.shape[2:3], 6)
    np.testing.assert_allclose(ours.similarities(x), theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())
    np.testing.assert_allclose(ours(x), logits, rtol=0, atol=1e-4 * np.abs(logits).max())


def test_state_dict_with_config_equals_instance(resnet_pair):
    model, ours = resnet_pair
    loaded = converters.load_cabrnet(model.state_dict(), config("resnet18", "layer2"))
    x = image()
    np.testing.assert_array_equal(loaded.similarities(x), ours.similarities(x))


def test_state_dict_errors_name_keys(resnet_pair):
    model, _ = resnet_pair
    state = dict(model.state_dict())
    del state["extractor.add_on.conv1.bias"]
    state["classifier.extra"] = torch.zeros(1)
    state["classifier.last_layer.weight"] = torch.zeros(3, 5)
    with pytest.raises(ValueError) as error:
        converters.load_cabrnet(state, config("resnet18", "layer2"))
    message = str(error.value)
    for key in ("extractor.add_on.conv1.bias", "classifier.extra", "classifier.last_layer.weight"):
        assert key in message


def test_unsupported_add_on_and_stride_change_are_named():
    model = build()
    model.extractor.add_on.sigmoid = torch.nn.GELU()
    with pytest.raises(ValueError, match=r"extractor\.add_on\.sigmoid.*GELU"):
        converters.from_torch(model)
    model = build()
    model.extractor.convnet.get_submodule("layer2.0.conv1").stride = (1, 1)
    with pytest.raises(ValueError, match=r"extractor\.convnet\.layer2\.0\.conv1.*stride"):
        converters.from_torch(model)
