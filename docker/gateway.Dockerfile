# syntax=docker/dockerfile:1
# The gateway on CPU: `pip install .` installs pyproject.toml's base dependencies, which are
# exactly the gateway's (ONNX Runtime, FAISS, FastAPI, Redis client, ...) and never torch.
#
#   docker build -f docker/gateway.Dockerfile -t ratingctr-gateway .        # from the repo root
#   docker build -f docker/gateway.Dockerfile --build-arg EXTRAS=loadtest -t ratingctr-loadtest .
#
# EXTRAS=loadtest adds Locust and matplotlib: the image of compose's `locust` profile.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
# Only what the gateway imports: the namespace root and serving/ (plus loadtest/ for the
# Locust image); setup.py installs the rooms it finds.
COPY ratingctr ./ratingctr
COPY serving ./serving
COPY loadtest ./loadtest
COPY docker/healthcheck.py ./docker/healthcheck.py

ARG EXTRAS=""
RUN pip install --upgrade pip \
 && pip install ".${EXTRAS:+[$EXTRAS]}" \
 && python -c "import importlib.util, sys; sys.exit('torch must not be in the gateway image' if importlib.util.find_spec('torch') else 0)"

# /reports: where the compose `locust` profile's master writes its CSV (a named volume).
# /home/ratingctr/redis: the embedded Redis's directory (RATINGCTR_REDIS_DIR, used without
# REDIS_URL), owned by the gateway's user and a volume: a read-only root filesystem still
# lets it write, and its append-only file outlives the container.
RUN useradd --create-home --uid 10001 --user-group ratingctr \
 && install -d -o 10001 -g 10001 /reports /home/ratingctr/redis
VOLUME ["/home/ratingctr/redis"]
USER 10001:10001

# Bundles are mounted read-only at /bundles; REDIS_URL points at the Redis service (without
# it the gateway starts an embedded Redis under RATINGCTR_REDIS_DIR).
ENV RATINGCTR_HOST=0.0.0.0 RATINGCTR_PORT=8000 RATINGCTR_REDIS_DIR=/home/ratingctr/redis
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py", "http://127.0.0.1:8000/readyz"]
CMD ["ratingctr", "serve"]
