"""Where the open MIMIC-III demo is, and the marker of the tests that need it.

The demo (ODbL; Johnson, Pollard & Mark, 2019) is real data, kept outside the repository in
../shared/data/mimic3-demo (or shared/ inside a checkout). Tests of general behaviour use
synthetic tables; only the checks about the real published files need the demo and are skipped,
with this reason, where it is absent.
"""

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve()
_CANDIDATES = (_HERE.parents[3] / "shared", _HERE.parents[2] / "shared")
DEMO = (
    next((p for p in _CANDIDATES if (p / "data" / "mimic3-demo").is_dir()), _CANDIDATES[0])
    / "data"
    / "mimic3-demo"
)
requires_demo = pytest.mark.skipif(
    not DEMO.is_dir(),
    reason="the open MIMIC-III demo (../shared/data/mimic3-demo) is not present",
)
