# Serving image: `docker run IMAGE serve`, as SageMaker calls it; a multi-model endpoint too.
# Context (assembled by docker/build.sh): requirements/, wheelhouse/ (serve.txt's wheels),
# dist/ (the dogbreed wheel).
ARG DOGBREED_BASE=dogbreed-base:latest
FROM ${DOGBREED_BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends default-jre-headless \
 && rm -rf /var/lib/apt/lists/*
COPY requirements/ /tmp/requirements/
COPY wheelhouse/ /tmp/wheelhouse/
COPY dist/ /tmp/dist/
RUN pip install --quiet --no-cache-dir --no-index --find-links /tmp/wheelhouse \
      -r /tmp/requirements/serve.txt -c /tmp/requirements/constraints.txt \
 && pip install --quiet --no-cache-dir --no-index --no-deps /tmp/dist/*.whl \
 && rm -rf /tmp/requirements /tmp/wheelhouse /tmp/dist
# Ahead of the venv on PATH: the toolkits install console scripts named `train`/`serve`.
COPY docker/entrypoints/serve /opt/dogbreed/bin/serve
ENV PATH=/opt/dogbreed/bin:$PATH
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      com.amazonaws.sagemaker.capabilities.multi-models=true \
      org.opencontainers.image.title="dogbreed-serve" \
      org.opencontainers.image.description="Dog-breed predictions over SageMaker's inference contract"
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["serve"]
