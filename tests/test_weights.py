"""State-dict key summaries and the zoo-architecture guess (torch-free)."""

import numpy as np
import pytest

from converters.core import variables_from_state_dict
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
        variables_from_state_dict(state, nets.build("squeezenet1_1"), (1, 64, 64, 3))
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
