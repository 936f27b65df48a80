"""The PyTorch peer of the side-by-side benchmark: FC-DenseNet103 written as a PyTorch user would write it.

Same layout as the package's `fc_densenet103` preset (Jegou et al. 2017; paper Fig. 1): a 3x3 first
convolution with 48 filters; dense layers BN -> ELU -> 3x3 conv (k = 12) -> dropout 0.2, each fed the
concatenation of all earlier maps of its block; transitions down BN -> ELU -> 1x1 conv -> dropout 0.2 ->
2x2 max-pool; transitions up a 3x3 stride-2 transposed convolution of the new maps of the previous block
only, concatenated with the skip connection; a 1x1 convolution to 2 classes. Same trainable-parameter count
as the package (5,415,278; asserted by `build_peer`). Plain PyTorch: NCHW tensors, `torch.nn` modules,
eager mode, no `torch.compile` (the package runs as `ptx_keras.training` runs it, also without extra
compilation on a CPU).

Needs the `bench` extra (`pip install -e ".[bench]"`); nothing in `ptx_keras` imports torch.
"""

import torch
from torch import nn

from ptx_keras.constants import DROPOUT_RATE, FCDENSENET103_LAYERS, FIRST_CONV_FILTERS, GROWTH_RATE, NUM_CLASSES

# The package's fc_densenet103 has exactly this many trainable parameters (its model summary); the peer must too.
FC_DENSENET103_PARAMS = 5_415_278
# Keras' BatchNormalization defaults (epsilon 1e-3; Keras momentum 0.99 is PyTorch momentum 0.01).
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.01


def _bn(channels):
    return nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)


class DenseLayer(nn.Sequential):
    """BN -> ELU -> 3x3 conv (growth_rate maps) -> dropout."""

    def __init__(self, channels, growth_rate, dropout):
        super().__init__(_bn(channels), nn.ELU(), nn.Conv2d(channels, growth_rate, 3, padding=1), nn.Dropout(dropout))


class DenseBlock(nn.Module):
    """`layers` dense layers; returns the input with the new maps, or the new maps only."""

    def __init__(self, channels, layers, growth_rate, dropout, new_only):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(channels + i * growth_rate, growth_rate, dropout) for i in range(layers))
        self.new_only = new_only

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features[1:] if self.new_only else features, 1)


class TransitionDown(nn.Sequential):
    """BN -> ELU -> 1x1 conv (same channels) -> dropout -> 2x2 max-pool."""

    def __init__(self, channels, dropout):
        super().__init__(
            _bn(channels), nn.ELU(), nn.Conv2d(channels, channels, 1), nn.Dropout(dropout), nn.MaxPool2d(2)
        )


class FCDenseNet(nn.Module):
    """FC-DenseNet; `forward` returns logits (batch, classes, height, width)."""

    def __init__(
        self,
        in_channels=3,
        num_classes=NUM_CLASSES,
        blocks=FCDENSENET103_LAYERS,
        growth_rate=GROWTH_RATE,
        first_filters=FIRST_CONV_FILTERS,
        dropout=DROPOUT_RATE,
    ):
        super().__init__()
        pools = (len(blocks) - 1) // 2
        self.first = nn.Conv2d(in_channels, first_filters, 3, padding=1)
        channels, skips = first_filters, []
        self.down, self.transitions_down = nn.ModuleList(), nn.ModuleList()
        for i in range(pools):
            self.down.append(DenseBlock(channels, blocks[i], growth_rate, dropout, new_only=False))
            channels += blocks[i] * growth_rate
            skips.append(channels)
            self.transitions_down.append(TransitionDown(channels, dropout))
        self.bottleneck = DenseBlock(channels, blocks[pools], growth_rate, dropout, new_only=True)
        new = blocks[pools] * growth_rate
        self.up, self.transitions_up = nn.ModuleList(), nn.ModuleList()
        for i in range(pools):
            # Keras' "same" 3x3 stride-2 transposed convolution doubles the size exactly: padding 1, output padding 1.
            self.transitions_up.append(nn.ConvTranspose2d(new, new, 3, stride=2, padding=1, output_padding=1))
            last = i == pools - 1
            layers = blocks[pools + 1 + i]
            self.up.append(DenseBlock(new + skips[-(i + 1)], layers, growth_rate, dropout, new_only=not last))
            channels = new + skips[-(i + 1)] + layers * growth_rate
            new = layers * growth_rate
        self.logits = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x):
        x = self.first(x)
        skips = []
        for block, down in zip(self.down, self.transitions_down):
            x = block(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        for up, block in zip(self.transitions_up, self.up):
            x = block(torch.cat([up(x), skips.pop()], 1))
        return self.logits(x)


def trainable_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_peer(in_channels=3):
    """The peer FC-DenseNet103, checked to have the package's trainable-parameter count.

    Raises:
        AssertionError: if the layout drifted from the package's (another parameter count).
    """
    model = FCDenseNet(in_channels=in_channels)
    count = trainable_parameters(model)
    assert count == FC_DENSENET103_PARAMS, (
        f"peer FC-DenseNet103 has {count:,} trainable parameters, not {FC_DENSENET103_PARAMS:,}"
    )
    return model


if __name__ == "__main__":
    print(f"{trainable_parameters(build_peer()):,} trainable parameters")
