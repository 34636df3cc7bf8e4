"""TorchServe handler for a ratingctr ranker: ONNX Runtime inside TorchServe.

Request body: ``{"fields": [[int, ...], ...]}`` (or the bare list of rows), each row the
``C`` int64 field columns of one candidate.  Response: ``{"p_click": [...]}`` plus
``rating_probs`` and ``expected_rating`` for rating heads.  This file is packed into
``ranker.mar``; it imports nothing from ratingctr, only what TorchServe provides.
"""
from __future__ import annotations

import json
import os

import numpy as np
from ts.torch_handler.base_handler import BaseHandler


class RankerHandler(BaseHandler):
    def initialize(self, context) -> None:
        import onnxruntime as ort

        model_dir = context.system_properties.get("model_dir")
        available = ort.get_available_providers()
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if "CUDAExecutionProvider" in available \
            else ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("RATINGCTR_ORT_THREADS", "1"))
        self.session = ort.InferenceSession(os.path.join(model_dir, "ranker.onnx"), options, providers=providers)
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.columns = self.session.get_inputs()[0].shape[1]
        self.initialized = True

    def _rows(self, request: dict) -> np.ndarray:
        body = request.get("body") if request.get("body") is not None else request.get("data")
        if isinstance(body, (bytes, bytearray)):
            body = json.loads(body.decode("utf-8"))
        rows = body.get("fields") if isinstance(body, dict) else body
        x = np.asarray(rows, dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != self.columns:
            raise ValueError(f"expected a list of rows with {self.columns} int64 field columns, got shape {x.shape}")
        return x

    def handle(self, data, context):
        responses = []
        for request in data:
            outputs = self.session.run(None, {"fields": self._rows(request)})
            responses.append({name: value.tolist() for name, value in zip(self.outputs, outputs)})
        return responses
