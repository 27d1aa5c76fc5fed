"""The end-to-end tests drive the demo's orchestration (``demo/``, not an installed
package): make the repository root importable however pytest was started."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
