# llmrelay: every task a developer or CI runs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deps-stamp
PY_DIRS := python tests benches

export PATH := $(HOME)/.cargo/bin:$(PATH)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "maturin>=1.5,<2"
	@# the dev extra's packages, read from pyproject.toml (one list, not two)
	$(BIN)/python -c "import tomllib;print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['optional-dependencies']['dev']))" > $(VENV)/dev-reqs.txt
	$(BIN)/python -c "import tomllib;print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" >> $(VENV)/dev-reqs.txt
	$(BIN)/python -m pip install -q -r $(VENV)/dev-reqs.txt
	touch $(STAMP)

.PHONY: venv
venv: $(STAMP) ## create .venv with maturin and the dev dependencies

.PHONY: build
build: $(STAMP) ## build the extension (debug) into .venv
	PIP_QUIET=1 $(BIN)/maturin develop -q

.PHONY: build-release
build-release: $(STAMP) ## build the extension (release, optimised) into .venv
	PIP_QUIET=1 $(BIN)/maturin develop -q --release

.PHONY: wheel
wheel: $(STAMP) ## an abi3 wheel (release) in dist/: installs with pip on any CPython >= 3.11, no cargo
	$(BIN)/maturin build --release -o dist
	@ls -1 dist/*.whl

.PHONY: format
format: $(STAMP) ## format Rust and Python sources in place
	cargo fmt
	$(BIN)/ruff format $(PY_DIRS)
	$(BIN)/ruff check --fix $(PY_DIRS)

.PHONY: lint
lint: $(STAMP) ## rustfmt, clippy, ruff (check only)
	cargo fmt --check
	cargo clippy --all-targets --all-features -- -D warnings
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)

.PHONY: typecheck
typecheck: build ## mypy --strict on the package, and the stub checked against the built module
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest llmrelay._core

.PHONY: test-rust
test-rust: ## cargo test (no Python needed)
	cargo test -q

.PHONY: test-python
test-python: build ## pytest (builds the extension first)
	$(BIN)/pytest

.PHONY: test
test: lint test-rust typecheck test-python ## every check and test: what CI runs

.PHONY: bench
bench: build-release ## benchmarks: criterion for the core, pytest-benchmark from Python
	cargo bench --bench core -- --warm-up-time 1 --measurement-time 2
	$(BIN)/pytest benches --benchmark-enable --benchmark-columns=min,median,mean,ops -p no:randomly

.PHONY: soak
soak: build-release ## reliability suites at soak sizes (LLMRELAY_SOAK=1; figures in .soak/)
	LLMRELAY_SOAK=1 LLMRELAY_REPORT=.soak $(BIN)/pytest tests/reliability -s -p no:cacheprovider

.PHONY: demo
demo: build-release ## the main job: a mixed workload through LLMService (fakes, or a local Ollama)
	$(BIN)/python -m llmrelay demo

.PHONY: demo-cluster
demo-cluster: build-release ## 4 worker processes share one limit through a local redis-server: admitted vs the limit per second
	@command -v redis-server >/dev/null || { echo "demo-cluster needs redis-server (apt-get install redis-server)"; exit 1; }
	PYTHONPATH=python:tests $(BIN)/python tests/cluster_demo.py $(DEMO_ARGS)

# ---- bench-compare: llmrelay vs raw httpx, a bare asyncio client, openai, LiteLLM -------------
# An isolated venv used only by this target (LiteLLM pinned below 1.107.0: see the
# requirements file). Not part of `make test`: it takes several minutes.
BENCH_VENV := .venv-bench
BENCH_BIN := $(BENCH_VENV)/bin
BENCH_STAMP := $(BENCH_VENV)/.deps-stamp
BENCH_ENV := LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR LITELLM_TELEMETRY=False

$(BENCH_STAMP): benches/compare/requirements.txt pyproject.toml
	test -x $(BENCH_BIN)/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/python -m pip install -q --upgrade pip
	$(BENCH_BIN)/python -m pip install -q -r benches/compare/requirements.txt
	touch $(BENCH_STAMP)

.PHONY: bench-compare
bench-compare: $(BENCH_STAMP) ## llmrelay side by side with httpx/openai/LiteLLM: docs/benchmarks.md + docs/plots (~10 min)
	VIRTUAL_ENV=$(abspath $(BENCH_VENV)) PIP_QUIET=1 $(BENCH_BIN)/maturin develop -q --release
	$(BENCH_ENV) $(BENCH_BIN)/python benches/compare/run.py --out docs $(BENCH_ARGS)

.PHONY: clean
clean: ## remove build outputs and the virtualenv
	cargo clean
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache .benchmarks .hypothesis .soak
	find python -name '*.so' -delete

.PHONY: help
help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'
