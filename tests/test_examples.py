"""The examples gallery (issue 23, section 4): every ``examples/plot_*.py`` runs as a script from a
folder of its own, draws at least one figure, and opens with the sphinx-gallery header (an RST title
between bars of its length, then prose) that the docs build turns into its page."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("plot_*.py"))
RUN = ("import runpy, sys, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt; "
       "runpy.run_path(sys.argv[1], run_name='__main__'); print('FIGURES', len(plt.get_fignums()))")


def test_the_gallery_has_the_five_tasks():
    assert {p.stem for p in EXAMPLES} == {"plot_closed_loop_video", "plot_swap_phosphenes", "plot_batch_evaluation",
                                          "plot_train_things", "plot_live_view"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_header_is_a_gallery_title(path):
    head = re.match(r'"""\n(=+)\n(.+)\n(=+)\n\n(\S.*?)"""', path.read_text(), re.S)
    assert head, f"{path.name}: expected a docstring opening with a title between '=' bars, then prose"
    top, title, bottom, prose = head.groups()
    assert len(top) == len(bottom) >= len(title), f"{path.name}: the bars must be as long as the title"
    assert len(prose.split()) >= 20


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("examples")  # shared: the examples reuse one synthetic dataset


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(path, workdir):
    out = subprocess.run([sys.executable, "-c", RUN, str(path)], cwd=workdir, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    figures = int(out.stdout.rsplit("FIGURES", 1)[1])
    assert figures >= 1, f"{path.name} drew no figure"
    assert (workdir / "psim-examples").is_dir()  # it writes where it runs, nowhere else
