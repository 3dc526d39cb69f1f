"""Shared fixtures: one small synthetic THINGS-EEG2 dataset per test session, made on the spot."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):  # make test runs a worker per core: one thread each, or they contend
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # (torch's threads spin: 2 x 2 on 2 cores ran 20x slower)
        os.environ.setdefault(var, "1")

SMALL = dict(n_subjects=2, n_train_concepts=30, images_per_concept=4, n_test=20, train_reps=4, test_reps=16,
             image_size=96, seed=0, progress=False)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    from prosthesis_sim.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("synth"), **SMALL)


@pytest.fixture(scope="session")
def small_data(synth_root):
    from prosthesis_sim.data.things_eeg2 import load_things_eeg2

    return load_things_eeg2(synth_root, subject=1)


def pytest_collection_modifyitems(session, config, items):
    """Modules with the most slow tests first: make test's workers take whole modules (xdist loadfile) in
    this order, so the long ones start early and the workers finish together instead of one running the
    last long module alone. Within a module the order is unchanged."""
    slow = {}
    for item in items:
        slow[item.path] = slow.get(item.path, 0) + (item.get_closest_marker("slow") is not None)
    rank = {path: i for i, path in enumerate(sorted(slow, key=lambda p: (-slow[p], str(p))))}
    items.sort(key=lambda item: rank[item.path])  # stable: each module's own order is kept
