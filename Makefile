# Two entry points for a newcomer: `make run` and `make test`. Each sets up
# .venv/ first; set-up is skipped when pyproject.toml has not changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The spec's Results section: VGG-16, the spec's recipe, CIFAR-10 (from the
# Keras cache, a local archive in DATA=..., or downloaded), 10/20/50/100 epochs.
DATA ?=
RUN_ARGS ?=
run: setup
	$(BIN)/vggcifar experiment $(if $(DATA),--data $(DATA)) --run-dir runs/spec $(if $(wildcard runs/spec/run.json),--resume) $(RUN_ARGS)

# A few minutes on a laptop CPU, offline: a quarter-width VGG-16 on the
# synthetic set with the spec-he recipe, reported after 3 epochs.
demo: setup
	$(BIN)/vggcifar experiment --recipe spec-he --dataset synthetic --limit-train 3000 --limit-test 1000 \
		--milestones 3 --epochs 3 --set width=0.25 --set dense_units=256 --set val_split=500 --quiet --run-dir runs/demo-$$(date +%Y%m%d-%H%M%S)

# Two test processes, each module whole in one of them (its fixtures built
# once); TEST_ARGS="-n 0" runs the suite in this process, and
# TEST_ARGS='-n 2 --dist loadscope -m "not slow"' leaves out the slow tests
# (calibration runs, subprocess matrices) for a quick pass; CI runs them all.
TEST_ARGS ?= -n 2 --dist loadscope
test: setup
	$(BIN)/python -m pytest $(TEST_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
