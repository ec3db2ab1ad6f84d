# Training image: `docker run IMAGE train`, as SageMaker calls it.
# Context (assembled by docker/build.sh): requirements/, wheelhouse/ (train.txt's wheels),
# dist/ (the dogbreed wheel), weights/ (empty, or the ImageNet file when
# IMAGENET_WEIGHTS is a path).
ARG DOGBREED_BASE=dogbreed-base:latest
FROM ${DOGBREED_BASE}
# download: fetch torchvision's ImageNet ResNet50 weights now, so jobs need no network;
# skip: none (jobs need pretrained=none or a path); copy: take weights/ from the context.
ARG IMAGENET_WEIGHTS=download
# compile=on: Triton (GPU) and Inductor (CPU) build their kernels with a C and a C++
# compiler and Python's headers at run time (about 400 MB).
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ python3-dev \
 && rm -rf /var/lib/apt/lists/*
COPY requirements/ /tmp/requirements/
COPY wheelhouse/ /tmp/wheelhouse/
COPY dist/ /tmp/dist/
COPY weights/ /tmp/weights/
RUN pip install --quiet --no-cache-dir --no-index --find-links /tmp/wheelhouse \
      -r /tmp/requirements/train.txt -c /tmp/requirements/constraints.txt \
 && pip install --quiet --no-cache-dir --no-index --no-deps /tmp/dist/*.whl \
 && python -m dogbreed.imagenet_weights "$IMAGENET_WEIGHTS" /tmp/weights \
 && rm -rf /tmp/requirements /tmp/wheelhouse /tmp/dist /tmp/weights
# Ahead of the venv on PATH: the toolkits install console scripts named `train`/`serve`.
COPY docker/entrypoints/train /opt/dogbreed/bin/train
ENV PATH=/opt/dogbreed/bin:$PATH
LABEL org.opencontainers.image.title="dogbreed-train" \
      org.opencontainers.image.description="ResNet50 dog-breed fine-tuning, SageMaker training contract"
# tini as PID 1: passes SIGTERM on (the job checkpoints) and reaps orphans.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["train"]
