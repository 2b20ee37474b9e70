"""Shared set-up of the pooled tests.

Workers unpickle a test module's functions by importing the module by name. Under
pytest's importlib import mode that name is "tests.adapters.<module>", so the
repository root must be on sys.path; it is added here, at collection time, before
any worker starts (workers copy the caller's sys.path when they start).
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)
