"""fvcore's FLOP count of a model, used to check the analytic counter."""

from __future__ import annotations

import logging

import torch
from torch import nn


def fvcore_flops(model: nn.Module, input_size: int, in_channels: int = 3) -> int:
    """fvcore ``FlopCountAnalysis`` total of ``model`` (eval mode, batch 1, square input).

    fvcore's warnings about ops it skips (activations, add, mul) are silenced; see
    ``nas_search.hw_models.flops`` for which ops are counted.
    """
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        analysis = FlopCountAnalysis(model, torch.zeros(1, in_channels, input_size, input_size, device=device))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        logger = logging.getLogger("fvcore")
        previous = logger.level
        logger.setLevel(logging.ERROR)
        try:
            return int(analysis.total())
        finally:
            logger.setLevel(previous)
    finally:
        model.train(was_training)
