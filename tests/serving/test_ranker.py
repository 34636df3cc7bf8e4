"""The serving object: loads bundles without torch, scores exactly like the checkpoint, refuses mismatches."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

PROBE = """
import json, sys
import numpy as np
from ratingctr.serving.ranker import load_ranker
b = load_ranker(sys.argv[1])
x = b.bundle["item_fields.npy"][1:6]
u = np.repeat(b.bundle["user_fields.npy"][1:2], 5, axis=0)
out = b.predict(np.concatenate([u, x], axis=1))
print(json.dumps({"torch": "torch" in sys.modules, "p": out["p_click"].tolist(),
                  "outputs": b.output_names, "ntotal": b.index.ntotal}))
"""


def test_loader_is_torch_free_and_matches_torch(tiny_bundles: dict) -> None:
    path = tiny_bundles["rating"]
    proc = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["torch"] is False
    assert result["outputs"] == ["p_click", "rating_probs", "expected_rating"]
    # the same five candidates through the checkpoint in torch
    import torch

    from ratingctr.bundle import load_bundle
    from ratingctr.training.run import load_checkpoint, restore_model

    manifest = load_bundle(path).manifest
    payload, config = load_checkpoint(Path(manifest.source.ranker))
    model = restore_model(payload, config).eval()
    bundle = load_bundle(path)
    x = np.concatenate([np.repeat(bundle["user_fields.npy"][1:2], 5, axis=0), bundle["item_fields.npy"][1:6]], axis=1)
    with torch.no_grad():
        expected = model.predict(torch.from_numpy(x)).p_click.numpy()
    assert np.max(np.abs(np.array(result["p"]) - expected)) <= 1e-5
    assert result["ntotal"] == len(bundle.vocab["item_id"]) - 1


def test_runtime_falls_back_to_cpu_with_a_log_line(tiny_bundles: dict, caplog, monkeypatch) -> None:
    import logging

    import onnxruntime as ort
    import pytest

    from ratingctr.serving.runtime import faiss_index, ort_session

    path = tiny_bundles["rating"]
    with caplog.at_level(logging.INFO, logger="ratingctr.runtime"):
        session = ort_session(path / "ranker.onnx", device="auto")
        index = faiss_index(path / "items.faiss", device="auto")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert session.get_providers() == ["CPUExecutionProvider"]
        assert any("using CPU" in r.message for r in caplog.records)
    assert index.ntotal > 0
    assert ort_session(path / "ranker.onnx", device="cpu").get_providers() == ["CPUExecutionProvider"]
    monkeypatch.setenv("RATINGCTR_DEVICE", "tpu")
    with pytest.raises(ValueError, match="RATINGCTR_DEVICE must be auto, cpu or cuda"):
        ort_session(path / "ranker.onnx")
