"""The refiner: a 2.5D U-Net that corrects the proposer's coarse mask, all slices in one batched pass.

2.5D rather than 3D because slice spacing varies from 1 to 5 mm between scans: a 3D network would need
z-resampling (and its cost) to see tumours at one scale, while three neighbouring slices give the
through-plane context the proposer lacks, at the price of a 2D network.
"""

from __future__ import annotations

import numpy as np
import torch

BATCH_SLICES = 32


def refiner_input(image: torch.Tensor, coarse: torch.Tensor, slices: list[int]) -> torch.Tensor:
    """(len(slices), 6, S, S): image and coarse mask on slices k-1, k, k+1 (clamped at the ends)."""
    last = image.shape[0] - 1
    index = torch.tensor([[min(max(k + offset, 0), last) for offset in (-1, 0, 1)] for k in slices],
                         device=image.device)
    return torch.cat([image[index], coarse[index]], dim=1)


def refine(network: torch.nn.Module, image: torch.Tensor, coarse: np.ndarray, slices: list[int]) -> np.ndarray:
    """Refined probabilities for ``slices``; other slices of the returned (Z, S, S) array are 0.

    Args:
        network: the refiner (eval mode).
        image: (Z, S, S) normalised crop on the network's device.
        coarse: (Z, S, S) proposer probabilities; binarised at 0.5 as during training.
        slices: the axial indices to refine.
    """
    coarse_mask = torch.from_numpy((coarse > 0.5).astype(np.float32)).to(image.device)
    refined = np.zeros(coarse.shape, dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(slices), BATCH_SLICES):
            chunk = slices[start:start + BATCH_SLICES]
            logits = network(refiner_input(image, coarse_mask, chunk))
            refined[chunk] = torch.sigmoid(logits)[:, 0].float().cpu().numpy()
    return refined
