# syntax=docker/dockerfile:1
# The gateway on a CUDA host: ONNX Runtime's CUDA execution provider and FAISS on the GPU.
# Same install as the CPU image plus pyproject's `gpu` extra, whose wheels replace the CPU
# ones (they ship the same Python modules; see the README's GPU note):
#   pip install . <gpu reqs>  ->  pip uninstall onnxruntime faiss-cpu  ->  force-reinstall <gpu reqs>
# Still no torch.  RATINGCTR_DEVICE=auto falls back to CPU, with one log line, without a GPU.
#
#   docker build -f docker/gateway-gpu.Dockerfile -t ratingctr-gateway-gpu .
#   docker run --gpus all -v $PWD/bundles:/bundles:ro -e RATINGCTR_BUNDLES=... ratingctr-gateway-gpu
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
# Only what the gateway imports: the namespace root and serving/ (plus loadtest/ for the
# Locust image); setup.py installs the rooms it finds.
COPY ratingctr ./ratingctr
COPY serving ./serving
COPY loadtest ./loadtest
COPY docker/healthcheck.py docker/extras.py ./docker/

RUN pip install --upgrade pip \
 && GPU_REQS="$(python docker/extras.py gpu)" \
 && pip install . $GPU_REQS \
 && pip uninstall -y onnxruntime faiss-cpu \
 && pip install --force-reinstall --no-deps $GPU_REQS \
 && python -c "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers(), o.get_available_providers()" \
 && python -c "import faiss; assert hasattr(faiss, 'StandardGpuResources'), 'faiss without GPU support'" \
 && python -c "import importlib.util, sys; sys.exit('torch must not be in the gateway image' if importlib.util.find_spec('torch') else 0)"

# The embedded Redis's directory exists, owned by the gateway's user, and is a volume: a
# read-only root filesystem still lets it write, and its append-only file outlives the container.
RUN useradd --create-home --uid 10001 --user-group ratingctr \
 && install -d -o 10001 -g 10001 /home/ratingctr/redis
VOLUME ["/home/ratingctr/redis"]
USER 10001:10001

ENV RATINGCTR_HOST=0.0.0.0 RATINGCTR_PORT=8000 RATINGCTR_DEVICE=auto RATINGCTR_REDIS_DIR=/home/ratingctr/redis
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py", "http://127.0.0.1:8000/readyz"]
CMD ["ratingctr", "serve"]
