# The base both images share: Debian bookworm (Python 3.11, matching the cp311 wheels) and a
# venv at /opt/dogbreed/venv with torch, torchvision and the model code's needs
# (requirements/model.txt). The CUDA runtime comes inside the torch wheels (cu130); the
# driver comes from the host. Legacy builder only: no BuildKit features.
# Context (assembled by docker/build.sh): requirements/, wheelhouse/.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE} AS os
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv tini ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# The wheels stay in this stage; only the venv travels on.
FROM os AS venv
COPY requirements/ /tmp/requirements/
COPY wheelhouse/ /tmp/wheelhouse/
RUN python3 -m venv /opt/dogbreed/venv \
 && /opt/dogbreed/venv/bin/pip install --quiet --no-cache-dir --no-index \
      --find-links /tmp/wheelhouse -r /tmp/requirements/model.txt \
      -c /tmp/requirements/constraints.txt

# CUDA forward-compatibility libraries (libcuda of a newer driver, from NVIDIA's apt
# repository), as AWS's own containers carry them: the entrypoints load them when the
# host's driver is older than torch's CUDA needs (dogbreed.gpu_check). Data-center GPUs
# only. CUDA_COMPAT=skip leaves them out (offline builds; the tests).
FROM os AS compat
ARG CUDA_COMPAT=download
ARG CUDA_COMPAT_PACKAGE=cuda-compat-13-0
ARG CUDA_REPO=https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64
RUN mkdir -p /usr/local/cuda/compat \
 && if [ "$CUDA_COMPAT" = download ]; then \
      python3 -c "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], '/tmp/keyring.deb')" \
        "$CUDA_REPO/cuda-keyring_1.1-1_all.deb" \
      && dpkg -i /tmp/keyring.deb && apt-get update \
      && apt-get install -y --no-install-recommends "$CUDA_COMPAT_PACKAGE" \
      && cp -a /usr/local/cuda-*/compat/. /usr/local/cuda/compat/ \
      && rm -rf /var/lib/apt/lists/* /tmp/keyring.deb; \
    elif [ "$CUDA_COMPAT" != skip ]; then echo "CUDA_COMPAT must be download or skip" >&2; exit 1; fi

FROM os
COPY --from=compat /usr/local/cuda/compat /usr/local/cuda/compat
COPY --from=venv /opt/dogbreed/venv /opt/dogbreed/venv
ENV PATH=/opt/dogbreed/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    TORCH_HOME=/opt/dogbreed/torch
WORKDIR /opt/dogbreed
