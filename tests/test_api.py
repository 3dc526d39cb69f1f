"""The Python API (issue 23, section 3): ``import prosthesis_sim as psim``, and the README's block runs
as written from an empty folder (the test extracts it from README.md, so the README cannot rot)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block() -> str:
    text = README.read_text()
    section = re.search(r"^#+ [^\n]*Python API[^\n]*\n(.*?)(?=^#+ )", text, re.S | re.M)
    assert section, "README.md has no section whose heading contains 'Python API'"
    blocks = re.findall(r"```python\n(.*?)```", section.group(1), re.S)
    assert len(blocks) == 1, f"the Python API section should hold one python block, found {len(blocks)}"
    return blocks[0]


def test_import_is_cheap_and_names_the_api():
    code = ("import sys, prosthesis_sim as psim; assert 'torch' not in sys.modules; "
            "assert set(psim.__all__) <= set(dir(psim)); print(psim.closed_loop.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "prosthesis_sim.api"
    import prosthesis_sim

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        prosthesis_sim.nope  # noqa: B018


@pytest.mark.slow
def test_readme_python_block_runs_from_an_empty_folder(tmp_path):
    script = tmp_path / "block.py"
    script.write_text(readme_block())
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    scores = eval(out.stdout.strip().splitlines()[0])  # the block prints the scores dict first
    assert set(scores) == {f"{p}_{k}" for p in ("path", "floor", "ceiling") for k in ("ssim", "pearson")}
    assert scores["ceiling_pearson"] > scores["floor_pearson"]
    assert (tmp_path / "psim-small" / "sub-01").is_dir()  # written where the notebook runs, nowhere else
