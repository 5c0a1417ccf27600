# Entry points. `make run` serves the offline default; `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Triton replicas `make run` starts (consecutive ports); the edge spreads segments over them.
REPLICAS ?= 1

# Labelled Korean comments for `make classifier` (laid out as ../shared/data; see README "Fine-tuning").
DATA ?= ../shared/data

.PHONY: run test unit lint install system-deps export classifier serve-triton bench clean-models

$(STAMP): requirements.txt requirements-nodeps.txt package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -r requirements.txt
	$(VENV)/bin/pip install --no-deps -r requirements-nodeps.txt
	@# wscat, the WebSocket client of the original spec, for the tests and for trying the edge by hand
	if command -v npm >/dev/null; then npm ci --silent --no-audit --no-fund; \
	else echo "npm not found: wscat (used by the tests) is not installed" >&2; fi
	touch $@

install: $(STAMP)

system-deps:
	bash scripts/install_system_deps.sh

export: install
	$(PY) -m scripts.export.offline_default

# Pretrain, fine-tune and export the classifier from $(DATA), then render the ensemble: `make run`
# and `make test` then serve it (they keep an exported trained classifier). About 7 min on 2 cores.
classifier: export
	$(PY) -m scripts.train.build_classifier --data $(DATA)

serve-triton: export
	$(PY) -m scripts.service.serve_triton --replicas $(REPLICAS)

run: export
	$(PY) -m scripts.service.run_service --replicas $(REPLICAS)

# Lint, then both tiers: the unit tier first (seconds, no servers), then the integration tier.
test: lint system-deps export
	$(PY) -m pytest -q tests/unit tests/integration

# The unit tier alone: no tritonserver, exported models or espeak-ng needed.
unit: install
	$(PY) -m pytest -q -m "not integration"

lint: install
	$(VENV)/bin/ruff check .

bench: export
	$(PY) -m scripts.bench.whisper

clean-models:
	rm -f model_repository/*/config.pbtxt model_repository/*/config.values.json model_repository/*/1/*.pt model_repository/*/1/*.onnx \
	      model_repository/*/1/tokenizer.json model_repository/*/1/model_info.json model_repository/*/1/lexicon.json model_repository/*/1/*.joblib
