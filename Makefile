# Two entry points for a newcomer: `make run` and `make test`. Each sets up
# .venv/ first; set-up is skipped when pyproject.toml has not changed. The
# venv's pip installs uv, and uv installs the project in place with its
# packages, compiled to bytecode on every core: 19 s where pip alone takes 52
# (measured on 2 cores). Where uv cannot reach its package index (it does not
# read pip's configuration), pip does it all. Compiled at installation: where
# PYTHONDONTWRITEBYTECODE is set, nothing else would compile them, and every
# process would compile TensorFlow again as it imports it (11 s instead of 5).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -e '.[tensorflow,test]' \
		|| $(BIN)/python -m pip install --quiet -e '.[tensorflow,test]'
	touch $(STAMP)

# The spec's Results section: VGG-16, the spec's recipe, CIFAR-10 (from the
# Keras cache, a local archive in DATA=..., or downloaded), 10/20/50/100 epochs.
DATA ?=
RUN_ARGS ?=
run: setup
	$(BIN)/vggcifar experiment $(if $(DATA),--data $(DATA)) --run-dir runs/spec $(if $(wildcard runs/spec/run.json),--resume) $(RUN_ARGS)

# About a minute of training on a 2-core CPU, offline: a quarter-width VGG-16
# learns the synthetic set with the spec-he recipe (90-97% test accuracy over
# seeds 0-2), 8 epochs of 63 steps at batch 32: more than the 250 steps a
# recipe needs to learn, so the run's short-run warning stays silent.
DEMO_ARGS := --recipe spec-he --dataset synthetic --limit-train 2300 --limit-test 1000 --milestones 8 --epochs 8 \
	--batch-size 32 --set width=0.25 --set dense_units=256 --set val_split=300
demo: setup
	$(BIN)/vggcifar experiment $(DEMO_ARGS) --quiet --run-dir runs/demo-$$(date +%Y%m%d-%H%M%S)

# Two test processes, each module whole in one of them (its fixtures built
# once); TEST_ARGS="-n 0" runs the suite in this process, and
# TEST_ARGS='-n 2 --dist loadscope -m "not slow"' leaves out the slow tests
# (calibration runs, subprocess matrices) for a quick pass; CI runs them all.
TEST_ARGS ?= -n 2 --dist loadscope
test: setup
	$(BIN)/python -m pytest $(TEST_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
