"""The U-Net used by both stages: small, 2D, fully convolutional (any crop size that is a multiple of 2**depth); and
how PyTorch runs it for inference."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


class _DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet2D(nn.Module):
    """A 2D U-Net returning one logit map.

    Args:
        in_channels: input channels (the proposer: 3 image slices + the previous mask; the refiner:
            3 image slices + 3 coarse-mask slices).
        base_channels: channels of the first level; doubled at each downsampling.
        depth: number of downsamplings.
    """

    def __init__(self, *, in_channels: int, base_channels: int = 16, depth: int = 3):
        super().__init__()
        if in_channels < 1 or base_channels < 1 or depth < 1:
            raise ValueError("in_channels, base_channels and depth must be positive")
        self.config = {"in_channels": in_channels, "base_channels": base_channels, "depth": depth}
        widths = [base_channels * 2 ** level for level in range(depth + 1)]
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoders.append(_DoubleConv(previous, width))
            previous = width
        self.pool = nn.MaxPool2d(2)
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsamplers.append(nn.ConvTranspose2d(width * 2, width, 2, stride=2))
            self.decoders.append(_DoubleConv(width * 2, width))
        self.head = nn.Conv2d(widths[0], 1, 1)

    @staticmethod
    def parameter_count(*, in_channels: int, base_channels: int = 16, depth: int = 3) -> int:
        """How many parameters ``UNet2D(**config)`` has, computed from the config alone (nothing is allocated, and
        Python integers cannot overflow): a checkpoint's declared size is judged before its network is built."""
        def double_conv(inputs: int, outputs: int) -> int:  # two 3x3 convolutions without bias, two batch norms
            return 9 * inputs * outputs + 9 * outputs * outputs + 4 * outputs

        widths = [base_channels * 2 ** level for level in range(depth + 1)]
        count = sum(double_conv(previous, width) for previous, width in zip([in_channels, *widths], widths))
        for width in widths[:-1]:
            count += 8 * width * width + width  # 2x2 transposed convolution (with bias) from 2 * width channels
            count += double_conv(2 * width, width)
        return count + widths[0] + 1  # the 1x1 head

    @property
    def size_multiple(self) -> int:
        return 2 ** self.config["depth"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for upsample, decoder in zip(self.upsamplers, self.decoders):
            x = decoder(torch.cat([upsample(x), skips.pop()], dim=1))
        return self.head(x)


def with_input_channels(network: UNet2D, in_channels: int) -> UNet2D:
    """A copy of ``network`` that reads ``in_channels`` (>= its own): the added channels' first-convolution weights
    are zero, so the copy's output equals the original's whatever those channels hold, until training teaches it to
    use them (a trained proposer given the painted mask as a new channel, ``train --prompt-channel``)."""
    added = in_channels - network.config["in_channels"]
    if added < 0:
        raise ValueError(f"the network reads {network.config['in_channels']} channels, more than {in_channels}")
    wider = UNet2D(**{**network.config, "in_channels": in_channels})
    state = network.state_dict()
    first = "encoders.0.0.weight"
    weight = state[first]
    state[first] = torch.cat([weight, weight.new_zeros((weight.shape[0], added) + weight.shape[2:])], dim=1)
    wider.load_state_dict(state)
    return wider.train(network.training)


def inference_copy(network: UNet2D) -> UNet2D:
    """A copy of ``network`` for inference alone: each batch norm folded into the convolution before it (with its
    eval-mode statistics) and the weights laid out channels-last, which CPU convolutions read faster (about a third
    off the networks' time in the benchmark; docs/method.md). The outputs are the same up to float rounding;
    the copy has no batch norm left, so train the original, never the copy."""
    folded = copy.deepcopy(network).eval()
    for block in folded.modules():
        if isinstance(block, _DoubleConv):
            for conv, norm in ((0, 1), (3, 4)):
                block[conv] = fuse_conv_bn_eval(block[conv], block[norm])
                block[norm] = nn.Identity()
    return folded.to(memory_format=torch.channels_last)


class TorchRunner:
    """A network as the engine runs it (``propagation.NetworkRunner``): a float32 numpy batch (N, C, S, S) in,
    probabilities (N, S, S) out, the forward pass on ``device`` without autograd.

    Args:
        network: in eval mode, on ``device`` (e.g. ``inference_copy(network)``).
        device: where the network's weights lie ("cpu", "cuda:0").
        precision: "float32", or "bfloat16": the network (in place) and its inputs cast to it (``--backend
            torch-bf16``; fast where the CPU computes in bfloat16 itself, AMX or AVX-512 BF16; docs/profile.md).
    """

    def __init__(self, network: nn.Module, device: torch.device | str = "cpu", precision: str = "float32"):
        self.dtype = getattr(torch, precision)
        self.network, self.device = network.to(self.dtype), torch.device(device)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = self.network(torch.from_numpy(batch).to(self.device, self.dtype))
            return torch.sigmoid(logits)[:, 0].float().cpu().numpy()
