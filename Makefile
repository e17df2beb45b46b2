# Osprey's two commands:
#   make serve   set up everything (idempotent, cached) and start the server on config/osprey.toml
#   make test    set up everything and run the whole test suite
# Everything fetched lives in $(OSPREY_CACHE) (default ~/.cache/osprey), outside git.

SHELL := /bin/bash
CARGO ?= cargo
PLUGINS := image-prep yolo ssd classify misbehave
PLUGIN_FLAGS := --profile plugin --target wasm32-wasip2 $(addprefix -p ,$(PLUGINS))

.PHONY: serve test setup toolchain models plugins host test-deps bench check

serve: setup
	./target/release/osprey serve --config config/osprey.toml

test: setup test-deps
	$(CARGO) test --release --workspace --no-fail-fast

setup: toolchain models plugins host

toolchain:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

models:
	python3 models/fetch.py

plugins: toolchain
	$(CARGO) build $(PLUGIN_FLAGS)

host:
	$(CARGO) build --release -p osprey

# Debian packages the test suite's services need (none yet beyond the toolchain).
test-deps:
	@true

bench: setup
	$(CARGO) bench -p osprey-tests --bench serving

check:
	./target/release/osprey check --config config/osprey.toml
