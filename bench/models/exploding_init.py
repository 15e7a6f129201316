"""A plain CNN with an exploding initialisation, for ``digits`` (3x32x32, 10 classes).

Three strided 3x3 convolutions and two linear layers with ReLU and no normalisation; every
weight is drawn from N(0, 1) instead of a fan-in-scaled distribution (Kaiming would use a
standard deviation of about sqrt(2 / fan_in), 0.03 to 0.3 here). Each layer multiplies the
activations by about sqrt(fan_in), so the logits are ~1e6 and the loss and gradients are
astronomically large: SGD diverges at once. Fixing it takes a sane initialisation or
normalisation (an architecture change); a smaller learning rate alone only slows the blow-up.
"""

from torch import nn


def build_model(input_shape, num_classes):
    channels, height, width = input_shape
    model = nn.Sequential(
        nn.Conv2d(channels, 32, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * ((height + 7) // 8) * ((width + 7) // 8), 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(module.weight, mean=0.0, std=1.0)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
