"""A small convolutional network for image data, trained with PyTorch on the CPU in seconds.

It gives the scan an image representation (the penultimate layer) and the red team a reference model.
:func:`layer_embeddings` reads any layer of any user-supplied ``torch.nn.Module`` the same way.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class SmallCNN(nn.Module):
    """Two 3x3 convolutions, a 2x2 max-pool, pooling to 4x4, a 128-unit layer (the penultimate), a head.

    Images of 16 pixels or more a side are pooled once more after the first convolution (``size``): the
    second convolution, the costliest layer, then runs on a quarter of the pixels (28x28 MNIST trains
    about four times faster), and 8x8 images keep their full resolution."""

    def __init__(self, in_channels: int, n_classes: int, width: int = 32, embed_dim: int = 128,
                 size: int = 8):
        super().__init__()
        early = [nn.MaxPool2d(2)] if size >= 16 else []
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), *early,
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(2 * width * 16, embed_dim), nn.ReLU(),
        )
        self.head = nn.Linear(embed_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def to_nchw(images: np.ndarray) -> np.ndarray:
    """(n, H, W) or (n, H, W, C) to (n, C, H, W) float32."""
    images = np.asarray(images, dtype=np.float32)
    return np.array(images[:, None]) if images.ndim == 3 else np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def layer_embeddings(
    model: nn.Module, inputs: torch.Tensor, layer: str | None = None, batch_size: int = 1024
) -> np.ndarray:
    """Activations of ``layer`` (a module name from ``model.named_modules()``), flattened per row.

    ``layer=None`` means the penultimate representation: the input of the last ``nn.Linear``.
    """
    modules = dict(model.named_modules())
    if layer is None:
        linears = [name for name, m in modules.items() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("the model has no nn.Linear layer; name the layer to read")
        target, read_input = modules[linears[-1]], True
    elif layer in modules:
        target, read_input = modules[layer], False
    else:
        raise ValueError(f"no layer {layer!r}; layers are {', '.join(n for n in modules if n)}")
    captured: list[torch.Tensor] = []

    def hook(_module, args, output):
        captured.append((args[0] if read_input else output).detach().flatten(1))

    handle = target.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                model(inputs[start:start + batch_size])
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(captured).numpy()


STEPS = 1_000
"""Optimiser steps :class:`CNNClassifier` aims for when ``epochs`` is not given."""
MIN_EPOCHS, MAX_EPOCHS = 10, 30
"""The bounds on that rule's passes over the data. Fewer passes would scan big sets far faster, but cost
quality (``benchmarks/image_speed.py``, docs/scale.md): on 20,000 images made from MNIST's, 3-4 passes
instead of 10 scanned in 2.4-2.8 minutes instead of 5.6-6.2, with flip F1 0.937 against 0.963 and the
backdoor finding's precision 0.85-0.87 against 0.89-0.90 (two seeds; recall equal)."""


def default_epochs(n_rows: int, batch_size: int) -> int:
    """Passes over ``n_rows`` for about :data:`STEPS` optimiser steps, within the bounds.

    >>> default_epochs(1_797, 64), default_epochs(5_000, 64), default_epochs(60_000, 64)
    (30, 13, 10)
    """
    batches = -(-n_rows // batch_size)
    return int(np.clip(round(STEPS / batches), MIN_EPOCHS, MAX_EPOCHS))


class CNNClassifier:
    """Scikit-learn-style wrapper: ``fit(images, y)``, ``predict_proba``, ``predict``, ``embed``.

    Images are scaled by the value range seen in ``fit``. Seeded: the same data and ``random_state`` give
    the same model. ``epochs=None`` trains for about :data:`STEPS` optimiser steps (:func:`default_epochs`:
    30 passes up to about 2,000 images, 10 from about 6,400 on): big sets need fewer passes to learn.
    """

    def __init__(self, epochs: int | None = None, batch_size: int = 64, lr: float = 2e-3,
                 weight_decay: float = 1e-4, random_state: int = 0):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.random_state = random_state

    def _tensor(self, images: np.ndarray) -> torch.Tensor:
        x = to_nchw(images)
        return torch.from_numpy((x - self.lo_) / max(self.hi_ - self.lo_, 1e-12))

    def fit(self, images: np.ndarray, y: np.ndarray, n_classes: int | None = None) -> CNNClassifier:
        torch.manual_seed(self.random_state)
        x = to_nchw(images)
        self.lo_, self.hi_ = float(x.min()), float(x.max())
        self.n_classes_ = int(n_classes or (np.max(y) + 1))
        self.model_ = SmallCNN(x.shape[1], self.n_classes_, size=min(x.shape[2:]))
        inputs, targets = self._tensor(images), torch.as_tensor(np.array(y), dtype=torch.long)
        opt = torch.optim.AdamW(self.model_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        batches = -(-len(inputs) // self.batch_size)
        self.epochs_ = self.epochs or default_epochs(len(inputs), self.batch_size)
        steps = self.epochs_ * batches
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=steps)
        gen = torch.Generator().manual_seed(self.random_state)
        loss_fn = nn.CrossEntropyLoss()
        self.model_.train()
        for _ in range(self.epochs_):
            order = torch.randperm(len(inputs), generator=gen)
            for start in range(0, len(inputs), self.batch_size):
                batch = order[start:start + self.batch_size]
                opt.zero_grad()
                loss_fn(self.model_(inputs[batch]), targets[batch]).backward()
                opt.step()
                sched.step()
        self.model_.eval()
        return self

    def logits(self, images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model_(self._tensor(images)).numpy()

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.logits(images)), dim=1).numpy()

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.logits(images).argmax(1)

    def embed(self, images: np.ndarray, layer: str | None = None) -> np.ndarray:
        """The penultimate layer (or ``layer``) for each image."""
        return layer_embeddings(self.model_, self._tensor(images), layer)
