"""nas-search: hardware-aware neural architecture search."""

import os as _os

# PyTorch's CPU kernels run on OpenMP, whose idle threads spin by default. On a machine
# shared with other work (a laptop, CI, several search workers on one box) spinning threads
# steal the cores the busy ones need: a training step measured 4.4x slower (3.65 s against
# 0.83 s for a MobileNetV2 step at load 4 on 2 cores). Passive waiting costs little on an
# idle machine. Only effective when nas_search is imported before torch (as the CLI does);
# a value the user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
