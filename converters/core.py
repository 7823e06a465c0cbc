"""Map a PyTorch state dict onto the variables of a zoo module: :mod:`jaxplain.weights`, torch-free,
so that ``.safetensors`` checkpoints load without torch; the names stay here for ``converters``."""

from jaxplain.weights import IGNORED_BUFFERS, build_model, flat_template, template_variables, variables_from_state_dict

__all__ = ["IGNORED_BUFFERS", "build_model", "flat_template", "template_variables", "variables_from_state_dict"]
