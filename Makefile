# FusionRec — the two commands: `make demo` and `make test`.
PYTHON ?= python3
UV := $(PYTHON) -m uv
VENV := .venv
export FUSIONREC_HOME ?= $(CURDIR)/.fusionrec
export UV_LINK_MODE ?= copy

.PHONY: install demo test test-fast lint repro airflow-ui mlflow-ui clean help bench benchmarks bench-serve bench-capacity

help:  ## List targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: $(VENV)/.installed  ## Install everything from uv.lock (bootstraps uv with pip if absent)

# uv: the one already importable, else pip-installed, else (PEP 668 "externally managed" Pythons) in a
# bootstrap venv. The project venv uses $(PYTHON) itself, so no interpreter is downloaded.
$(VENV)/.installed: uv.lock pyproject.toml
	@if $(UV) --version >/dev/null 2>&1; then uv="$(UV)"; \
	elif $(PYTHON) -m pip install --quiet uv >/dev/null 2>&1; then uv="$(UV)"; \
	else $(PYTHON) -m venv .uv-bootstrap && .uv-bootstrap/bin/pip install --quiet uv && uv=.uv-bootstrap/bin/uv; fi; \
	echo "$$uv sync --frozen --python $(PYTHON)"; $$uv sync --frozen --python $(PYTHON)
	@touch $@

demo: install  ## Run the retrain DAG on MovieLens-100k, serve, print top-10 for one user
	bash scripts/demo.sh

BENCH := docs/bench
bench: install  ## Benchmark the whole model zoo on ML-100k, protocol 1 (prints the table)
	$(VENV)/bin/fusionrec bench --dataset ml-100k --protocol msr --json $(BENCH)/ml-100k-msr.json

benchmarks: bench  ## All benchmarks (ML-100k msr + temporal, Instacart next-basket) -> docs/benchmarks.md
	$(VENV)/bin/fusionrec bench --dataset ml-100k --protocol temporal --json $(BENCH)/ml-100k-temporal.json
	# Instacart: every model but SASRec, whose full softmax over this catalogue takes minutes per fit
	$(VENV)/bin/fusionrec bench --dataset instacart --protocol next-basket \
		--models popularity,buy_again,itemknn,ease,ials,bpr,content,two_tower,neumf,lightgcn \
		--json $(BENCH)/instacart-next-basket.json
	$(VENV)/bin/fusionrec bench-report $(BENCH)/ml-100k-msr.json $(BENCH)/ml-100k-temporal.json \
		$(BENCH)/instacart-next-basket.json --out docs/benchmarks.md

bench-serve: install  ## Serving latency vs a thin FastAPI+Redis endpoint and a raw Redis GET (Redis at 127.0.0.1)
	$(VENV)/bin/fusionrec bench serve --rounds 3 --json $(BENCH)/serve.json

bench-capacity: install  ## Stage time/memory at 3 sizes projected to 1B events / 100M users (Redis at 127.0.0.1)
	$(VENV)/bin/fusionrec bench capacity --sizes 200000,600000,2000000 --online-store redis --serving-store redis \
		--json $(BENCH)/capacity.json --plot docs/img/capacity.png

test: install  ## The whole test suite (what CI runs)
	$(VENV)/bin/python -m pytest -ra --durations=25

test-fast: install  ## Unit tests only
	$(VENV)/bin/python -m pytest -ra -m "not slow and not services"

lint: install  ## ruff
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

repro: install  ## The same pipeline through DVC: dvc repro, then dvc push to the local remote
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/dvc repro && $(VENV)/bin/dvc push

airflow-ui: install  ## Airflow UI (api-server + scheduler + dag-processor) on http://127.0.0.1:8080
	bash -c 'source scripts/airflow_env.sh && airflow standalone'

mlflow-ui: install  ## MLflow UI on http://127.0.0.1:5000
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(FUSIONREC_HOME)/mlflow.db --port 5000

clean:  ## Remove the local FusionRec home (data, MLflow, feature store, serving store)
	rm -rf $(FUSIONREC_HOME) dvc-run
