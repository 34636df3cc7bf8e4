# syntax=docker/dockerfile:1
# TorchServe serving a bundle's ranker.mar (an ONNX Runtime handler, see export/torchserve_handler.py),
# for fleets that already run TorchServe.  pyproject's `torchserve` extra (server, archiver)
# plus its base dependencies (ONNX Runtime, numpy), Java 17 for the frontend, and torch at
# the version pyproject's `train` extra pins (TorchServe's base handler imports torch), CPU build.
#
#   docker build -f docker/torchserve.Dockerfile -t ratingctr-torchserve .
#   docker run -v $PWD/bundles/dcnv2-rating:/model-store:ro -p 127.0.0.1:8080:8080 ratingctr-torchserve
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY ratingctr ./ratingctr
COPY training ./training
COPY export ./export
COPY serving ./serving
COPY loadtest ./loadtest
COPY docker/extras.py docker/healthcheck.py docker/torchserve.properties ./docker/

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --upgrade pip \
 && pip install --index-url "${TORCH_INDEX}" "$(python docker/extras.py train torch)" \
 && pip install ".[torchserve]" \
 && torchserve --help > /dev/null

RUN useradd --create-home --uid 10001 --user-group ratingctr
USER 10001:10001
WORKDIR /home/ratingctr

# The model store is the bundle directory (read-only is fine: TorchServe unpacks the .mar
# under its own temp dir).  Token auth is off: the inference port is meant for the compose
# network and the host's loopback only; management and metrics stay inside the container.
ENV TS_MODEL_STORE=/model-store TS_DEFAULT_WORKERS_PER_MODEL=1 LOG_LOCATION=/home/ratingctr/logs
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py", "http://127.0.0.1:8080/ping"]
CMD ["sh", "-c", "exec torchserve --start --foreground --ncs --disable-token-auth --ts-config /app/docker/torchserve.properties --model-store \"$TS_MODEL_STORE\" --models ranker=ranker.mar"]
