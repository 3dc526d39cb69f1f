"""The Python API (issue 23, section 3): ``import prosthesis_sim as psim`` names it without importing
torch. The README's block is run from the installed wheel by tests/test_packaging.py."""
import subprocess
import sys

import pytest


def test_import_is_cheap_and_names_the_api():
    code = ("import sys, prosthesis_sim as psim; assert 'torch' not in sys.modules; "
            "assert set(psim.__all__) <= set(dir(psim)); print(psim.closed_loop.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "prosthesis_sim.api"
    import prosthesis_sim

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        prosthesis_sim.nope  # noqa: B018
