"""Architecture names → body classes, and construction with clear errors for typos."""
from __future__ import annotations

import inspect
from typing import Any

from ratingctr.training.models.afn import AFN
from ratingctr.training.models.autoint import AutoInt
from ratingctr.training.models.base import Body
from ratingctr.training.models.dcnv2 import DCNV2
from ratingctr.training.models.eulernet import EulerNet
from ratingctr.training.models.fignn import FiGNN
from ratingctr.training.models.finalmlp import FinalMLP
from ratingctr.training.models.gdcn import GDCN
from ratingctr.training.models.nfm import NFM
from ratingctr.training.models.widedeep import WideDeep
from ratingctr.training.models.xdeepfm import xDeepFM

ARCHITECTURES: dict[str, type[Body]] = {
    "WideDeep": WideDeep, "NFM": NFM, "xDeepFM": xDeepFM, "AutoInt": AutoInt, "FiGNN": FiGNN,
    "DCNV2": DCNV2, "EulerNet": EulerNet, "FinalMLP": FinalMLP, "AFN": AFN, "GDCN": GDCN,
}

_STRUCTURAL = ("self", "num_fields", "embedding_dim", "out_dim")


def hyper_parameters(name: str) -> dict[str, Any]:
    """The keyword hyper-parameters of an architecture (``reg_weight`` included) with their defaults."""
    signature = inspect.signature(ARCHITECTURES[name].__init__)
    return {k: p.default for k, p in signature.parameters.items() if k not in _STRUCTURAL}


def check_params(name: str, params: dict[str, Any]) -> None:
    """``ValueError`` naming the valid choices for an unknown architecture or hyper-parameter."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model '{name}'; choose one of: {', '.join(ARCHITECTURES)}")
    known = hyper_parameters(name)
    for key in params:
        if key not in known:
            raise ValueError(f"unknown hyper-parameter '{key}' for {name}; known: {', '.join(sorted(known))}")


def build_body(name: str, num_fields: int, embedding_dim: int, out_dim: int, params: dict[str, Any]) -> Body:
    """Instantiate architecture ``name``; unknown names or keys raise ``ValueError`` listing the valid ones.

    Example:
        >>> build_body("DCNV2", 7, 16, 5, {"cross_layer_num": 3}).out_dim
        5
    """
    check_params(name, params)
    return ARCHITECTURES[name](num_fields, embedding_dim, out_dim, **params)
