"""Loading a user's PyTorch model without pickle: code the user names, weights from safetensors."""

from __future__ import annotations

import importlib
from pathlib import Path

from mithridate.errors import DataError


def load_user_model(spec: str, weights: str | Path | None = None):
    """``spec`` is ``"package.module:factory"``, a callable returning a ``torch.nn.Module``; ``weights`` an
    optional ``.safetensors`` file of its state dict. (``torch.load`` unpickles, so arbitrary code could run
    from an untrusted checkpoint; safetensors holds only tensors.)"""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise DataError(f"--model takes 'package.module:factory', got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise DataError(f"cannot import the model factory {spec!r}: {exc}") from exc
    model = factory()
    if weights is not None:
        from safetensors.torch import load_file

        path = Path(weights)
        if path.suffix != ".safetensors" or not path.exists():
            raise DataError(f"{path}: weights must be an existing .safetensors file")
        try:
            model.load_state_dict(load_file(path))
        except Exception as exc:
            raise DataError(f"{path}: the weights do not fit the model: {str(exc).splitlines()[0]}") from exc
    model.eval()
    return model
