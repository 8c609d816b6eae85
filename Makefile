# Two commands a fresh clone needs: `make repro` (set up, then run the pipeline) and `make test-all`.
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(BIN):$(PATH)

.PHONY: setup serve-env check-serve-install repro retrain publish test test-all lint bench compare sweep-worker report clean

setup: $(STAMP)

# the project with its pipeline and dev groups (pyproject.toml), every version pinned by constraints.txt
$(STAMP): pyproject.toml constraints.txt
	@echo "setup: pinned packages into $(VENV): about 6 GB (most of it PyTorch's CUDA libraries), 2-3 minutes" \
		"on a fast connection the first time, seconds from pip's cache; pip lists each package as it goes"
	python3 -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check --progress-bar on -c constraints.txt -e ".[pipeline,dev]"
	touch $@

# predict and serve alone, without PyTorch or DVC (about 365 MB against the full environment's 6.2 GB)
SERVE_VENV := .venv-serve
serve-env: $(SERVE_VENV)/.installed

$(SERVE_VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints.txt ".[serve]"
	touch $@

# CI's check of that install: no torch there; predict and serve on the committed model (from dvc-store/)
check-serve-install: setup serve-env
	dvc pull -q -r storage export
	$(SERVE_VENV)/bin/python tools/serve_install_check.py --model models/model.onnx

# the committed model files come from dvc-store/ (in git), so a clone on any machine starts from the record;
# then only what changed runs (on a fresh clone: download and preprocess, which are the same bits everywhere).
# The pull names its remote, so that a team's default remote never stands in for the offline record.
repro: setup
	dvc pull -r storage --allow-missing train export evaluate
	dvc repro
	@echo "make repro: DVC's hint to push is generic. main's record travels in dvc-store/ through git" \
		"(\`make publish\` stores a new one); your own results go to a team remote, if any (docs/experiments.md)"

# retrain the committed params here: your platform's baseline, with a verdict against the committed record
retrain: setup
	dvc repro --force --downstream train

# make the current results the record that travels: its model files into dvc-store/ (and the team's default
# remote, when there is one, so that `dvc get <repo URL> models/model.onnx` finds them), then stage both
publish: setup
	dvc push -r storage train export evaluate
	if dvc remote default >/dev/null 2>&1; then dvc push train export evaluate; fi
	git add dvc.lock metrics dvc-store

# the everyday tier: everything but the tests on a real DVC repository, torchrun and crowds (marker `complete`)
test: setup lint
	pytest -n 2 --dist worksteal -m "not complete"

# the complete suite, what CI runs (.ci/run); it fails under CI=true unless the complete tier ran
test-all: setup lint
	pytest -n 2 --dist worksteal

lint: setup
	ruff check .

bench: setup   # fresh results go to bench/results/local/; add --update to replace the committed ones
	python -m bench.mlp_speed

# Experiments and main side by side in under 100 columns, best test accuracy first: changed params, test
# accuracy (errors is 10,000 x its complement, left out for room, as are calibration_error and not_digit, which
# `dvc metrics show` has), mean accuracy under the corruption suite (direct.mean, and predict.mean through predict's
# preparation; per family and corruption in metrics/robustness.json), and the platform's fields when rows differ in them (--only-changed hides equal columns, and
# a platform column is what flags a comparison across machines; the CPU's name stands for its capability, which
# `dvc exp show` still shows); --drop takes whole column names
compare: setup
	@dvc exp show --only-changed --sort-by metrics/eval.json:accuracy --sort-order desc --drop '$(COMPARE_DROP)'

# this worker's share of a grid of experiments, each pushed to origin (and its outputs to the default DVC remote):
#   make sweep-worker SHARD=0 SHARDS=2 SWEEP="-S 'lr=0.003,0.006' -S 'batch_size=256,512'"   (docs/sweeps.md)
sweep-worker: setup
	python -m stages.sweep_worker --shard "$(SHARD)" --shards "$(SHARDS)" --sweep "$(SWEEP)"

# report/report.md: this workspace against BASE (default main), for a pull request
report: setup
	python -m stages.report $(or $(BASE),main)

COMPARE_DROP := Created|State|Executor|errors|calibration_error|not_digit|images_per_corruption|.*held_out_mean|.*\.family\..*|.*\.corruption\..*|.*/.*|loss|val_loss|val_acc|.*_macro|best_epoch|epochs_run|parameters|onnx.*|torch_export.*|images|agree|limit_e6|.*_bytes|platform.cpu_capability

clean:
	rm -rf $(VENV) $(SERVE_VENV) build *.egg-info data/raw data/prepared data/corrupted models/*.pt models/*.pt2 models/*.onnx
