"""Hand-optimised computations, each beside the plain reference maths it must equal.

Model files call these through small functions (``fast_*`` / ``reference_*``) and pick
one with the module's ``kernels`` mode (``mode.py``); nothing here decides by whether
gradients happen to be enabled.  Every kernel is checked against its reference in values,
gradients and ONNX parity by ``tests/training/models/kernels/test_kernels.py``.

*training* kernels (run in ``TRAINING`` mode by a module in train mode):

* ``attention``: field self-attention with a hand-written backward;
* ``dropout``: dropout masks from random bytes, built as bit patterns;
* ``cross_deep``: parallel cross + deep through a split prediction weight.

*forward* kernels (run in ``TRAINING`` and ``INFERENCE`` modes):

* ``euler``: EulerNet's closed-form polar input, folded μ, one-sine output, contiguous
  swaps and thread-parallel order mixing;
* ``cin``: CIN as channels-last GEMMs over field-major products;
* ``afn``: AFN's logarithmic neurons kept d-major;
* ``bilinear``: FinalMLP's multi-head bilinear fusion as per-head GEMMs;
* ``lookup``: embedding + first-order rows from one gather;
* ``fignn``: FiGNN's graph part on field-major node states.

*training* kernels pay off only with a backward pass (or draw training-time randomness);
*forward* kernels are plain traceable tensor ops that also make the served ONNX graph.
"""
from __future__ import annotations

from ratingctr.training.models.kernels.mode import KernelMode, KernelSwitch, use_kernels

__all__ = ["KernelMode", "KernelSwitch", "use_kernels"]
