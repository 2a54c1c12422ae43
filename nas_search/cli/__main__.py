"""``python -m nas_search.cli`` (used with ``torchrun``)."""

import sys

from nas_search.cli.main import main

sys.exit(main())
