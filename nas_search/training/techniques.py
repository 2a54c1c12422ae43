"""Training techniques from the seed papers, each an option of supernet training.

* **Channel regeneration**: channels whose BN scale (gamma) has collapsed to near zero no
  longer pass information, so they are wasted capacity in every subnet that keeps them.
  At a chosen epoch, :func:`regenerate_channels` re-initialises those gammas (to the median
  |gamma| of the live channels of the same layer) and zeroes their shifts, so the
  channels take part in learning again.
* **Batch Bridgeout**: a stochastic weight perturbation whose expected effect is an
  L_q penalty on the weights (Bridgeout, Khan et al. 2018). Each batch draws one
  Bernoulli mask per output channel and uses ``w + |w|^(q/2) * (mask / keep - 1)``; the
  expectation is ``w``, the variance grows with ``|w|^q``. With ``q <= 1`` it is
  sparsity-inducing, and because the mask acts on whole output channels, it pushes
  channels toward being either useful or negligible, so the trained weights prune with
  little loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nas_search.spaces.elastic import ElasticConv2d


@dataclass(frozen=True)
class RegenerationReport:
    """What :func:`regenerate_channels` changed."""

    layers: int
    channels: int
    regenerated: int


@torch.no_grad()
def count_collapsed_channels(model: nn.Module, threshold: float) -> int:
    """Number of BN channels whose |gamma| is below ``threshold``."""
    return sum(
        int((module.weight.abs() < threshold).sum())
        for module in model.modules()
        if isinstance(module, nn.BatchNorm2d) and module.weight is not None
    )


@torch.no_grad()
def regenerate_channels(model: nn.Module, threshold: float = 0.01) -> RegenerationReport:
    """Re-initialise the collapsed BN channels of ``model`` (|gamma| < ``threshold``)."""
    layers = channels = regenerated = 0
    for module in model.modules():
        if not isinstance(module, nn.BatchNorm2d) or module.weight is None:
            continue
        layers += 1
        channels += module.num_features
        collapsed = module.weight.abs() < threshold
        count = int(collapsed.sum())
        if not count:
            continue
        alive = module.weight.abs()[~collapsed]
        value = float(alive.median()) if alive.numel() else 1.0
        module.weight[collapsed] = value
        module.bias[collapsed] = 0.0
        regenerated += count
    return RegenerationReport(layers, channels, regenerated)


class BatchBridgeout:
    """Per-batch, per-output-channel Bridgeout perturbation of a weight tensor.

    Args:
        keep_probability: probability that a channel's mask is 1 (``p`` in the paper);
            the perturbation vanishes at 1.
        exponent: ``q`` of the implied L_q penalty (1 = lasso-like, sparsity-inducing).
        generator: random source (for reproducibility).
    """

    def __init__(self, keep_probability: float, exponent: float = 1.0, generator: torch.Generator | None = None) -> None:
        if not 0 < keep_probability <= 1:
            raise ValueError(f"keep_probability={keep_probability} must be in (0, 1]")
        self.keep_probability = keep_probability
        self.exponent = exponent
        self.generator = generator

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        shape = (weight.shape[0],) + (1,) * (weight.dim() - 1)
        mask = torch.bernoulli(torch.full(shape, self.keep_probability, device="cpu"), generator=self.generator).to(
            weight.device, weight.dtype
        )
        return weight + weight.abs().pow(self.exponent / 2) * (mask / self.keep_probability - 1)


def attach_bridgeout(model: nn.Module, bridgeout: BatchBridgeout | None) -> int:
    """Perturb every dense elastic 1x1 convolution of ``model`` with ``bridgeout`` during
    training (``None`` detaches). Returns the number of layers affected."""
    count = 0
    for module in model.modules():
        if isinstance(module, ElasticConv2d) and module.kernel == 1:
            module.weight_noise = bridgeout
            count += 1
    return count
