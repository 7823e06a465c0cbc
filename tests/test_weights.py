"""State-dict key summaries and the zoo-architecture guess (torch-free)."""

import subprocess
import sys

import numpy as np
import pytest

from jaxplain import nets, weights


def test_summary_counts_and_examples_on_a_hand_made_mismatch():
    expected = {f"block{i}.weight": (4, 4) for i in range(8)} | {"head.weight": (2, 4)}
    given = {f"block{i}.weight": (4, 4) for i in range(3)} | {"head.weight": (3, 4), "extra.bias": (1,)}
    summary = weights.summarise_keys(expected, given, what="the test net")
    lines = summary.splitlines()
    assert lines[0] == ("state dict does not fit the test net: 3 of 9 keys match; "
                        "5 missing, 1 unexpected, 1 mis-shaped")
    assert lines[1] == "  missing: block3.weight, block4.weight, block5.weight, block6.weight, block7.weight"
    assert lines[2] == "  unexpected: extra.bias"
    assert lines[3] == "  mis-shaped: head.weight: got (3, 4), expected (2, 4)"
    assert weights.summarise_keys(expected, dict(expected), what="x") == ""


def test_wrong_architecture_checkpoint_gets_a_short_message_naming_its_architecture():
    state = {key: np.zeros(shape, np.float32) for key, shape in weights.zoo_keys("vgg11_bn").items()}
    with pytest.raises(ValueError) as raised:
        weights.variables_from_state_dict(state, nets.build("squeezenet1_1"), (1, 64, 64, 3))
    lines = str(raised.value).splitlines()
    assert lines[0].startswith("state dict does not fit squeezenet1_1: ")
    assert len(lines) <= 6 and max(map(len, lines)) <= 200
    assert "(+" in lines[1]  # more missing names than shown
    assert lines[-1].startswith("  the given keys look like vgg11_bn (54 of 54 names")


def test_a_wrapper_prefix_is_pointed_out_and_stripped_for_the_guess():
    given = {f"module.{key}": shape for key, shape in weights.zoo_keys("alexnet").items()}
    summary = weights.summarise_keys(weights.zoo_keys("alexnet"), given, what="alexnet")
    assert "every given key starts with 'module.'" in summary
    assert summary.splitlines()[-1].startswith("  the given keys look like alexnet (16 of 16")


_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None  # any import of torch now raises ImportError
import numpy as np
from flax import traverse_util
from jaxplain import weights
from jaxplain.cli import main

checkpoint, image, out = sys.argv[1:4]
model = weights.load(checkpoint, "demo", num_classes=3, input_shape=(1, 64, 64, 3))
x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
flat = {f"{c}/{k}": np.asarray(v) for c, tree in model.variables.items()
        for k, v in traverse_util.flatten_dict(tree, sep="/").items()}
np.savez(f"{out}/loaded.npz", logits=np.asarray(model(x)), **flat)
status = main(["explain", image, "--arch", "demo", "--weights", checkpoint, "--num-classes", "3",
               "--size", "64", "--method", "saliency", "--batch-size", "1", "--out", out])
assert sys.modules["torch"] is None, "torch was imported"
sys.exit(status)
"""


def test_safetensors_checkpoint_of_a_zoo_architecture_loads_and_explains_without_torch(tmp_path):
    """The demo architecture in torch's layout (convolutions, batch norms with random statistics, a
    linear head), saved by safetensors.torch; read with torch blocked, compared with ``converters``."""
    torch = pytest.importorskip("torch")
    import converters
    from converters.demo import DemoNetTorch
    from flax import traverse_util
    from safetensors.torch import save_file

    from jaxplain import demo

    torch.manual_seed(0)
    network = DemoNetTorch(num_classes=3).eval()
    for layer in network.features:
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
    checkpoint = tmp_path / "demo.safetensors"
    save_file(network.state_dict(), checkpoint)
    image = demo.sample_images()[0]
    done = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH, str(checkpoint), str(image), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / f"{image.stem}.saliency.npy").exists()
    loaded = np.load(tmp_path / "loaded.npz")
    reference = converters.load(checkpoint, "demo", num_classes=3, input_shape=(1, 64, 64, 3))
    flat = {f"{c}/{k}": np.asarray(v) for c, tree in reference.variables.items()
            for k, v in traverse_util.flatten_dict(tree, sep="/").items()}
    assert set(flat) == set(loaded.files) - {"logits"}
    for name, value in flat.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        theirs = network(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(loaded["logits"], theirs, rtol=1e-4, atol=1e-4)


def test_a_pth_file_without_converters_is_refused_with_the_install_hint(tmp_path):
    with pytest.raises(ValueError, match=r'pip install "\.\[converters\]"'):
        weights.load(tmp_path / "weights.pth", "resnet18")
