"""Every zoo architecture against torchvision, loading weights from files, and refusals.

Tolerance: ``max |ours - torch| <= 1e-4 * max(1, max |torch logits|)`` in float32, on
seeded random weights with randomised BatchNorm state (``seeded_torchvision_model``),
a batch of two at two input sizes, one of them non-square. Each architecture's
forward is compiled once per input size, at XLA backend optimisation level 0: these
tests check numbers, not speed, and that level more than halves compile time.

The inputs are 64x64 and 64x96: the deepest maps of the 32x-downsampling nets are then
2x2 and 2x3, smaller than a 3x3 kernel, which exercises the patches path of
``jaxplain.cpu.small_conv`` (XLA CPU's own convolution is pathologically slow there).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import torch

import converters
from jaxplain import nets
from jaxplain.model import Model

TOLERANCE = 1e-4
NUM_CLASSES = 10
SIZES = ((64, 64), (64, 96))
"""Input ``(height, width)`` pairs; the deepest maps of the 32x-downsampling nets are 2x2 and 2x3."""


forward = jax.jit(lambda model, images: model(images), compiler_options={"xla_backend_optimization_level": 0})


def _compile_all(model: Model, shapes: list[tuple[int, ...]]) -> list:
    """``forward`` compiled for each NHWC shape, one after the other. XLA CPU segfaulted compiling
    DenseNet-169 in long-lived CI workers, side by side in threads and then one after the other too;
    the test command's crash-only rerun (README) covers it."""
    return [forward.lower(model, jax.ShapeDtypeStruct(shape, jnp.float32)).compile() for shape in shapes]


def _torch_logits(torch_model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()


def _assert_logits_close(ours: np.ndarray, theirs: np.ndarray, label: str) -> None:
    assert ours.shape == theirs.shape, f"{label}: shape {ours.shape} != torch's {theirs.shape}"
    error = float(np.abs(ours - theirs).max())
    bound = TOLERANCE * max(1.0, float(np.abs(theirs).max()))
    assert error <= bound, f"{label}: max |diff| {error:.3g} > {bound:.3g}"


@pytest.mark.parametrize("arch", [arch for arch in nets.ARCHITECTURES if arch != "demo"])  # demo: tests/test_demo.py
def test_logits_match_torchvision(arch, seeded_torchvision_model):
    torch_model = seeded_torchvision_model(arch, num_classes=NUM_CLASSES)
    model = converters.from_torch(torch_model)
    assert model.name == arch
    shapes = [(2, height, width, 3) for height, width in SIZES]
    rng = np.random.default_rng(0)
    for shape, compiled in zip(shapes, _compile_all(model, shapes)):
        images = rng.standard_normal(shape, dtype=np.float32)
        ours = np.asarray(compiled(model, jnp.asarray(images)))
        _assert_logits_close(ours, _torch_logits(torch_model, images), f"{arch} at {shape[1]}x{shape[2]}")


@pytest.mark.parametrize(
    "torch_arch,zoo_arch,kwargs,name",
    [
        (
            "DenseNet",
            "densenet121",
            {"growth_rate": 8, "block_config": (2, 3), "num_init_features": 16, "bn_size": 2},
            "densenet",
        ),
        ("mobilenet_v2", "mobilenet_v2", {"width_mult": 0.5}, "mobilenetv2"),
    ],
)
def test_custom_configuration_is_read_off_the_torch_model(torch_arch, zoo_arch, kwargs, name, seeded_torchvision_model):
    torch_model = seeded_torchvision_model(torch_arch, num_classes=NUM_CLASSES, **kwargs)
    model = converters.from_torch(torch_model)
    assert model.name == name
    assert model.module == nets.build(zoo_arch, num_classes=NUM_CLASSES, **kwargs)
    images = np.random.default_rng(2).standard_normal((2, 96, 128, 3), dtype=np.float32)
    ours = np.asarray(forward(model, jnp.asarray(images)))
    _assert_logits_close(ours, _torch_logits(torch_model, images), f"{torch_arch} with {kwargs}")


LOAD_ARCH = "squeezenet1_1"


@pytest.fixture(scope="module")
def small_torch_model(seeded_torchvision_model):
    return seeded_torchvision_model(LOAD_ARCH, num_classes=NUM_CLASSES)


@pytest.fixture(scope="module")
def small_model(small_torch_model):
    return converters.from_torch(small_torch_model)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_from_file(suffix, small_torch_model, small_model, tmp_path):
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save(small_torch_model.state_dict(), path)
    else:
        safetensors.torch.save_file(small_torch_model.state_dict(), path)
    loaded = converters.load(path, LOAD_ARCH, num_classes=NUM_CLASSES)
    assert loaded.name == LOAD_ARCH
    assert loaded.module == small_model.module
    jax.tree.map(np.testing.assert_array_equal, loaded.variables, small_model.variables)
    images = np.random.default_rng(1).standard_normal((2, 96, 128, 3), dtype=np.float32)
    ours = np.asarray(forward(loaded, jnp.asarray(images)))
    _assert_logits_close(ours, _torch_logits(small_torch_model, images), f"{LOAD_ARCH} from {suffix}")


def test_bad_state_dict_names_every_bad_key(small_torch_model, tmp_path):
    state = small_torch_model.state_dict()
    del state["features.3.squeeze.weight"]
    state["features.99.weight"] = torch.zeros(3)
    state["classifier.1.weight"] = torch.zeros(NUM_CLASSES, 512, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as raised:
        converters.load(path, LOAD_ARCH, num_classes=NUM_CLASSES)
    message = str(raised.value)
    assert "1 missing, 1 unexpected, 1 mis-shaped" in message
    assert "missing: features.3.squeeze.weight" in message
    assert "unexpected: features.99.weight" in message
    assert "classifier.1.weight: got (10, 512, 3, 3), expected (10, 512, 1, 1)" in message


def test_unsupported_module_is_named(seeded_torchvision_model):
    torch_model = seeded_torchvision_model(LOAD_ARCH, num_classes=NUM_CLASSES)
    torch_model.features[3].expand3x3_activation = torch.nn.GELU()
    reason = converters.zoo_mismatch(torch_model)
    assert "features.3.expand3x3_activation (torch.nn.modules.activation.GELU)" in reason


def test_departing_structure_is_named(seeded_torchvision_model):
    torch_model = seeded_torchvision_model(LOAD_ARCH, num_classes=NUM_CLASSES)
    torch_model.features[2] = torch.nn.AvgPool2d(3, 2, ceil_mode=True)
    torch_model.features[5].ceil_mode = False
    torch_model.features[6].expand3x3.padding = (2, 2)
    message = converters.zoo_mismatch(torch_model)
    assert "features.2: torch has AvgPool2d, the zoo MaxPool2d" in message
    assert "features.5 (MaxPool2d): ceil_mode is False in torch, True in the zoo" in message
    assert "features.6.expand3x3 (Conv2d): padding is (2, 2) in torch, (1, 1) in the zoo" in message


def test_unknown_model_class_goes_through_export():
    torch_model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).eval()
    assert "unsupported model class torch.nn.modules.container.Sequential" in converters.zoo_mismatch(torch_model)
    model = converters.from_torch(torch_model, input_shape=(1, 8, 8, 3))
    assert type(model.module).__name__ == "ExportedGraph"
    images = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    expected = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).detach().numpy()
    np.testing.assert_allclose(np.asarray(model(images)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("notes.pth", b"these are not weights", "is not a readable state dict"),
        ("notes.safetensors", b"these are not weights", "is not a readable state dict"),
        ("tensors.pth", [torch.zeros(2)], "holds a list, not a state dict"),
    ],
)
def test_non_state_dict_file_is_refused(name, content, reason, tmp_path):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ValueError, match=reason):
        converters.load(path, LOAD_ARCH, num_classes=NUM_CLASSES)
