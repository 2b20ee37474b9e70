"""``python -m combgrad``: the ``combgrad`` command, also as ``torchrun ... -m combgrad warcraft ...``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
