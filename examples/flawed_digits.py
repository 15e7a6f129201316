"""An offline flawed model for the ``digits`` data set (3x32x32, 10 classes).

A deep plain CNN: eight 3x3 convolutions of 32 channels (the first and the fifth with stride
2) with sigmoid activations, no normalisation and no residual connections, then global average
pooling and a linear head.
Each sigmoid scales the gradient by at most 0.25 and PyTorch's default initialisation keeps
the weights small, so the gradient that reaches the first convolution is about 1e-7 of the
last layer's: trained with SGD at learning rate 0.1 and no momentum, the early layers never
learn and validation accuracy stays near chance (about 10%). It is the vanishing-gradient
case gradpilot diagnoses from the ratio of first- to last-layer gradient norms and fixes
(normalisation, ReLU-family activations, residual connections).
"""

from torch import nn

DEPTH = 8
WIDTH = 32


#: Convolutions that halve the resolution (32 -> 16 -> 8), to keep an epoch cheap on a CPU.
STRIDED = (0, 4)


def build_model(input_shape, num_classes):
    channels = input_shape[0]
    layers = []
    for index in range(DEPTH):
        stride = 2 if index in STRIDED else 1
        layers.append(nn.Conv2d(channels, WIDTH, kernel_size=3, stride=stride, padding=1))
        layers.append(nn.Sigmoid())
        channels = WIDTH
    return nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(WIDTH, num_classes),
    )
