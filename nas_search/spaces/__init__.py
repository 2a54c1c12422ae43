"""Task-agnostic supernet machinery: the space table (:mod:`.space`), the op table
(:mod:`.ops`), elastic layers that slice shared weights (:mod:`.elastic`), elastic blocks
(:mod:`.blocks`), the supernet (:mod:`.supernet`), the standalone modules an extracted
model is made of (:mod:`.static`), the sliding-channel convolution (:mod:`.scc`), the
built-in spaces (:mod:`.builtin`) and a registry (:mod:`.registry`).

Look a space up by name with :func:`nas_search.tasks.get_space`, which knows every task's
spaces.
"""

from nas_search.spaces.space import ResolvedBlock, ResolvedNetwork, SearchSpace, StageChoices

__all__ = ["ResolvedBlock", "ResolvedNetwork", "SearchSpace", "StageChoices"]
