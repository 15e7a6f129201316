# ruff: noqa
"""The revised CNN the LLM wrote in the AWS HPC blog (for CIFAR-10, 3x32x32).

Its code is the blog's, with the imports the blog's listing left out (``torch``, ``nn``, ``F``)
added so that it runs. It is a sound network: 3x3 convolutions with batch normalisation,
residual blocks, ReLU, max pooling and dropout, Kaiming initialisation, and a label-smoothed
cross-entropy ``loss_function``. What is still wrong with it is its training, not its shape:
the blog reports that its loss exploded at once under the original SGD learning rate of 0.1,
and the LLM then moved it to Adam with a smaller learning rate; its three fully connected
layers (4096 -> 512 -> 128) also hold 2.2 of its 2.6 million parameters.

The code is kept as the blog printed it (whitespace included), so the linter is switched off
for this file.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBlock(nn.Module):
    """
    A convolutional block with batch normalization and residual connection
    to improve gradient flow and training stability
    """
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1):
        super(ConvBlock, self).__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, 
                             stride=stride, padding=kernel_size//2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        
        # FIX: More explicit handling of skip connection to ensure dimension matching
        if in_channels == out_channels and stride == 1:
            # Identity shortcut when dimensions match
            self.residual = nn.Identity()
        else:
            # 1x1 conv to match both channel dimensions and spatial dimensions (if stride > 1)
            self.residual = nn.Conv2d(in_channels, out_channels, kernel_size=1, 
                                     stride=stride, bias=False)
        
    def forward(self, x):
        identity = x
        
        # Main branch
        out = self.conv(x)
        out = self.bn(out)
        out = F.relu(out)
        
        # Add residual connection
        out = out + self.residual(identity)
        
        # FIX: Added ReLU after addition (standard in ResNet blocks)
        out = F.relu(out)
        
        return out

class CNN(nn.Module):
    """
    Improved CNN architecture that addresses gradient flow issues:
    1. Replaces large kernel sizes (15x15) with smaller, more efficient 3x3 kernels
    2. Adds batch normalization to stabilize gradients
    3. Uses multiple smaller convolutional layers with residual connections
    4. Balances FC layers to prevent bottlenecks
    5. Implements proper pooling strategy to reduce parameter count
    6. Uses ReLU activations instead of sigmoid for better gradient flow
    7. Adds dropout for regularization
    """
    def __init__(self, num_classes=10):
        super(CNN, self).__init__()
        
        # Initial convolution with moderate number of filters
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        
        # Convolutional blocks with gradually increasing filters
        # Input: 16x16x32, Output: 16x16x64
        self.block1 = ConvBlock(32, 64)
        
        # Input: 8x8x64, Output: 8x8x128
        self.block2 = ConvBlock(64, 128)
        
        # Input: 4x4x128, Output: 4x4x256
        self.block3 = ConvBlock(128, 256)
        
        # Pooling layers to reduce spatial dimensions
        self.pool = nn.MaxPool2d(2, 2)
        
        # More balanced FC layer architecture
        # After 3 pooling operations (32 -> 16 -> 8 -> 4), feature map is 4x4x256 = 4096
        self.fc1 = nn.Linear(4096, 512)
        self.fc2 = nn.Linear(512, 128)
        self.fc3 = nn.Linear(128, num_classes)
        
        # Dropout for regularization
        self.dropout = nn.Dropout(0.3)  # Reduced from 0.5 to prevent too much regularization
        
        # Proper weight initialization for better gradient flow
        self._initialize_weights()
        
    def _initialize_weights(self):
        """Initialize weights using Kaiming initialization for ReLU activations"""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
        
    def forward(self, x):
        """
        Forward pass with explicit shape tracking comments
        Input shape: [batch_size, 3, 32, 32]
        """
        # Initial convolution: [batch_size, 3, 32, 32] -> [batch_size, 32, 32, 32]
        x = self.conv1(x)
        x = self.bn1(x)
        x = F.relu(x)
        
        # First pooling: [batch_size, 32, 32, 32] -> [batch_size, 32, 16, 16]
        x = self.pool(x)
        
        # Block 1: [batch_size, 32, 16, 16] -> [batch_size, 64, 16, 16]
        x = self.block1(x)
        
        # Second pooling: [batch_size, 64, 16, 16] -> [batch_size, 64, 8, 8]
        x = self.pool(x)
        
        # Block 2: [batch_size, 64, 8, 8] -> [batch_size, 128, 8, 8]
        x = self.block2(x)
        
        # Third pooling: [batch_size, 128, 8, 8] -> [batch_size, 128, 4, 4]
        x = self.pool(x)
        
        # Block 3: [batch_size, 128, 4, 4] -> [batch_size, 256, 4, 4]
        x = self.block3(x)
        
        # Flatten: [batch_size, 256, 4, 4] -> [batch_size, 4096]
        x = torch.flatten(x, 1)
        
        # FC layers with dropout
        x = F.relu(self.fc1(x))  # [batch_size, 4096] -> [batch_size, 512]
        x = self.dropout(x)
        
        x = F.relu(self.fc2(x))  # [batch_size, 512] -> [batch_size, 128]
        x = self.dropout(x)
        
        # Output: [batch_size, 128] -> [batch_size, num_classes]
        x = self.fc3(x)
        
        return x
        
    def loss_function(self, outputs, targets):
        """
        Custom loss function that helps with gradient scaling.
        Uses label smoothing to prevent overconfidence and improve gradient flow.
        """
        return nn.CrossEntropyLoss(label_smoothing=0.1)(outputs, targets)
