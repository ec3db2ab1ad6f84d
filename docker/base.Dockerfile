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

FROM os
COPY --from=venv /opt/dogbreed/venv /opt/dogbreed/venv
ENV PATH=/opt/dogbreed/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    TORCH_HOME=/opt/dogbreed/torch
WORKDIR /opt/dogbreed
