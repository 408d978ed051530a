"""Neural-network layers whose gradients are gpuconv convolutions.

``Conv2D`` and friends with explicit ``forward``/``backward`` (no autograd
graph), the losses ``mse_loss`` and ``cross_entropy`` returning their
gradient, the ``SGD`` optimizer and a small ``Trainer``.  Everything computes
through gpuconv's ops, so it runs on whichever backend is chosen.

Examples
--------
>>> import numpy as np
>>> from gpuconv import nn
>>> net = nn.Sequential(nn.Conv2D(1, 4, 3, padding=1, seed=0), nn.ReLU(), nn.MaxPool2D(2),
...                     nn.Flatten(), nn.Linear(4 * 4 * 4, 10, seed=1))
>>> x = np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32)
>>> loss, grad = nn.cross_entropy(net(x), np.arange(8))
>>> net.zero_grad()
>>> net.backward(grad).shape
(8, 1, 8, 8)
"""

from . import functional
from ._module import Module, Parameter, Sequential
from .layers import AvgPool2D, Conv2D, Flatten, Linear, MaxPool2D, ReLU
from .losses import LossResult, cross_entropy, mse_loss
from .optim import SGD
from .trainer import ArrayLoader, History, Trainer

__all__ = [
    "ArrayLoader",
    "AvgPool2D",
    "Conv2D",
    "Flatten",
    "History",
    "Linear",
    "LossResult",
    "MaxPool2D",
    "Module",
    "Parameter",
    "ReLU",
    "SGD",
    "Sequential",
    "Trainer",
    "cross_entropy",
    "functional",
    "mse_loss",
]
