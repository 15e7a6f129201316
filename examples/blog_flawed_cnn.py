# ruff: noqa
"""The flawed CNN from the AWS HPC blog, exactly as printed (for CIFAR-10, 3x32x32).

What is wrong with it, on purpose and by accident:
- one convolution with a 15x15 kernel, sigmoid activation, no pooling, no normalisation: it
  barely learns (the blog's baseline stayed near 10% validation accuracy over 600 epochs with
  SGD at learning rate 0.1 and no momentum);
- it does not even run as printed: kernel 15 with padding 1 turns 32x32 into 20x20, so the
  flattened features are 16 * 20 * 20 = 6400, not the 16384 that ``nn.Linear(16384, 10)``
  expects. Its first forward fails with a shape error ("mat1 and mat2 shapes cannot be
  multiplied"), which gradpilot's repair path fixes.

The code is kept as the blog printed it, so the linter is switched off for this file.
"""

import torch
import torch.nn as nn

class CNN(nn.Module):
    """
    An extremely simple CNN with a single convolutional layer
    followed by a fully connected layer for classification.
    Uses sigmoid activation instead of ReLU.
    """
    def __init__(self):
        super(CNN, self).__init__()

        # Single convolutional layer
        self.conv1 = nn.Conv2d(3, 16, kernel_size=15, padding=1)

        # With no pooling, feature size remains 32x32, so: 32x32x16 = 16384
        self.fc = nn.Linear(16384, 10)

    def forward(self, x):
        # Single convolutional layer with sigmoid activation
        x = torch.sigmoid(self.conv1(x))

        # No pooling, so dimensions stay the same

        # Flatten for fully connected layer
        x = torch.flatten(x, 1)

        # Classification layer
        x = self.fc(x)

        return x
