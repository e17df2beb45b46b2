# Osprey's two commands:
#   make serve   set up everything (idempotent, cached) and start the server on config/osprey.toml
#   make test    set up everything and run the whole test suite
# Everything fetched lives in $(OSPREY_CACHE) (default ~/.cache/osprey), outside git.

SHELL := /bin/bash
CARGO ?= cargo
PLUGINS := image-prep yolo ssd classify misbehave fusion stego render
PLUGIN_FLAGS := --profile plugin --target wasm32-wasip2 $(addprefix -p ,$(PLUGINS))

.PHONY: serve test setup toolchain models plugins host test-deps test-services browser-deps bench bench-deps bench-peers soak check

serve: setup
	./target/release/osprey serve --config config/osprey.toml

test: setup test-deps
	$(CARGO) test --release --workspace --no-fail-fast

setup: toolchain models plugins host

# cmake and nasm build the libjpeg-turbo that the host's scaled JPEG decode uses.
toolchain:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
	@command -v cmake >/dev/null && command -v nasm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake nasm >/dev/null; }

models:
	python3 models/fetch.py

plugins: toolchain
	$(CARGO) build $(PLUGIN_FLAGS)

host:
	$(CARGO) build --release -p osprey

# The Python venv the Open Inference Protocol test drives the server from:
# the unchanged Triton HTTP client, and ONNX Runtime for the reference answers.
# A stamp holding the pins makes it idempotent: pip runs only when they change.
OSPREY_CACHE ?= $(HOME)/.cache/osprey
TEST_VENV := $(OSPREY_CACHE)/venv-test
TEST_PINS := tritonclient[http]==2.73.0 numpy==2.2.6 onnxruntime==1.31.1 pillow==11.3.0 ensemble-boxes==1.0.9

test-deps: test-services browser-deps
	@if [ "$$(cat $(TEST_VENV)/.stamp 2>/dev/null)" != "$(TEST_PINS)" ]; then \
	  set -e; python3 -m venv $(TEST_VENV); \
	  $(TEST_VENV)/bin/pip install --quiet --disable-pip-version-check $(TEST_PINS); \
	  echo "$(TEST_PINS)" > $(TEST_VENV)/.stamp; \
	fi

# playwright-core from npm (no browser download: it drives Debian's chromium),
# pinned by tests/browser/package-lock.json; the stamp makes it idempotent.
browser-deps:
	@if ! cmp -s tests/browser/package-lock.json tests/browser/node_modules/.stamp; then \
	  set -e; cd tests/browser && npm ci --no-audit --no-fund --silent && cp package-lock.json node_modules/.stamp; \
	fi

# Debian packages whose servers the tests start themselves on 127.0.0.1.
# pebble: a test ACME CA, and pebble-challtestsrv (its DNS), for tests/tls;
# ffmpeg for the video endpoints and the watermark's H.264 test; chromium for
# the page's browser tests.
TEST_DEBS := redis-server pebble ffmpeg chromium
TEST_CMDS := redis-server pebble pebble-challtestsrv ffmpeg ffprobe chromium

test-services:
	@for c in $(TEST_CMDS); do command -v $$c >/dev/null || exit 1; done || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEST_DEBS) >/dev/null; }

bench: setup
	$(CARGO) bench -p osprey-tests --bench serving
	$(CARGO) bench -p osprey-tests --bench plugins

# The peers osprey is compared with (Flask + gunicorn, FastAPI + uvicorn, both
# on ONNX Runtime): a venv built from tests/bench/requirements.txt. The stamp
# holds that file's contents, so a second run does no pip work.
PEERS_VENV := $(OSPREY_CACHE)/venv-peers
PEERS_REQS := tests/bench/requirements.txt

bench-deps:
	@if ! cmp -s $(PEERS_REQS) $(PEERS_VENV)/.stamp; then \
	  set -e; python3 -m venv $(PEERS_VENV); \
	  $(PEERS_VENV)/bin/pip install --quiet --disable-pip-version-check -r $(PEERS_REQS); \
	  cp $(PEERS_REQS) $(PEERS_VENV)/.stamp; \
	fi

# osprey against the peers, same machine, same images, same load generator:
# the table goes to stdout and target/bench-peers.md (tests/bench/README.md).
bench-peers: setup bench-deps
	OSPREY_PEERS_VENV=$(PEERS_VENV) $(CARGO) bench -p osprey-tests --bench peers

# Ten minutes well past capacity on loopback: only 2xx and 429, RSS flat (README).
soak: setup
	$(CARGO) bench -p osprey-tests --bench soak

check:
	./target/release/osprey check --config config/osprey.toml
