#!/bin/sh
# Lays out what the runtime image needs from setup's cache, in the Dockerfile's
# build stage:   stage-runtime.sh cpu|gpu CACHE DEST
#   DEST/onnxruntime/libonnxruntime.so.1.31.1 (+ CUDA provider and libraries for gpu)
#   DEST/models/<name>/{model.onnx,labels.txt}
# Real files, not the symlinks setup leaves in the repository.
set -eu
flavour=$1 cache=$2 dest=$3
ort=onnxruntime/libonnxruntime.so.1.31.1

mkdir -p "$dest/onnxruntime" "$dest/models"
for dir in "$cache"/models/*/; do
  name=$(basename "$dir")
  mkdir -p "$dest/models/$name"
  cp -L "$dir/model.onnx" "$dir/labels.txt" "$dest/models/$name/"
done

case "$flavour" in
  cpu)
    cp -L "$cache/$ort" "$dest/$ort"
    ;;
  gpu)
    # onnxruntime-gpu 1.31.1 is built for CUDA 13 and cuDNN 9; its `cuda` and
    # `cudnn` extras bring those libraries as nvidia-* wheels. Copied flat
    # into one directory, whatever the wheels' own layout.
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
      --target /tmp/ort-gpu 'onnxruntime-gpu[cuda,cudnn]==1.31.1'
    cp -L /tmp/ort-gpu/onnxruntime/capi/libonnxruntime*.so* "$dest/onnxruntime/"
    find /tmp/ort-gpu/nvidia -name '*.so*' -type f -exec cp {} "$dest/onnxruntime/" \;
    test -f "$dest/$ort"
    rm -rf /tmp/ort-gpu
    ;;
  *)
    echo "stage-runtime.sh: ORT must be cpu or gpu, not '$flavour'" >&2
    exit 2
    ;;
esac
ls -l "$dest/onnxruntime" "$dest/models"/*
