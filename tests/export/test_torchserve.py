"""TorchServe for real: start it on loopback with the exported .mar and compare with ORT."""
import json
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest

from ratingctr.bundle import load_bundle
from ratingctr.export.torchserve_process import local_torchserve
from ratingctr.export.torchserve_process import post_json as _post

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs java (JDK 17) on PATH")


@pytest.fixture(scope="module")
def torchserve(tiny_bundles: dict):
    with local_torchserve(tiny_bundles["rating"], load_bundle(tiny_bundles["rating"]).manifest.num_columns) as url:
        yield url


def test_torchserve_scores_equal_in_process_onnx_runtime(torchserve: str, tiny_bundles: dict) -> None:
    from ratingctr.serving.ranker import load_ranker

    served = load_ranker(tiny_bundles["rating"], warmup_calls=0)
    bundle = served.bundle
    items = bundle["item_fields.npy"][1:41]
    x = np.concatenate([np.repeat(bundle["user_fields.npy"][3:4], len(items), axis=0), items], axis=1)
    remote = _post(f"{torchserve}/predictions/ranker", {"fields": x.tolist()})
    local = served.predict(x)
    assert set(remote) == {"p_click", "rating_probs", "expected_rating"}
    for name in remote:
        assert np.max(np.abs(np.asarray(remote[name], dtype=np.float32) - local[name])) <= 1e-6, name


def test_torchserve_rejects_bad_rows(torchserve: str) -> None:
    request = urllib.request.Request(f"{torchserve}/predictions/ranker", data=json.dumps({"fields": [[1, 2]]}).encode(),
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert 400 <= info.value.code < 600

