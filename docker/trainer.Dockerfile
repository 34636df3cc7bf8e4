# syntax=docker/dockerfile:1
# Training, evaluation and export: pyproject's `train` extra (+ `torchserve` for
# `export --torchserve`, which runs torch-model-archiver).  torch is installed first, at the
# version pyproject pins, from PyTorch's wheel index: the CPU build by default (PyPI's
# Linux wheel is the multi-GB CUDA build).  For CUDA training:
#   docker build -f docker/trainer.Dockerfile --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 -t ratingctr-trainer-cuda .
#   docker run --gpus all ...
#
#   docker build -f docker/trainer.Dockerfile -t ratingctr-trainer .
#   docker run --rm -v $PWD/runs:/work/runs -v $PWD/bundles:/work/bundles -v $PWD/data:/work/data \
#       ratingctr-trainer train --model DCNV2 --head rating --out runs/dcnv2-rating
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

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
COPY docker/extras.py ./docker/extras.py

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG EXTRAS=train,torchserve
RUN pip install --upgrade pip \
 && pip install --index-url "${TORCH_INDEX}" "$(python docker/extras.py train torch)" \
 && pip install ".[${EXTRAS}]" \
 && ratingctr --help > /dev/null

RUN useradd --create-home --uid 10001 --user-group ratingctr \
 && mkdir -p /work/data /work/runs /work/bundles && chown -R 10001:10001 /work
USER 10001:10001
WORKDIR /work
# The MovieLens-100k download is cached here (mount a volume to keep it).
ENV RATINGCTR_DATA_DIR=/work/data
ENTRYPOINT ["ratingctr"]
CMD ["--help"]
