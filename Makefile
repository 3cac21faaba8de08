# recsys — run `make help` for the list of targets.
SHELL := /bin/bash
PYTHON ?= python
TORCH_VERSION ?= 2.13.0
DEMO ?= artifacts/demo
BUNDLE ?= $(DEMO)/bundle
PORT ?= 8000
DATA ?= synthetic
ARGS ?=
# demo overrides: data/text ones reach prepare, the two-tower training and evaluate; trainer/model
# ones both trainings (the ranker's data follows from the two-tower checkpoint)
DEMO_DATA_ARGS ?=
DEMO_TRAIN_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install ensure-installed test test-fast lint format demo prepare train serve benchmark bench-prepare bench-scale bench-serving api-docs clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

install: ## Install torch==$(TORCH_VERSION) (CPU) first, then recsys with dev extras
	$(PYTHON) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PYTHON) -m pip install -q -e ".[dev]"

ensure-installed:
	@$(PYTHON) -c "import recsys, torch, lightning, faiss, litserve" 2>/dev/null || $(MAKE) install

test: ensure-installed ## Run the test suite (tiny data; ML-100K tests skip when ../shared/data/ml-100k is absent)
	$(PYTHON) -m pytest -q $(ARGS)

test-fast: ensure-installed ## Run the tests not marked slow
	$(PYTHON) -m pytest -q -m "not slow" $(ARGS)

lint: ## Ruff lint + format check + the import contracts (pyproject.toml [tool.importlinter])
	$(PYTHON) -m ruff check recsys tests experiments
	$(PYTHON) -m ruff format --check recsys tests experiments
	lint-imports

format: ## Ruff autofix + format
	$(PYTHON) -m ruff check --fix recsys tests experiments
	$(PYTHON) -m ruff format recsys tests experiments

prepare: ensure-installed ## Prepare a dataset: make prepare DATA=synthetic|movielens_100k|amazon|amazon_movies_tv ARGS="..."
	$(PYTHON) -m recsys.prepare data=$(DATA) $(ARGS)

train: ensure-installed ## Train: make train ARGS="experiment=two_tower data=synthetic"
	$(PYTHON) -m recsys.train $(ARGS)

demo: ensure-installed $(DEMO)/bundle/manifest.json $(DEMO)/evaluation/metrics.json ## Main job on the embedded synthetic data: prepare, both stages, bundle, evaluation plots (no downloads)
	$(PYTHON) -m recsys.serving.showcase $(DEMO)/bundle

BEST_CKPT = $$($(PYTHON) -c "import json,sys; print(json.load(open(sys.argv[1]))['best_checkpoint'])" $(1))

$(DEMO)/two_tower/metrics.json:
	$(PYTHON) -m recsys.prepare data=synthetic $(DEMO_DATA_ARGS)
	$(PYTHON) -m recsys.train experiment=two_tower data=synthetic paths.output_dir=$(DEMO)/two_tower \
		$(DEMO_DATA_ARGS) $(DEMO_TRAIN_ARGS) $(ARGS)

$(DEMO)/ranker/metrics.json: $(DEMO)/two_tower/metrics.json
	$(PYTHON) -m recsys.train experiment=ranker retrieval_ckpt=$(call BEST_CKPT,$<) paths.output_dir=$(DEMO)/ranker \
		$(DEMO_TRAIN_ARGS)

$(DEMO)/evaluation/metrics.json: $(DEMO)/ranker/metrics.json
	$(PYTHON) -m recsys.evaluate ckpt_path=$(call BEST_CKPT,$(DEMO)/two_tower/metrics.json) \
		ranker_ckpt=$(call BEST_CKPT,$<) paths.output_dir=$(DEMO)/evaluation trainer.enable_progress_bar=false \
		$(DEMO_DATA_ARGS)

$(DEMO)/bundle/manifest.json: $(DEMO)/ranker/metrics.json
	$(PYTHON) -m recsys.export retrieval_ckpt=$(call BEST_CKPT,$(DEMO)/two_tower/metrics.json) \
		ranker_ckpt=$(call BEST_CKPT,$<) bundle_dir=$(DEMO)/bundle

serve: ensure-installed ## Serve a bundle: make serve [BUNDLE=dir] [PORT=8000]
	$(PYTHON) -m recsys.serve bundle=$(BUNDLE) port=$(PORT)

benchmark: ensure-installed ## The benchmark suite (resumable) and docs/BENCHMARKS.md: make benchmark [ARGS="--datasets beauty --seeds 42 --jobs 2"]
	$(PYTHON) experiments/benchmark.py $(ARGS)

bench-prepare: ensure-installed ## Benchmark generation + prepare at synthetic_full scale (see experiments/)
	$(PYTHON) experiments/bench_prepare.py $(ARGS)

bench-scale: ensure-installed ## The whole pipeline at synthetic_full scale (434K items; ~1.5 h on 2 cores): make bench-scale [ARGS=…]
	$(PYTHON) experiments/bench_scale.py $(ARGS)

bench-serving: ensure-installed ## Serving latency/throughput vs a constant LitServe endpoint: make bench-serving [BUNDLE=dir]
	$(PYTHON) experiments/bench_serving.py --bundle $(BUNDLE) $(ARGS)

api-docs: ensure-installed ## Regenerate docs/API.md from live calls against BUNDLE
	$(PYTHON) -m recsys.serving.api_docs $(BUNDLE) --out docs/API.md

clean: ## Remove caches and run outputs (keeps data/ and artifacts/)
	rm -rf .pytest_cache .ruff_cache logs outputs multirun wandb
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
