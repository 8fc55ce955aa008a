"""Model, data partitions, local training and evaluation (PyTorch)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn


class Net(nn.Module):
    """64 -> 32 -> 10 MLP for 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _split():
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    return train_test_split(x, digits.target, test_size=0.25, random_state=0, stratify=digits.target)


def load_partition(partition_id: int, num_partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """The IID shard ``partition_id`` of the training split (images in [0, 1], labels)."""
    x_train, _, y_train, _ = _split()
    rows = np.array_split(np.random.default_rng(0).permutation(len(y_train)), num_partitions)[partition_id]
    return x_train[rows], y_train[rows]


def load_test() -> tuple[np.ndarray, np.ndarray]:
    _, x_test, _, y_test = _split()
    return x_test, y_test


def train(net: Net, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, seed: int) -> float:
    torch.manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    loss = torch.tensor(0.0)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(yt)).split(16):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    return float(loss)


@torch.no_grad()
def accuracy(net: Net, x: np.ndarray, y: np.ndarray) -> float:
    net.eval()
    return float((net(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
