"""Elastic ops: the only code in nas-search that slices shared weights.

Each op owns its full-size parameters, returns the active slice from one method
(``active_weight`` / ``active_parameters``), and copies that slice into a plain static
module with ``copy_into``.  Input width is read from the incoming tensor.

A *selection* of channels is either an ``int`` k (the first k channels, the common case,
sliced as a view) or a ``LongTensor`` of channel indices (used where two branches are
concatenated, as in the slim module, so the active channels are not a prefix).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from nas_search.spaces.scc import conv as scc

Selection = int | torch.Tensor


def select_channels(tensor: torch.Tensor, dim: int, selection: Selection) -> torch.Tensor:
    """The selected channels of ``tensor`` along ``dim`` (a view for a prefix)."""
    if isinstance(selection, int):
        return tensor.narrow(dim, 0, selection)
    return tensor.index_select(dim, selection.to(tensor.device))


def selection_size(selection: Selection) -> int:
    """Number of channels a selection keeps."""
    return selection if isinstance(selection, int) else int(selection.numel())


def concat_selection(count: int, half: int) -> torch.Tensor:
    """Indices of two concatenated branches of ``half`` max channels each, with the first
    ``count`` channels of each active: ``[0, count) + [half, half + count)``."""
    first = torch.arange(count)
    return torch.cat([first, first + half])


class ElasticConv2d(nn.Module):
    """A dense (``groups=1``) convolution, elastic in input and output width."""

    def __init__(self, max_in: int, max_out: int, kernel: int = 1, stride: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.weight = nn.Parameter(torch.empty(max_out, max_in, kernel, kernel))
        # Optional training-time perturbation of the active weight (Batch Bridgeout).
        self.weight_noise: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def active_weight(self, out_selection: Selection, in_selection: Selection) -> torch.Tensor:
        """Weight slice for the active output and input channels."""
        return select_channels(select_channels(self.weight, 0, out_selection), 1, in_selection)

    def forward(self, x: torch.Tensor, out_selection: Selection, in_selection: Selection | None = None) -> torch.Tensor:
        in_selection = x.size(1) if in_selection is None else in_selection
        bias = None if self.bias is None else select_channels(self.bias, 0, out_selection)
        weight = self.active_weight(out_selection, in_selection)
        if self.training and self.weight_noise is not None:
            weight = self.weight_noise(weight)
        return F.conv2d(x, weight, bias, self.stride, self.kernel // 2)

    @torch.no_grad()
    def copy_into(self, target: nn.Conv2d, out_selection: Selection, in_selection: Selection) -> None:
        """Copy the active slice into a static ``nn.Conv2d`` of matching shape."""
        target.weight.copy_(self.active_weight(out_selection, in_selection))
        if self.bias is not None:
            cast(torch.Tensor, target.bias).copy_(select_channels(self.bias, 0, out_selection))


class ElasticDepthwiseConv2d(nn.Module):
    """A depthwise convolution, elastic in width and in kernel size (3/5/7 by centre crop
    of the largest kernel)."""

    def __init__(self, max_channels: int, max_kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.max_kernel, self.stride = max_kernel, stride
        self.weight = nn.Parameter(torch.empty(max_channels, 1, max_kernel, max_kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def active_weight(self, selection: Selection, kernel: int) -> torch.Tensor:
        """Centre ``kernel x kernel`` crop of the selected channels' kernels."""
        start = (self.max_kernel - kernel) // 2
        weight = select_channels(self.weight, 0, selection)
        return weight[:, :, start : start + kernel, start : start + kernel]

    def forward(self, x: torch.Tensor, kernel: int, selection: Selection | None = None) -> torch.Tensor:
        selection = x.size(1) if selection is None else selection
        weight = self.active_weight(selection, kernel)
        return F.conv2d(x, weight, None, self.stride, kernel // 2, groups=x.size(1))

    @torch.no_grad()
    def copy_into(self, target: nn.Conv2d, selection: Selection, kernel: int) -> None:
        """Copy the active slice into a static depthwise ``nn.Conv2d``."""
        target.weight.copy_(self.active_weight(selection, kernel))


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the active channels; running statistics of the others are untouched."""

    # Always tensors here (``track_running_stats`` is left at its default, True).
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(self, max_channels: int) -> None:
        super().__init__(max_channels)

    def forward(self, x: torch.Tensor, selection: Selection | None = None) -> torch.Tensor:
        selection = x.size(1) if selection is None else selection
        use_batch_statistics = self.training or self.running_mean is None
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.momentum is None:  # cumulative moving average
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked)
        elif self.training:
            self.num_batches_tracked.add_(1)
        weight = select_channels(self.weight, 0, selection)
        bias = select_channels(self.bias, 0, selection)
        if isinstance(selection, int):
            return F.batch_norm(
                x,
                self.running_mean[:selection],
                self.running_var[:selection],
                weight,
                bias,
                use_batch_statistics,
                momentum,
                self.eps,
            )
        # Non-prefix selection: update copies, then write them back in place.
        index = selection.to(x.device)
        running_mean = self.running_mean.index_select(0, index)
        running_var = self.running_var.index_select(0, index)
        out = F.batch_norm(x, running_mean, running_var, weight, bias, use_batch_statistics, momentum, self.eps)
        if self.training:
            self.running_mean.index_copy_(0, index, running_mean)
            self.running_var.index_copy_(0, index, running_var)
        return out

    @torch.no_grad()
    def copy_into(self, target: nn.BatchNorm2d, selection: Selection) -> None:
        """Copy affine parameters and running statistics of the active channels."""
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(target, name).copy_(select_channels(getattr(self, name), 0, selection))
        cast(torch.Tensor, target.num_batches_tracked).copy_(self.num_batches_tracked)
        target.eps, target.momentum = self.eps, self.momentum


class ElasticLinear(nn.Module):
    """A linear layer elastic in input width (the classifier reads any head width)."""

    def __init__(self, max_in: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, max_in))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.normal_(self.weight, 0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, : x.size(1)], self.bias)

    @torch.no_grad()
    def copy_into(self, target: nn.Linear, in_features: int) -> None:
        """Copy the active slice into a static ``nn.Linear``."""
        target.weight.copy_(self.weight[:, :in_features])
        target.bias.copy_(self.bias)


class ElasticSlidingChannelConv2d(nn.Module):
    """Sliding-channel pointwise convolution with elastic input and output width.

    One dense shared weight ``(max_out, max_in)`` holds every possible window: for an active
    ``(in, out, groups, overlap)`` the compact ``(out, in / groups)`` weight is gathered from
    it (``scc.window_index``), so the weight of output ``c`` on input ``i`` is shared by every
    configuration that connects them.
    """

    def __init__(self, max_in: int, max_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_out, max_in))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.dense_source: ElasticConv2d | None = None

    def share_dense_weight(self, conv: ElasticConv2d) -> None:
        """Read the windows from a dense 1x1 ``conv``'s weight instead of an own one: the
        sliding-channel conv becomes a structured pruning of that dense conv, and both
        train one set of weights."""
        if tuple(conv.weight.shape) != (*self.weight.shape, 1, 1):
            raise ValueError(
                f"a {tuple(self.weight.shape)} sliding-channel conv cannot share a {tuple(conv.weight.shape)} weight"
            )
        del self.weight
        self.dense_source = conv

    def dense_weight(self) -> torch.Tensor:
        """The dense ``(max_out, max_in)`` weight the windows are gathered from."""
        return self.weight if self.dense_source is None else self.dense_source.weight.flatten(1)

    def active_weight(self, in_channels: int, out_channels: int, groups: int, overlap: float) -> torch.Tensor:
        """Compact ``(out, in / groups)`` weight in canonical window order."""
        dense = self.dense_weight()
        index = scc.window_index(in_channels, out_channels, groups, overlap).to(dense.device)
        return torch.gather(dense[:out_channels, :in_channels], 1, index)

    def forward(self, x: torch.Tensor, out_channels: int, groups: int, overlap: float) -> torch.Tensor:
        weight = self.active_weight(x.size(1), out_channels, groups, overlap)
        return scc.sliding_channel_conv2d(x, weight, groups, overlap)

    @torch.no_grad()
    def copy_into(self, target: nn.Module, in_channels: int, out_channels: int, groups: int, overlap: float) -> None:
        """Copy the compact weight into a static ``SlidingChannelConv2d``."""
        weight = cast(torch.Tensor, target.weight)
        weight.copy_(self.active_weight(in_channels, out_channels, groups, overlap).reshape(weight.shape))


class ElasticConvNormActivation(nn.Module):
    """Elastic conv -> elastic BN -> optional ReLU; mirrors ``static_blocks.conv_norm_activation``.

    ``depthwise=True`` makes the conv depthwise (elastic kernel); otherwise it is dense.
    """

    def __init__(
        self, max_in: int, max_out: int, kernel: int = 1, stride: int = 1, depthwise: bool = False, activation: bool = True
    ) -> None:
        super().__init__()
        self.depthwise = depthwise
        self.conv: ElasticDepthwiseConv2d | ElasticConv2d = (
            ElasticDepthwiseConv2d(max_out, kernel, stride) if depthwise else ElasticConv2d(max_in, max_out, kernel, stride)
        )
        self.norm = ElasticBatchNorm2d(max_out)
        self.activation = activation

    def forward(
        self,
        x: torch.Tensor,
        out_selection: Selection | None = None,
        in_selection: Selection | None = None,
        kernel: int | None = None,
    ) -> torch.Tensor:
        if self.depthwise:
            selection = x.size(1) if in_selection is None else in_selection
            x = self.conv(x, kernel, selection)
            out_selection = selection
        else:
            x = self.conv(x, out_selection, in_selection)
        x = self.norm(x, out_selection)
        return F.relu(x, inplace=True) if self.activation else x

    @torch.no_grad()
    def copy_into(
        self, target: nn.Sequential, out_selection: Selection, in_selection: Selection, kernel: int | None = None
    ) -> None:
        """Copy into a static ``conv_norm_activation`` sequence."""
        if self.depthwise:
            # ``kernel`` is always given for a depthwise conv
            cast(ElasticDepthwiseConv2d, self.conv).copy_into(cast(nn.Conv2d, target[0]), in_selection, cast(int, kernel))
            self.norm.copy_into(cast(nn.BatchNorm2d, target[1]), in_selection)
        else:
            cast(ElasticConv2d, self.conv).copy_into(cast(nn.Conv2d, target[0]), out_selection, in_selection)
            self.norm.copy_into(cast(nn.BatchNorm2d, target[1]), out_selection)
