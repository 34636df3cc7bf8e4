"""Every architecture × head, assembled as the trainer uses it."""
import numpy as np
import pytest
import torch

from ratingctr.training.config import HeadConfig, ModelConfig, RunConfig, model_defaults
from ratingctr.training.data.schema import FieldSchema, FieldSpec
from ratingctr.training.models.build import build_model
from ratingctr.training.models.ctr import CTRModel
from ratingctr.training.models.registry import ARCHITECTURES

SCHEMA = FieldSchema((FieldSpec("user_id", 40, "user"), FieldSpec("age", 6, "user"),
                      FieldSpec("item_id", 50, "item"), FieldSpec("genre", 7, "item", slots=3)))


def _batch(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    cols = [rng.integers(1, 40, n), rng.integers(0, 6, n), rng.integers(1, 50, n)]
    genre = rng.integers(0, 7, (n, 3))
    genre[:, 0] = rng.integers(1, 7, n)  # every item has at least one genre
    x = torch.from_numpy(np.column_stack(cols + [genre]).astype(np.int64))
    rating = torch.from_numpy(rng.integers(1, 6, n))
    return x, rating, (rating >= 4).float()


def _model(name: str, head: str) -> CTRModel:
    defaults = model_defaults(name)
    return build_model(SCHEMA, RunConfig(model=ModelConfig(name, 8, defaults["params"]), head=HeadConfig(head)))


@pytest.mark.parametrize("head", ["binary", "rating"])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_forward_backward_and_loss_decreases(name: str, head: str) -> None:
    torch.manual_seed(0)
    model = _model(name, head)
    x, rating, click = _batch()
    model.eval()
    pred = model.predict(x)
    assert pred.p_click.shape == (256,) and ((pred.p_click >= 0) & (pred.p_click <= 1)).all()
    if head == "rating":
        assert pred.rating_probs.shape == (256, 5)
        assert torch.allclose(pred.rating_probs.sum(1), torch.ones(256), atol=1e-5)
        assert ((pred.expected_rating >= 1) & (pred.expected_rating <= 5)).all()
    else:
        assert pred.rating_probs is None
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model.loss(x, rating, click)
    first.backward()
    emb_grad = model.encoder.embedding.weight.grad
    assert emb_grad is not None and torch.isfinite(emb_grad).all() and emb_grad.abs().sum() > 0
    optimizer.step()
    for _ in range(60):
        optimizer.zero_grad()
        loss = model.loss(x, rating, click)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        final = model.loss(x, rating, click)
    assert torch.isfinite(final) and final.item() < 0.9 * first.item(), (first.item(), final.item())


def test_multi_valued_field_is_mean_pooled() -> None:
    model = _model("WideDeep", "binary")
    x = torch.tensor([[3, 1, 5, 2, 4, 0], [3, 1, 5, 4, 2, 0], [3, 1, 5, 2, 0, 0]])
    emb = model.field_embeddings(x)
    table = model.encoder.embedding.weight
    genre_offset = 40 + 6 + 50
    expected = (table[genre_offset + 2] + table[genre_offset + 4]) / 2
    assert torch.allclose(emb[0, 3], expected, atol=1e-6)
    assert torch.allclose(emb[0], emb[1], atol=1e-6)  # slot order does not matter
    assert torch.allclose(emb[2, 3], table[genre_offset + 2], atol=1e-6)  # padding ignored
    assert torch.allclose(emb[0, 0], table[3]) and torch.allclose(emb[0, 2], table[40 + 6 + 5])


def test_state_dict_round_trip_with_weights_only(tmp_path) -> None:
    model = _model("DCNV2", "rating")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "m.pt")
    restored = _model("DCNV2", "rating")
    restored.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"])
    x, _, _ = _batch(16)
    model.eval(), restored.eval()
    assert torch.equal(model.predict(x).p_click, restored.predict(x).p_click)
