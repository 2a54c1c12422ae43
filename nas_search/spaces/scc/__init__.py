"""The sliding-channel convolution (DSXplore): the layer (:mod:`.conv`) and its native CPU
kernel (:mod:`.native`, built from ``native.cpp`` on first use)."""

from nas_search.spaces.scc.conv import SlidingChannelConv2d

__all__ = ["SlidingChannelConv2d"]
