# Two entry points on a fresh machine (Python >= 3.10, root or sudo-less apt for espeak-ng):
#   make serve   set up, then run the embedded default service on http://127.0.0.1:8000
#   make test    set up, then run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

# The embedded Ray is private (graphs/local_ray.py): every port on 127.0.0.1, token auth on.
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: setup serve test test-deps clean openapi

setup: $(VENV)/.installed

# torch first, pinned: an unpinned torch resolves to a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $@

# espeak-ng synthesises the speech the tests transcribe; Debian's chromium is the browser that
# tests/browser drives through Playwright (whose own browser download needs a network CI lacks);
# Node runs tests/js with the official openai npm package (pinned in tests/js/package-lock.json).
test-deps:
	@command -v espeak-ng >/dev/null && command -v chromium >/dev/null && command -v npm >/dev/null && command -v promtool >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends espeak-ng chromium nodejs npm prometheus; }
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error

serve: setup
	$(BIN)/python -m graphs.launch serve_config.yaml

# The first line of the log names the CPU and the features that change code paths (AVX-512, bf16,
# AMX, VNNI): CI machines differ, and so do the kernels the numeric gates measure. lint-imports
# checks the layer contracts in pyproject.toml before the suite runs; ruff the lint rules and the format
# (pyproject.toml [tool.ruff]); mypy --strict the packages in [tool.mypy] files; and `mkdocs build --strict` the docs
# site (mkdocs.yml: a broken link or anchor, or a page left out of the nav, fails it). tests/cluster (several Ray nodes)
# runs in a pytest process of its own, so the rest starts its Ray in a fresh one.
test: setup test-deps
	@$(BIN)/python -m tests.cpu_line
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	$(BIN)/python -m pytest tests/cluster
	$(BIN)/python -m pytest --ignore=tests/cluster

clean:
	rm -rf $(VENV) .pytest_cache site

# Regenerate the committed OpenAPI spec after changing routes or schemas (a test compares them).
openapi: setup
	$(BIN)/python -m deployments.gateway.openapi > openapi.json
