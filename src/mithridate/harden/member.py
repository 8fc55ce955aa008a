"""A :class:`Member`: an encoder and a network fitted on some rows, the unit every hardened trainer is built
of. A member learns everything from its own rows, the encoder's statistics included, so a poisoned row
moves only the members whose rows held it: what a certificate of a partition ensemble counts on.

Tables: numbers median-imputed (with a missing indicator) and standardised, categories one-hot over their
most frequent levels; then a one-hidden-layer network. Images: scaled by the rows' value range; then
:class:`~mithridate.represent.cnn.SmallCNN`. The encoder's state is plain JSON and the network's weights are
arrays, so a member saves as safetensors + JSON and never needs pickle. (The scan's
:class:`~mithridate.represent.table.TableEncoder` is not used: its state lives in scikit-learn objects, and
it types columns by their dtype over all rows, which one poisoned row can change.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from mithridate.represent.cnn import SmallCNN, to_nchw

#: optimiser steps a member trains for (between 10 and 100 epochs): small partitions get many passes
STEPS = 1_000
MAX_LEVELS = 20


def canonical(col: pd.Series) -> pd.Series:
    """Each cell as the text it stands for, whatever the column's dtype: a number (or text that reads as
    one) as ``repr(float)``, so 3, 3.0 and "3" agree; other text as itself; missing as ``None``. One odd row
    can change a column's dtype when a file is read (an int column turns float, or text), and nothing a
    member learns or a row hashes to may depend on other rows."""
    numbers = pd.to_numeric(col, errors="coerce")
    text = col.astype(object).map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    out = text.where(numbers.isna(), numbers.map(lambda v: repr(float(v))))
    return out.where(col.notna(), None)


def fit_encoder(features: pd.DataFrame | np.ndarray) -> dict:
    """The encoder's state, learnt from these rows only (JSON). A column is numeric for this member when all
    of its own values read as numbers.

    >>> enc = fit_encoder(pd.DataFrame({"a": [1.0, None, 3.0], "b": ["x", "y", "x"]}))
    >>> encode(pd.DataFrame({"a": [2.0], "b": ["z"]}), enc).tolist()  # a, a missing?, b=x, b=y, b other
    [[0.0, 0.0, 0.0, 0.0, 1.0]]
    """
    if not isinstance(features, pd.DataFrame):
        x = np.asarray(features, dtype=np.float64)
        return {"kind": "image", "lo": float(x.min()), "hi": float(x.max()), "shape": list(x.shape[1:])}
    columns = []
    for name in features.columns:
        col = features[name]
        numbers = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        if not pd.api.types.is_bool_dtype(col) and (np.isnan(numbers) == col.isna().to_numpy()).all():
            seen = numbers[~np.isnan(numbers)]
            median = float(np.median(seen)) if len(seen) else 0.0
            filled = np.where(np.isnan(numbers), median, numbers)
            columns.append({"name": str(name), "type": "number", "median": median, "mean": float(filled.mean()),
                            "scale": float(filled.std()) or 1.0, "missing": bool(np.isnan(numbers).any())})
        else:
            counts = canonical(col).dropna().value_counts()
            columns.append({"name": str(name), "type": "category",
                            "levels": counts.index[:MAX_LEVELS - 1].tolist()})
    return {"kind": "table", "columns": columns}


def encode(features: pd.DataFrame | np.ndarray, encoder: dict) -> np.ndarray:
    """Rows as the network reads them: float32, ``(n, C, H, W)`` for images, ``(n, width)`` for tables."""
    if encoder["kind"] == "image":
        x = to_nchw(np.asarray(features))
        return (x - encoder["lo"]) / max(encoder["hi"] - encoder["lo"], 1e-12)
    parts = []
    for c in encoder["columns"]:
        col = features[c["name"]]
        if c["type"] == "number":
            values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            missing = np.isnan(values)
            parts.append((np.where(missing, c["median"], values) - c["mean"]) / c["scale"])
            if c["missing"]:
                parts.append(missing.astype(np.float64))
        else:
            text = canonical(col)
            for level in c["levels"]:
                parts.append((text == level).to_numpy(dtype=np.float64))
            parts.append((~text.isin(c["levels"]) & text.notna()).to_numpy(dtype=np.float64))  # rarer levels
    return np.column_stack(parts).astype(np.float32) if parts else np.zeros((len(features), 0), np.float32)


ARCHITECTURES = ("cnn", "mlp")


def network(encoder: dict, width: int, n_classes: int, arch: str = "cnn") -> nn.Module:
    """The network: for images a small CNN (``arch="cnn"``) or one hidden layer of 128 units over the
    pixels (``"mlp"``, about 20 times cheaper: what an ensemble of many members uses); for tables one hidden
    layer of 64 units."""
    if encoder["kind"] == "image":
        shape = encoder["shape"]
        channels = 1 if len(shape) == 2 else shape[2]
        if arch == "cnn":
            return SmallCNN(channels, n_classes, size=min(shape[:2]))
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), 128), nn.ReLU(), nn.Linear(128, n_classes))
    return nn.Sequential(nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, n_classes))


def train(net: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int | None = None, batch_size: int = 64,
          lr: float = 2e-3, weight_decay: float = 1e-4, seed: int = 0) -> int:
    """Train in place with Adam at a constant rate; returns the epochs run. (A one-cycle schedule, which
    warms up and anneals, under-trained the members of small partitions: with about 100 steps each, DPA's
    certified accuracy at radius 10 on digits was 0.64 against 0.72 at a constant rate.)"""
    torch.manual_seed(seed)
    inputs, targets = torch.from_numpy(np.array(x, dtype=np.float32)), torch.as_tensor(np.array(y), dtype=torch.long)
    batches = -(-len(inputs) // batch_size)
    epochs = epochs or int(np.clip(round(STEPS / batches), 10, 100))
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=gen)
        for start in range(0, len(inputs), batch_size):
            batch = order[start:start + batch_size]
            opt.zero_grad()
            loss_fn(net(inputs[batch]), targets[batch]).backward()
            opt.step()
    net.eval()
    return epochs


class Member:
    """An encoder and a network. :meth:`fit` learns both from the given rows; :meth:`proba` reads rows;
    :meth:`tensors` and :meth:`config` are its whole state (arrays and JSON)."""

    def __init__(self, encoder: dict, net: nn.Module, n_classes: int, width: int, arch: str = "cnn"):
        self.encoder, self.net, self.n_classes, self.width, self.arch = encoder, net, n_classes, width, arch

    @classmethod
    def fit(cls, features, y: np.ndarray, n_classes: int, epochs: int | None = None, seed: int = 0,
            arch: str = "cnn") -> Member:
        encoder = fit_encoder(features)
        x = encode(features, encoder)
        width = x.shape[1] if x.ndim == 2 else 0
        with torch.random.fork_rng():  # the caller's random stream is left as it was
            torch.manual_seed(seed)
            member = cls(encoder, network(encoder, width, n_classes, arch), n_classes, width, arch)
            train(member.net, x, y, epochs, seed=seed)
        return member

    def logits(self, features) -> np.ndarray:
        with torch.no_grad():
            return self.net(torch.from_numpy(encode(features, self.encoder))).numpy()

    def proba(self, features) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.logits(features)), dim=1).numpy()

    def tensors(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {f"{prefix}{k}": v.detach().numpy().copy() for k, v in self.net.state_dict().items()}

    def config(self) -> dict:
        return {"encoder": self.encoder, "n_classes": self.n_classes, "width": self.width, "arch": self.arch}

    @classmethod
    def restore(cls, config: dict, tensors: dict[str, np.ndarray], prefix: str = "") -> Member:
        with torch.device("meta"):  # no memory until the weights arrive: a config cannot ask for gigabytes
            net = network(config["encoder"], config["width"], config["n_classes"], config.get("arch", "cnn"))
        state = {k[len(prefix):]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith(prefix)}
        net.load_state_dict(state, strict=True, assign=True)
        net.eval()
        return cls(config["encoder"], net, config["n_classes"], config["width"], config.get("arch", "cnn"))
