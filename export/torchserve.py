"""``ranker.mar`` and ``config.properties`` for fleets that already run TorchServe."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from ratingctr.bundle import BundleManifest
from ratingctr.errors import UserError

HANDLER = Path(__file__).with_name("torchserve_handler.py")


def config_properties(model_store: str = ".", inference_port: int = 8080, management_port: int = 8081,
                      metrics_port: int = 8082, grpc_inference_port: int = 7070, grpc_management_port: int = 7071,
                      workers: int = 1) -> str:
    """A TorchServe config serving ``ranker.mar`` from the bundle directory on loopback.

    Token authorisation stays on (TorchServe's default); tests start it with
    ``--disable-token-auth`` on their own ports.
    """
    return "\n".join([
        f"inference_address=http://127.0.0.1:{inference_port}",
        f"management_address=http://127.0.0.1:{management_port}",
        f"metrics_address=http://127.0.0.1:{metrics_port}",
        # TorchServe also opens gRPC listeners (default 7070/7071 on all interfaces): pin them to loopback.
        "grpc_inference_address=127.0.0.1",
        "grpc_management_address=127.0.0.1",
        f"grpc_inference_port={grpc_inference_port}",
        f"grpc_management_port={grpc_management_port}",
        f"model_store={model_store}",
        "load_models=ranker=ranker.mar",
        f"default_workers_per_model={workers}",
        "install_py_dep_per_model=false",
        "disable_system_metrics=true",
        "",
    ])


def venv_tool(name: str) -> str:
    """A console script of the TorchServe extra: on PATH, or beside this interpreter (an unactivated venv)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise UserError(f"{name} is not installed: pip install 'ratingctr[torchserve]'")
    return found


def build_archive(onnx_path: Path, manifest: BundleManifest, work_dir: Path) -> dict[str, Path]:
    """Pack the ONNX model and handler with the real ``torch-model-archiver``.

    ``ranker_meta.json`` goes into the archive so a TorchServe operator can tell which
    model it serves; the handler itself reads the column count from the ONNX input.
    """
    archiver = venv_tool("torch-model-archiver")
    staging = work_dir / "mar"
    staging.mkdir(exist_ok=True)
    meta = staging / "ranker_meta.json"
    meta.write_text(json.dumps({"name": manifest.name, "model": manifest.model.to_dict(),
                                "outputs": list(manifest.outputs), "num_columns": manifest.num_columns}))
    cmd = [archiver, "--model-name", "ranker", "--version", "1.0", "--serialized-file", str(onnx_path),
           "--handler", str(HANDLER), "--extra-files", str(meta), "--export-path", str(staging), "--force"]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise UserError(f"torch-model-archiver failed: {proc.stderr.strip()[-500:]}")
    props = work_dir / "config.properties"
    props.write_text(config_properties())
    return {"ranker.mar": staging / "ranker.mar", "config.properties": props}
