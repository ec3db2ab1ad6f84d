# Everything starts from a fresh Debian/Ubuntu machine with Python 3.11:
#   make demo    sample data -> tune -> train -> deploy -> predict -> report -> evaluate, offline, on the CPU
#   make test    the test suite (what CI runs); make quick-test: its fast tier
# Both create or reuse .venv at the project root.

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv system-packages demo test unit-test quick-test local-mode-test benchmark build push test-base prune-images clean

venv: $(STAMP)

$(STAMP): requirements/model.txt requirements/train.txt requirements/serve.txt requirements/launcher.txt requirements/dev.txt requirements/constraints.txt container_src/pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || \
		{ echo "error: $(PYTHON) must be Python 3.11 (torch 2.14.1 wheels); set PYTHON=python3.11" >&2; exit 1; }
	@test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV) || \
		{ echo "error: cannot create $(VENV); on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
	$(VENV_PYTHON) -m pip install --quiet -r requirements/dev.txt -c requirements/constraints.txt
	$(VENV_PYTHON) -m pip install --quiet --no-deps -e container_src
	@touch $@

demo: venv
	$(VENV_PYTHON) -m launcher.demo

# multi-model-server (the serving tests) runs on Java 17; the report test screenshots the
# HTML report in headless Chromium. Debian packages, installed when missing (as root).
SYSTEM_PACKAGES := java:default-jre-headless chromium:chromium
system-packages:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
		command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
		else echo "error: needed:$$missing (sudo apt-get install$$missing)" >&2; exit 1; fi; fi

# Unit and process-backend tests, then the images under SageMaker local mode. Without a
# Docker engine the local-mode part is skipped with a loud warning, except in CI.
test: unit-test
	@if bash docker/engine.sh; then $(MAKE) --no-print-directory local-mode-test; \
	elif [ "$${CI:-}" = true ]; then echo "error: CI must run the local-mode tests" >&2; exit 1; \
	else echo; echo "!!! WARNING: no Docker engine: the local-mode tests did NOT run !!!"; echo; fi

# tests/unit (in process, under a minute) and tests/functional (child processes: training
# jobs, the real MMS, moto in server mode): the whole suite without Docker.
unit-test: venv system-packages
	$(VENV_PYTHON) -m pytest

# The fast tier alone, for the edit-test loop: no child process, no Java, no network.
quick-test: venv
	$(VENV_PYTHON) -m pytest tests/unit

# The images built from a registry-free Debian base, then driven by the SageMaker SDK.
# LOCAL_MODE_INSTANCE_TYPE=local_gpu runs them on an NVIDIA GPU (needs compose v2).
local-mode-test: venv
	bash docker/engine.sh
	bash docker/test_base.sh
	BASE_IMAGE=dogbreed-test-base:bookworm IMAGENET_WEIGHTS=skip CUDA_COMPAT=skip TAG=test bash docker/build.sh
	$(VENV_PYTHON) -m pytest local_mode_tests

benchmark: venv system-packages
	$(VENV_PYTHON) benchmarks/train_throughput.py
	$(VENV_PYTHON) benchmarks/serve_latency.py
	$(VENV_PYTHON) benchmarks/tune_overhead.py
	$(VENV_PYTHON) benchmarks/debugger_overhead.py
	$(VENV_PYTHON) benchmarks/pipeline_accuracy.py

# The base, training and serving images (docker/build.sh says which settings it takes:
# BASE_IMAGE, IMAGENET_WEIGHTS, CUDA_COMPAT, TORCH_INDEX_URL, TAG).
build: venv
	bash docker/engine.sh
	bash docker/build.sh

# Create the ECR repositories if missing, log in, tag and push; the URIs go to
# build/images.json. Region: aws.region of launcher.toml (or CONFIG), else the AWS
# configuration; TAG and REGION override. Refuses a pushed OCI manifest (SageMaker does).
push: venv
	$(VENV_PYTHON) -m launcher.ecr_push $(if $(TAG),--tag $(TAG)) $(if $(REGION),--region $(REGION)) $(if $(CONFIG),--config $(CONFIG))

# A registry-free Debian base for building the images on machines without Docker Hub.
test-base:
	bash docker/engine.sh
	bash docker/test_base.sh

# Every build tags the images with the commit too, and a changed base leaves its 6 GB of
# old layers behind: remove dogbreed images other than :latest and :test, and dangling ones.
prune-images:
	docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^dogbreed-(base|train|serve):' \
		| grep -vE ':(latest|test)$$' | xargs -r docker rmi
	docker image prune -f

clean:
	rm -rf demo_output runs benchmarks/output .pytest_cache
