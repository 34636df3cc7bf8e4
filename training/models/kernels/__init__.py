"""Hand-optimised computations, each beside the plain reference maths it must equal.

Model files call these through small functions (``fast_*`` / ``reference_*``) and pick
one with the module's ``kernels`` mode (``mode.py``); nothing here decides by whether
gradients happen to be enabled.  Every kernel is checked against its reference in values,
gradients and ONNX parity by ``tests/training/models/kernels/test_kernels.py``.

==================  =====================================================  =========
module              kernel                                                 kind
==================  =====================================================  =========
``attention``       field self-attention with a hand-written backward      training
``dropout``         dropout masks from random bytes, built as bit patterns training
``cross_deep``      parallel cross + deep through a split prediction weight training
``euler``           EulerNet: closed-form polar input, folded μ, one-sine   forward
                    output, contiguous swaps, thread-parallel order mixing
``cin``             CIN as channels-last GEMMs over field-major products    forward
``afn``             AFN's logarithmic neurons kept d-major                  forward
``bilinear``        FinalMLP's multi-head bilinear fusion as per-head GEMMs forward
``lookup``          embedding + first-order rows from one gather            forward
``fignn``           FiGNN's graph part on field-major node states           forward
==================  =====================================================  =========

*training* kernels pay off only with a backward pass (or draw training-time randomness);
*forward* kernels are plain traceable tensor ops that also make the served ONNX graph.
"""
from __future__ import annotations

from ratingctr.training.models.kernels.mode import KernelMode, KernelSwitch, use_kernels

__all__ = ["KernelMode", "KernelSwitch", "use_kernels"]
