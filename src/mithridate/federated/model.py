"""A tiny model for federated experiments on small images such as digits, as one flat parameter vector.

Federated rules see a model as one flat float vector. :class:`FlatModel` is a one-hidden-layer MLP
(64 -> 32 -> 10 for 8x8 digits, 2,410 parameters) written directly in numpy (forward, backward, SGD), so
20 clients x 20 rounds train in a few seconds on one core, whatever else the machine runs. The runnable
Flower example (``examples/flower_app``) trains the same architecture in PyTorch.

>>> import numpy as np
>>> from mithridate.data import demo
>>> ds = demo("digits")
>>> fm = FlatModel.for_images(ds.features.shape[1:], n_classes=10, seed=0)
>>> x, y = fm.inputs(ds.features), np.asarray(ds.y)
>>> theta = fm.train(fm.initial(), x[:1000], y[:1000], epochs=5, lr=0.1)
>>> fm.accuracy(theta, x[1000:], y[1000:]) > 0.85
True
"""

from __future__ import annotations

import numpy as np


class FlatModel:
    """MLP ``n_inputs -> hidden (ReLU) -> n_classes`` trained by minibatch SGD on cross-entropy."""

    def __init__(self, n_inputs: int, n_classes: int, hidden: int = 32, scale: float = 16.0, seed: int = 0):
        self.n_inputs, self.n_classes, self.hidden, self.scale, self.seed = n_inputs, n_classes, hidden, scale, seed
        self._shapes = [(n_inputs, hidden), (hidden,), (hidden, n_classes), (n_classes,)]

    @classmethod
    def for_images(cls, shape: tuple, n_classes: int, hidden: int = 32, seed: int = 0,
                   scale: float = 16.0) -> FlatModel:
        return cls(int(np.prod(shape)), n_classes, hidden, scale, seed)

    @property
    def n_params(self) -> int:
        return sum(int(np.prod(s)) for s in self._shapes)

    def inputs(self, features: np.ndarray) -> np.ndarray:
        """Images (n, H, W[, C]) to float32 rows (n, H*W*C) divided by ``scale``."""
        return np.asarray(features, dtype=np.float32).reshape(len(features), -1) / self.scale

    def initial(self) -> np.ndarray:
        """PyTorch's default ``nn.Linear`` initialisation, seeded."""
        rng = np.random.default_rng(self.seed)
        parts = []
        for fan_in, shape in ((self.n_inputs, self._shapes[0]), (self.n_inputs, self._shapes[1]),
                              (self.hidden, self._shapes[2]), (self.hidden, self._shapes[3])):
            bound = 1 / np.sqrt(fan_in)
            parts.append(rng.uniform(-bound, bound, size=shape).ravel())
        return np.concatenate(parts).astype(np.float32)

    def unpack(self, theta: np.ndarray) -> list[np.ndarray]:
        out, at = [], 0
        for s in self._shapes:
            size = int(np.prod(s))
            out.append(theta[at:at + size].reshape(s))
            at += size
        return out

    def logits(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        w1, b1, w2, b2 = self.unpack(np.asarray(theta, dtype=np.float32))
        return np.maximum(x @ w1 + b1, 0) @ w2 + b2

    def train(self, theta: np.ndarray, x: np.ndarray, y, epochs: int = 1, lr: float = 0.1,
              batch_size: int = 16, seed: int = 0) -> np.ndarray:
        """Parameters after ``epochs`` of minibatch SGD from ``theta`` (a new array; ``theta`` is kept)."""
        theta = np.array(theta, dtype=np.float32)
        w1, b1, w2, b2 = self.unpack(theta)  # views: updated in place below
        y = np.asarray(y)
        rng = np.random.default_rng(seed)
        for _ in range(epochs):
            order = rng.permutation(len(y))
            for start in range(0, len(y), batch_size):
                idx = order[start:start + batch_size]
                xb, yb = x[idx], y[idx]
                pre = xb @ w1 + b1
                h = np.maximum(pre, 0)
                z = h @ w2 + b2
                p = np.exp(z - z.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                p[np.arange(len(yb)), yb] -= 1
                p /= len(yb)
                dh = (p @ w2.T) * (pre > 0)
                w2 -= lr * (h.T @ p)
                b2 -= lr * p.sum(axis=0)
                w1 -= lr * (xb.T @ dh)
                b1 -= lr * dh.sum(axis=0)
        return theta

    def predict(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        return self.logits(theta, x).argmax(axis=1)

    def accuracy(self, theta: np.ndarray, x: np.ndarray, y) -> float:
        return float((self.predict(theta, x) == np.asarray(y)).mean())
