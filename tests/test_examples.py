"""The examples gallery (issue 23, section 4): every ``examples/plot_*.py`` runs as sphinx-gallery runs it
(``__main__``, from a folder of its own), draws at least one figure, and opens with the sphinx-gallery header (an RST title
between bars of its length, then prose) that the docs build turns into its page."""
import re
import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("plot_*.py"))


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
def test_example_runs(path, workdir, monkeypatch):
    """In this process, as sphinx-gallery runs them (``__main__``, the example's folder its own), with the
    Agg backend: it must finish and draw."""
    import matplotlib.pyplot as plt

    monkeypatch.chdir(workdir)
    plt.close("all")
    runpy.run_path(str(path), run_name="__main__")
    assert plt.get_fignums(), f"{path.name} drew no figure"
    plt.close("all")
    assert (workdir / "psim-examples").is_dir()  # it writes where it runs, nowhere else
