"""Inference runtimes for the gateway: ONNX Runtime sessions and FAISS indexes, GPU when possible.

GPU use is chosen by ``RATINGCTR_DEVICE`` (``auto`` default, ``cpu``, ``cuda``): ``auto``
takes the CUDA execution provider / a FAISS GPU index when the installed wheels and a
device support them (``pip install 'ratingctr[gpu]'``), and falls back to CPU with one
log line saying why.  Never imports torch.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("ratingctr.runtime")


def _want_gpu(device: str | None) -> bool:
    device = (device or os.environ.get("RATINGCTR_DEVICE", "auto")).lower()
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"RATINGCTR_DEVICE must be auto, cpu or cuda, got {device!r}")
    return device != "cpu"


def ort_session(path: Path, threads: int = 1, device: str | None = None):
    """An ``InferenceSession`` on CUDA when available and wanted, else CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if _want_gpu(device):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            log.info("ONNX Runtime: CUDA execution provider not available (install ratingctr[gpu]); using CPU")
    session = ort.InferenceSession(str(path), options, providers=providers)
    if providers[0] == "CUDAExecutionProvider" and session.get_providers()[0] != "CUDAExecutionProvider":
        log.info("ONNX Runtime: CUDA provider failed to initialise; using CPU")
    return session


def faiss_index(path: Path, device: str | None = None):
    """Read a FAISS index; move it to the GPU when faiss-gpu and a device exist."""
    import faiss

    index = faiss.read_index(str(path))
    if _want_gpu(device):
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if gpus > 0 and hasattr(faiss, "StandardGpuResources"):
            resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(resources, 0, index)
            index.ratingctr_resources = resources  # keep the GPU memory pool alive with the index
        else:
            log.info("FAISS: no GPU build or no device (install ratingctr[gpu]); using the CPU index")
    return index
