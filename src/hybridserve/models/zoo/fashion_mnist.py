"""The bundled ``fashion-mnist`` family: five models of increasing size, in cascade order.

Every model is an ``nn.Sequential`` so the planner can cut it into pipeline parts at layer
boundaries. Inputs are 1×28×28 float images normalised with the training set's mean and std.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

FAMILY = "fashion-mnist"
#: Pixel statistics of the Fashion-MNIST training set (values scaled to [0, 1] first).
MEAN = 0.2860
STD = 0.3530


def linear() -> nn.Sequential:
    """Multinomial logistic regression: 7.9 k parameters."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def mlp() -> nn.Sequential:
    """One hidden layer of 256 units."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def cnn_small() -> nn.Sequential:
    """Two narrow conv layers (8, 16 channels) and a 64-unit head."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def cnn() -> nn.Sequential:
    """Two conv layers (32, 64 channels) and a 256-unit head."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 256),
        nn.ReLU(),
        nn.Dropout(0.25),
        nn.Linear(256, 10),
    )


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def vgg() -> nn.Sequential:
    """The giant: six conv3×3-BN-ReLU layers (40/40/80/80/160/160), three pools, 1440-512-10."""
    return nn.Sequential(
        *_conv_bn(1, 40),
        *_conv_bn(40, 40),
        nn.MaxPool2d(2),
        *_conv_bn(40, 80),
        *_conv_bn(80, 80),
        nn.MaxPool2d(2),
        *_conv_bn(80, 160),
        *_conv_bn(160, 160),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(160 * 3 * 3, 512),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(512, 10),
    )


#: Cascade order, smallest first. Values build an untrained module.
ARCHITECTURES: dict[str, Callable[[], nn.Sequential]] = {
    "linear": linear,
    "mlp": mlp,
    "cnn-small": cnn_small,
    "cnn": cnn,
    "vgg": vgg,
}


def build(name: str) -> nn.Sequential:
    """Loader for the family YAML form: ``hybridserve.models.zoo.fashion_mnist:build``."""
    return ARCHITECTURES[name]()
