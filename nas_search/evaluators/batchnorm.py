"""Batch-norm recalibration ("precise BN") of a network whose weights were inherited.

A subnet extracted from a supernet carries running statistics accumulated over many
different subnets, which fit none of them. Following fvcore's ``update_bn_stats``
template, :func:`precise_batch_norm` re-estimates them on a few calibration batches:

* forward hooks on every BN layer collect each batch's per-channel mean and (unbiased)
  variance of the layer's input while the network runs in train mode;
* the running statistics are then set to the cumulative average of those batch
  statistics (their sum over the batches divided by their number);
* afterwards, even when a forward raises, the hooks are removed and the momenta,
  ``num_batches_tracked`` and every module's own train/eval flag are restored, so nothing
  but ``running_mean`` and ``running_var`` changes (and nothing at all without a batch).

The task supplies how one batch runs through its network (``forward``): a classifier is
called on an image tensor, a detector runs its trunk on a list of images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

#: How one calibration batch runs through the network: ``forward(model, batch)``.
BatchForward = Callable[[nn.Module, Any], Any]


def batch_norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every batch-norm layer of ``model`` (BatchNorm1d/2d/3d and subclasses)."""
    return [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


def call_model(model: nn.Module, batch: Any) -> Any:
    """The default forward: ``model(batch)``."""
    return model(batch)


@torch.no_grad()
def precise_batch_norm(model: nn.Module, batches: Iterable[Any], forward: BatchForward = call_model) -> int:
    """Set every BN layer's running mean and variance to the average, over ``batches``, of
    its batch statistics (see the module docstring for what is restored). Returns the
    number of batches used; 0 leaves the model as it was. BN layers that keep no running
    statistics (``track_running_stats=False``) are left alone."""
    norms = [norm for norm in batch_norm_layers(model) if norm.running_mean is not None and norm.running_var is not None]
    if not norms:
        return 0
    statistics = {id(norm): _RunningStatistics(norm) for norm in norms}

    def collect(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        values = inputs[0].float()
        dimensions = [0] + list(range(2, values.dim()))  # every dimension but the channels
        statistics[id(module)].mean_sum += values.mean(dimensions)
        statistics[id(module)].variance_sum += values.var(dimensions, unbiased=True)

    modes = [(module, module.training) for module in model.modules()]
    handles = [norm.register_forward_hook(collect) for norm in norms]
    count = 0
    try:
        model.train()
        for batch in batches:
            forward(model, batch)
            count += 1
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training
        for norm in norms:
            statistics[id(norm)].restore(norm)
    if count:
        for norm in norms:
            statistics[id(norm)].set_average(norm, count)
    return count


class _RunningStatistics:
    """One BN layer's saved state (momentum, running statistics, batch count) and the sums
    of its batch statistics during recalibration."""

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm) -> None:
        self.running_mean, self.running_var = _tensor(norm.running_mean).clone(), _tensor(norm.running_var).clone()
        self.momentum = norm.momentum
        self.batches_tracked = None if norm.num_batches_tracked is None else norm.num_batches_tracked.clone()
        self.mean_sum, self.variance_sum = torch.zeros_like(self.running_mean), torch.zeros_like(self.running_var)

    def restore(self, norm: nn.modules.batchnorm._BatchNorm) -> None:
        """Put back the momentum, running statistics and batch count saved at the start."""
        norm.momentum = self.momentum
        _tensor(norm.running_mean).copy_(self.running_mean)
        _tensor(norm.running_var).copy_(self.running_var)
        if self.batches_tracked is not None and norm.num_batches_tracked is not None:
            norm.num_batches_tracked.copy_(self.batches_tracked)

    def set_average(self, norm: nn.modules.batchnorm._BatchNorm, count: int) -> None:
        """Set the running statistics to the average of ``count`` batches' statistics."""
        _tensor(norm.running_mean).copy_(self.mean_sum / count)
        _tensor(norm.running_var).copy_(self.variance_sum / count)


def _tensor(value: torch.Tensor | None) -> torch.Tensor:
    """A BN buffer that :func:`precise_batch_norm` only reads on layers that keep it."""
    if value is None:
        raise ValueError("a batch-norm layer without running statistics")
    return value


__all__ = ["BatchForward", "batch_norm_layers", "call_model", "precise_batch_norm"]
