"""One import package (issue 23, section 1): the wheel installs only ``prosthesis_sim``, with the
plug-ins and configs inside it; framework code never imports a plug-in; components saved under the
old top-level module names still load; and the README's Python API block runs, as written, from an
empty folder in an environment that installed the wheel (not the source tree)."""
import ast
import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAPPED = {"encoders": "prosthesis_sim.encoders", "decoders": "prosthesis_sim.decoders", "configs": "prosthesis_sim.configs"}


def readme_block() -> str:
    text = README.read_text()
    section = re.search(r"^#+ [^\n]*Python API[^\n]*\n(.*?)(?=^#+ )", text, re.S | re.M)
    assert section, "README.md has no section whose heading contains 'Python API'"
    blocks = re.findall(r"```python\n(.*?)```", section.group(1), re.S)
    assert len(blocks) == 1, f"the Python API section should hold one python block, found {len(blocks)}"
    return blocks[0]


def test_pyproject_lists_every_package_folder():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    folders = {p.parent for p in ROOT.glob("*/**/__init__.py")} | {p.parent for p in (ROOT / "configs").rglob("*.yaml")}
    for folder in folders:
        parts = folder.relative_to(ROOT).parts
        if parts[0] in MAPPED:
            found.add(".".join((MAPPED[parts[0]], *parts[1:])))
        elif parts[0] == "prosthesis_sim":
            found.add(".".join(parts))
    assert set(setuptools["packages"]) == found
    assert setuptools["package-dir"] == {v: k for k, v in MAPPED.items()}


def test_framework_never_imports_a_plugin():
    """The plug-in rule: prosthesis_sim/ reaches encoders and decoders only through configs' _target_."""
    offenders = []
    for path in (ROOT / "prosthesis_sim").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if re.search(r"(^|\.)(encoders|decoders)(\.|$)", name):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not offenders, offenders


def test_component_saved_under_the_old_module_names_loads(tmp_path, small_data):
    """A component saved before the move names ``encoders.ridge.RidgeEncoder``; it still loads, and
    nested targets (dit_residual's mean model) are renamed too."""
    from prosthesis_sim.checkpoint import load_component, save_component, upgrade_targets
    from prosthesis_sim.encoders.mean_erp import MeanERP

    model = MeanERP()
    model.fit(small_data)
    save_component(model, tmp_path / "old", {"_target_": "encoders.mean_erp.MeanERP"}, small_data.epoch)
    assert "_target_: encoders.mean_erp.MeanERP" in (tmp_path / "old" / "config.yaml").read_text()
    loaded = load_component(tmp_path / "old", small_data)
    assert type(loaded) is MeanERP
    images = small_data.test_images[:3]
    np.testing.assert_allclose(loaded.generate(images, seed=0), model.generate(images, seed=0), atol=1e-6)
    nested = upgrade_targets({"_target_": "encoders.diffusion.DiffusionEncoder",
                              "mean_model": {"_target_": "encoders.ridge.RidgeEncoder"},
                              "features": {"_target_": "prosthesis_sim.features.gabor.GaborFeatures"},
                              "note": "encoders.ridge"})
    assert nested == {"_target_": "prosthesis_sim.encoders.diffusion.DiffusionEncoder",
                      "mean_model": {"_target_": "prosthesis_sim.encoders.ridge.RidgeEncoder"},
                      "features": {"_target_": "prosthesis_sim.features.gabor.GaborFeatures"},
                      "note": "encoders.ridge"}  # only _target_ values move


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """A venv that installed the built wheel, seeing this environment's dependencies (not its source)."""
    where = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(where / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (where / "dist").glob("prosthesis_sim-*.whl")
    env = where / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # this environment's packages (torch, mne, ...) as plain paths: its editable install's finder is a
    # .pth that a listed path does not run, so prosthesis_sim can come only from the wheel
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    return wheel, python


@pytest.mark.slow
def test_wheel_installs_one_top_level_package(wheel_env, tmp_path):
    wheel, python = wheel_env
    with zipfile.ZipFile(wheel) as zf:
        top = {n.split("/")[0] for n in zf.namelist() if not n.split("/")[0].endswith((".dist-info", ".data"))}
        names = zf.namelist()
    assert top == {"prosthesis_sim"}
    assert "prosthesis_sim/configs/encoder/dit.yaml" in names and "prosthesis_sim/live/page.html" in names
    code = ("import prosthesis_sim, prosthesis_sim.encoders.ridge as r, importlib.util as u; "
            "print(r.__file__); print(u.find_spec('encoders'), u.find_spec('decoders'), u.find_spec('configs'))")
    out = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    where, specs = out.stdout.strip().splitlines()
    assert "site-packages/prosthesis_sim/encoders/ridge.py" in where and not where.startswith(str(ROOT))
    assert specs == "None None None"


@pytest.mark.slow
def test_readme_python_block_runs_from_the_installed_wheel(wheel_env, tmp_path):
    _, python = wheel_env
    script = tmp_path / "block.py"
    script.write_text(readme_block())
    out = subprocess.run([str(python), str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    scores = eval(out.stdout.strip().splitlines()[0])  # the block prints the scores dict first
    assert set(scores) == {f"{p}_{k}" for p in ("path", "floor", "ceiling") for k in ("ssim", "pearson")}
    assert scores["ceiling_pearson"] > scores["floor_pearson"]
    assert (tmp_path / "psim-small" / "sub-01").is_dir()  # written where the notebook runs, nowhere else


def test_declared_lower_bounds_are_the_tested_ones():
    """pyproject.toml's lower bounds are the pins .ci/test-lower-bounds installs (and ran the suite with),
    so a raised or lowered bound cannot drift from what was tested."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {}
    for spec in project["dependencies"] + project["optional-dependencies"]["test"]:
        name, lower = re.match(r"([A-Za-z0-9_.\-]+)>=([\w.]+)", spec).groups()
        declared[name.lower()] = lower
    pins = {}
    for line in (ROOT / ".ci" / "lower-bounds.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    assert set(pins) == set(declared)
    norm = lambda v: tuple(int(x) for x in v.split(".")) + (0,) * (4 - len(v.split(".")))  # noqa: E731
    assert {n: norm(v) for n, v in declared.items()} == {n: norm(v) for n, v in pins.items()}
