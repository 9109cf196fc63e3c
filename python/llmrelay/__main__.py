"""``python -m llmrelay`` -- the same as the ``llmrelay`` console script."""

from __future__ import annotations

import sys

from llmrelay._cli import main

if __name__ == "__main__":
    sys.exit(main())
