# Two entry points: `make demo` and `make test`. Each makes .venv when missing and installs
# everything (torch pinned to the CPU wheel on disk; see README).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: install demo test test-fast docs bench eval report gpu-wheels clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test,docs]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/psim-demo

# A worker per core (pytest-xdist), each file's tests in one worker, so a module's fixtures are built once.
XDIST   := -n auto --dist loadfile

test: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST)

# The fast tier for iteration: everything but the tests marked slow (model training, whole apps).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow"

# The docs site (Sphinx): MyST pages, the API reference from the docstrings, the examples gallery executed
# (an example that breaks fails the build), warnings as errors -> docs/_build/html/index.html
docs: $(STAMP)
	cd docs && ../$(BIN)/python -m sphinx -W --keep-going -E -q -b html . _build/html
	@echo "docs: docs/_build/html/index.html"

bench: $(STAMP)
	$(BIN)/python bench/loop_latency.py

# The README's psim-eval tables: every encoder x decoder on the synthetic EEG default, subjects 1 and 2,
# plus dit_trials fitted on single training trials (psim-train, cached by its fit key) for the
# equal-noise row dit_trials@avg24. Torch runs one thread per process: on 2 cores that is faster.
EVAL_SUBJECTS ?= 1 2
eval: $(STAMP)
	$(BIN)/python -c "import sys; from prosthesis_sim.data.synth import is_complete; sys.exit(not is_complete('outputs/synth'))" || $(BIN)/psim-synth out=outputs/synth
	for s in $(EVAL_SUBJECTS); do \
	  OMP_NUM_THREADS=1 $(BIN)/psim-train encoder=dit_trials dataset.average_train=false dataset.root=outputs/synth \
	    dataset.subject=$$s train.epochs=100 fit_cache=outputs/cache out=outputs/trials/sub-0$$s || exit 1; \
	  OMP_NUM_THREADS=1 $(BIN)/psim-eval dataset.root=outputs/synth dataset.subject=$$s \
	    +encoder_dirs.dit_trials=outputs/trials/sub-0$$s out=outputs/eval/sub-0$$s || exit 1; \
	done

# The example evaluation report: train every encoder row of bench/encoder_table.py on the synthetic
# EEG default and mean_erp, ridge, dit_residual and the DiT alone on the synthetic MEG (both subjects each), then
# build outputs/report/report.md from those runs.
report: $(STAMP)
	$(BIN)/python -c "import sys; from prosthesis_sim.data.synth import is_complete; sys.exit(not is_complete('outputs/synth'))" || $(BIN)/psim-synth out=outputs/synth
	$(BIN)/python -c "import sys; from prosthesis_sim.data.synth import is_complete; sys.exit(not is_complete('outputs/synth_meg'))" || $(BIN)/psim-synth out=outputs/synth_meg modality=meg
	$(BIN)/python bench/encoder_table.py dataset.root=outputs/synth
	$(BIN)/python bench/encoder_table.py dataset=things_meg dataset.root=outputs/synth_meg "rows=mean_erp;ridge;dit_residual;dit (x0"
	$(BIN)/psim-report runs=outputs/table out=outputs/report

# Wheels that the lent GPU machine's image lacks (it has CUDA torch, numpy, scipy, scikit-image,
# opencv, pandas, transformers, ...; nothing can be downloaded there): for bench/gpu_check.sh.
gpu-wheels: $(STAMP)
	rm -rf .whl && mkdir -p .whl
	$(BIN)/pip download -q --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
	  $$($(BIN)/pip freeze | grep -iE "^(pulse2percept|mne|hydra-core|omegaconf|diffusers|pooch|decorator)==")
	$(BIN)/pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
	du -sh .whl

clean:
	rm -rf outputs .pytest_cache docs/_build docs/generated docs/auto_examples examples/psim-examples
