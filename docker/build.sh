#!/usr/bin/env bash
# `make build`: the shared base image, then the training and serving images, each tagged
# with the git commit and `latest`. Hermetic: wheels are resolved on the host into
# build/wheelhouse/ and installed with --no-index, so no build step reaches PyPI (or
# trips over a TLS-intercepting proxy). Each image gets a small build context of its own
# under build/context/ (hard links), so the 3 GB of torch wheels go to the engine once.
#
# Settings (environment):
#   BASE_IMAGE        OS image to start from (default debian:bookworm-slim; tests pass a
#                     local debootstrap'd bookworm, docker/test_base.sh)
#   IMAGENET_WEIGHTS  download (default) | skip | PATH to resnet50-11ad3fa6.pth
#   TAG               image tag besides latest (default: the git commit)
#   CUDA_COMPAT       download (default: CUDA forward-compatibility libraries from NVIDIA's
#                     apt repository, for hosts with older drivers) | skip
#   TORCH_INDEX_URL   an extra package index for torch and torchvision, e.g.
#                     https://download.pytorch.org/whl/cu128 for CUDA 12 wheels (drivers
#                     >= 525); default: PyPI's CUDA 13 wheels (drivers >= 580)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
IMAGENET_WEIGHTS=${IMAGENET_WEIGHTS:-download}
TAG=${TAG:-$(git rev-parse --short HEAD 2>/dev/null || echo dev)}
CUDA_COMPAT=${CUDA_COMPAT:-download}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}

command -v docker >/dev/null || { echo "error: no docker command: install Docker (apt-get install docker.io)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "error: the Docker engine is not running (start dockerd), or this user may not use it" >&2; exit 1; }

for part in model train serve; do
  wheels=build/wheelhouse/$part
  index=()
  if [ "$part" = model ] && [ -n "$TORCH_INDEX_URL" ]; then
    # torch==2.14.1 also matches 2.14.1+cu128; the CUDA 13 pins of constraints.txt then
    # name packages that are not installed, and do not apply.
    index=(--extra-index-url "$TORCH_INDEX_URL")
  fi
  if [ ! -f "$wheels/.complete" ] || [ "requirements/$part.txt" -nt "$wheels/.complete" ] \
      || [ requirements/constraints.txt -nt "$wheels/.complete" ] \
      || [ "$(cat "$wheels/.complete")" != "$TORCH_INDEX_URL" ]; then
    echo "resolving wheels for requirements/$part.txt into $wheels"
    rm -rf "$wheels"
    "$PYTHON" -m pip wheel --quiet --disable-pip-version-check -w "$wheels" "${index[@]}" \
      -r "requirements/$part.txt" -c requirements/constraints.txt
    echo "$TORCH_INDEX_URL" > "$wheels/.complete"
  fi
done

context() {  # context NAME WHEELS: build/context/NAME with what one Dockerfile copies
  local dir=build/context/$1
  rm -rf "$dir" && mkdir -p "$dir/docker" "$dir/weights"
  cp -al requirements "$dir/requirements"
  cp -al "build/wheelhouse/$2" "$dir/wheelhouse"
  cp -a docker/entrypoints "$dir/docker/entrypoints"
  # the dogbreed package as a wheel built here: the image needs no build backend
  "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    -w "$dir/dist" ./container_src >/dev/null
  rm -rf container_src/build  # setuptools' scratch folder
  echo "$dir"
}

weights_mode=$IMAGENET_WEIGHTS
train_context=$(context train train)
if [ "$IMAGENET_WEIGHTS" != download ] && [ "$IMAGENET_WEIGHTS" != skip ]; then
  [ -f "$IMAGENET_WEIGHTS" ] || { echo "error: IMAGENET_WEIGHTS=$IMAGENET_WEIGHTS: no such file" >&2; exit 1; }
  cp "$IMAGENET_WEIGHTS" "$train_context/weights/"
  weights_mode=copy
fi

# SageMaker takes Docker v2 manifests only. The legacy builder makes them; BuildKit (buildx,
# the default of recent engines and Docker Desktop) adds provenance attestations and OCI
# media types unless told not to, and SageMaker then refuses the pushed image.
if [ "${DOCKER_BUILDKIT:-1}" != 0 ] && docker buildx version >/dev/null 2>&1; then
  BUILD=(docker buildx build --provenance=false --sbom=false
         --output "type=docker,oci-mediatypes=false")
else
  BUILD=(docker build)
fi

build() {  # build IMAGE DOCKERFILE CONTEXT [ARGS...]
  local image=$1 dockerfile=$2 dir=$3; shift 3
  local started=$SECONDS
  "${BUILD[@]}" --quiet --platform linux/amd64 -f "$dockerfile" -t "$image:$TAG" -t "$image:latest" "$@" "$dir" >/dev/null
  echo "built $image:$TAG in $((SECONDS - started)) s, $(docker image inspect -f '{{.Size}}' "$image:$TAG" | awk '{printf "%.2f GB", $1/1e9}')"
}
build dogbreed-base docker/base.Dockerfile "$(context base model)" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  --build-arg "CUDA_COMPAT=$CUDA_COMPAT"
build dogbreed-train docker/train.Dockerfile "$train_context" \
  --build-arg "DOGBREED_BASE=dogbreed-base:$TAG" --build-arg "IMAGENET_WEIGHTS=$weights_mode"
build dogbreed-serve docker/serve.Dockerfile "$(context serve serve)" \
  --build-arg "DOGBREED_BASE=dogbreed-base:$TAG"
