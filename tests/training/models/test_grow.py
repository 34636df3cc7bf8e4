"""Growing a model over a bigger vocabulary: every trained row bit-identical, new rows fresh."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ratingctr.training.config import EncoderConfig, HeadConfig, ModelConfig, RunConfig
from ratingctr.training.data.schema import FieldSchema
from ratingctr.training.graph import normalized_adjacency
from ratingctr.training.models.build import build_model
from ratingctr.training.models.ctr import id_rows
from ratingctr.training.models.grow import copy_blocks, grow_model, grow_state_into
from ratingctr.training.models.registry import ARCHITECTURES

SMALL = {"WideDeep": {"mlp_hidden_size": [16]}, "NFM": {"mlp_hidden_size": [16]},
         "xDeepFM": {"mlp_hidden_size": [16], "cin_layer_size": [8, 8]},
         "AutoInt": {"mlp_hidden_size": [16], "n_layers": 1}, "FiGNN": {"n_layers": 1},
         "DCNV2": {"mlp_hidden_size": [16]}, "EulerNet": {},
         "FinalMLP": {"mlp1_hidden_size": [16], "mlp2_hidden_size": [16], "fs_hidden_size": [16]},
         "AFN": {"logarithmic_neurons": 16, "afn_hidden_size": [16]}, "GDCN": {"mlp_hidden_size": [16]}}
NEW_USERS, NEW_ITEMS = 3, 2
TABLES = ("encoder.embedding.weight", "linear.table.weight")


def _grown_schema(schema: FieldSchema) -> FieldSchema:
    extra = {"user_id": NEW_USERS, "item_id": NEW_ITEMS}
    return FieldSchema(tuple(replace(f, vocab_size=f.vocab_size + extra.get(f.name, 0)) for f in schema.fields))


def _trained_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights moved away from any initialisation (as training would), BatchNorm stats included."""
    generator = torch.Generator().manual_seed(3)
    state = {}
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            value = value + torch.randn(value.shape, generator=generator) * 0.1
            if "running_var" in name:
                value = value.abs() + 0.5
        state[name] = value.clone()
    return state


def _adjacency(data, n_users: int, n_items: int) -> torch.Tensor:
    train = data.split == 0
    return normalized_adjacency(data.user[train], data.item[train], n_users, n_items)


def _check_growth(old_model, old_state, grown, fresh, old_schema: FieldSchema, new_schema: FieldSchema) -> None:
    grown_state, fresh_state = grown.state_dict(), fresh.state_dict()
    assert set(grown_state) == set(old_state)
    for name, value in old_state.items():
        if name not in TABLES:
            assert torch.equal(grown_state[name], value), name
            continue
        for old_spec, new_spec in zip(old_schema.fields, new_schema.fields):
            o0, _ = id_rows(old_schema, old_spec.name)
            n0, n1 = id_rows(new_schema, new_spec.name)
            old_rows = value[o0:o0 + old_spec.vocab_size]
            assert torch.equal(grown_state[name][n0:n0 + old_spec.vocab_size], old_rows), (name, old_spec.name)
            new_rows = grown_state[name][n0 + old_spec.vocab_size:n1]  # exactly the rows a fresh model draws
            assert torch.isfinite(new_rows).all()
            assert torch.equal(new_rows, fresh_state[name][n0 + old_spec.vocab_size:n1]), (name, new_spec.name)
        assert grown_state[name].shape[0] == value.shape[0] + NEW_USERS + NEW_ITEMS


@pytest.mark.parametrize("head", ["binary", "rating"])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_growth_keeps_every_trained_row_and_every_old_score(tiny, name: str, head: str) -> None:
    config = RunConfig(model=ModelConfig(name, 8, SMALL[name]), head=HeadConfig(head))
    torch.manual_seed(0)
    old_model = build_model(tiny.schema, config)
    old_state = _trained_state(old_model)
    old_model.load_state_dict(old_state)
    new_schema = _grown_schema(tiny.schema)
    torch.manual_seed(5)
    grown = grow_model(old_state, tiny.schema, new_schema, config)
    torch.manual_seed(5)
    fresh = build_model(new_schema, config)
    _check_growth(old_model, old_state, grown, fresh, tiny.schema, new_schema)
    # before any training, an old (user, item) pair scores bit-identically
    x = torch.from_numpy(tiny.features(tiny.user[:256], tiny.item[:256]))
    old_model.eval(), grown.eval()
    with torch.no_grad():
        before, after = old_model.predict(x), grown.predict(x)
    assert torch.equal(before.p_click, after.p_click)
    # and a new id's row is used: a new user scores (finitely) unlike the unknown user
    new_user = x.clone()
    new_user[:, 0] = tiny.n_users + NEW_USERS
    unknown = x.clone()
    unknown[:, 0] = 0
    with torch.no_grad():
        p_new, p_unknown = grown.predict(new_user).p_click, grown.predict(unknown).p_click
    assert torch.isfinite(p_new).all() and not torch.equal(p_new, p_unknown)


@pytest.mark.parametrize("head", ["binary", "rating"])
def test_lightgcn_encoder_grows_its_ego_rows_over_the_grown_graph(tiny, head: str) -> None:
    config = RunConfig(model=ModelConfig("DCNV2", 8, SMALL["DCNV2"]), head=HeadConfig(head),
                       encoder=EncoderConfig("lightgcn", 2))
    torch.manual_seed(0)
    old_model = build_model(tiny.schema, config, _adjacency(tiny, tiny.n_users, tiny.n_items))
    old_state = _trained_state(old_model)
    old_model.load_state_dict(old_state)
    new_schema = _grown_schema(tiny.schema)
    # the same edges over more nodes: the new nodes are isolated, every old node's neighbourhood is unchanged
    grown_graph = _adjacency(tiny, tiny.n_users + NEW_USERS, tiny.n_items + NEW_ITEMS)
    torch.manual_seed(5)
    grown = grow_model(old_state, tiny.schema, new_schema, config, grown_graph)
    torch.manual_seed(5)
    fresh = build_model(new_schema, config, grown_graph)
    _check_growth(old_model, old_state, grown, fresh, tiny.schema, new_schema)
    x = torch.from_numpy(tiny.features(tiny.user[:256], tiny.item[:256]))
    old_model.eval(), grown.eval()
    with torch.no_grad():
        diff = (old_model.predict(x).p_click - grown.predict(x).p_click).abs().max()
    assert float(diff) <= 1e-6  # same sums over the same neighbours; the sparse kernel may reorder them


def test_growth_refuses_another_model_and_shrinking(tiny) -> None:
    dcn = build_model(tiny.schema, RunConfig(model=ModelConfig("DCNV2", 8, SMALL["DCNV2"]), head=HeadConfig("binary")))
    nfm = build_model(tiny.schema, RunConfig(model=ModelConfig("NFM", 8, SMALL["NFM"]), head=HeadConfig("binary")))
    sizes = [f.vocab_size for f in tiny.schema.fields]
    with pytest.raises(ValueError, match="do not belong"):
        grow_state_into(nfm, dcn.state_dict(), sizes, sizes)
    with pytest.raises(ValueError, match="can only grow"):
        copy_blocks(torch.zeros(5, 2), torch.zeros(4, 2), [3, 2], [2, 2])
    old, new = torch.arange(10.0).reshape(5, 2), torch.full((8, 2), -1.0)
    copy_blocks(old, new, [3, 2], [5, 3])
    assert new[:, 0].tolist() == [0.0, 2.0, 4.0, -1.0, -1.0, 6.0, 8.0, -1.0]
    assert np.isfinite(new.numpy()).all()
