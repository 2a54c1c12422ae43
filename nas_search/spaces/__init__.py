"""Task-agnostic supernet machinery: the space table (:mod:`.space`) and the resolved
shapes it produces (:mod:`.resolved`), the op table (:mod:`.ops`: one module and one
``BlockKind`` per block op, holding its elastic and standalone block classes, costs and
search choices), elastic layers that slice shared weights (:mod:`.elastic`), the supernet
(:mod:`.supernet`), the standalone networks an extracted model is (:mod:`.static`, built
from :mod:`.static_blocks`' conv-norm-activation and the ops' blocks), the sliding-channel
convolution (:mod:`.scc`), the built-in spaces (:mod:`.builtin`) and a registry
(:mod:`.registry`).

Look a space up by name with :func:`nas_search.tasks.get_space`, which knows every task's
spaces.
"""

from nas_search.spaces.space import ResolvedBlock, ResolvedNetwork, SearchSpace, StageChoices

__all__ = ["ResolvedBlock", "ResolvedNetwork", "SearchSpace", "StageChoices"]
