"""The sound CNN of ``sound_cnn.py`` squeezed through a two-unit bottleneck, for ``digits``.

The same three convolutions with BatchNorm, ReLU and pooling, then a hidden linear layer of
only two ReLU units before the 10-class head: whatever the trunk learns, the classifier sees
two numbers (and fewer when a unit dies). Accuracy saturates well below what the trunk alone
reaches, however the optimizer is tuned; the fix is a wider layer.
"""

from torch import nn


def build_model(input_shape, num_classes):
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 32, kernel_size=3, stride=2, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 64, kernel_size=3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, kernel_size=3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (height // 8) * (width // 8), 2),
        nn.ReLU(),
        nn.Linear(2, num_classes),
    )
