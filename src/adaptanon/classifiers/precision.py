"""The arithmetic the model runs in, on CUDA: every *decision* in full fp32, the search's
gradients with TF32 allowed, and cuDNN's autotuner only on the model's fixed-shape view.

torch turns TF32 on for cuDNN convolutions by default: a convolution then multiplies with
10-bit mantissas, and logits move by about 1e-3 of their scale. The promise is about the
user's fp32 inference, so every forward pass whose logits decide something (the original
class, each step's check, the final status) runs with TF32 off (:func:`full_precision`).
The gradient only gives a direction to step in, so the backward pass may use TF32
(:func:`search_precision`). On the CPU these flags do nothing.

``cudnn.benchmark`` picks the fastest convolution algorithm per input shape, once per
shape: right for the model's view batches (a few fixed shapes, see
:func:`bucket_size`), wrong for anything shaped by the photos (every new size is tuned
again), so it is switched on only around the model's own calls (:func:`model_call`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch

SEARCH_TF32 = True
"""Whether the search's backward passes may use TF32 on CUDA (decisions never do)."""


@contextmanager
def _flags(tf32: bool | None = None, benchmark: bool | None = None) -> Iterator[None]:
    """Set cuDNN's and matmul's TF32 flags and/or ``cudnn.benchmark`` within the block;
    the previous values come back afterwards, also on an exception."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark)
    try:
        if tf32 is not None:
            cudnn.allow_tf32 = tf32
            matmul.allow_tf32 = tf32
        if benchmark is not None:
            cudnn.benchmark = benchmark
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark = saved


def full_precision() -> AbstractContextManager[None]:
    """Within the block, convolutions and matrix products run in full fp32 (TF32 off)."""
    return _flags(tf32=False)


def search_precision(benchmark: bool = False) -> AbstractContextManager[None]:
    """Within the block, TF32 is allowed when :data:`SEARCH_TF32` (the search's backward
    passes), else full fp32; with ``benchmark``, ``cudnn.benchmark`` is on too (a
    backward through a model on fixed shapes only)."""
    return _flags(tf32=SEARCH_TF32, benchmark=True if benchmark else None)


def model_call() -> AbstractContextManager[None]:
    """Within the block, ``cudnn.benchmark`` is on: only for calls on fixed shapes."""
    return _flags(benchmark=True)


def bucket_size(n: int) -> int:
    """The batch size a batch of ``n`` view rows is padded to: the next power of two, so
    that a solver whose batch shrinks as images pass runs the model on at most
    ``log2(n) + 1`` shapes, each tuned once, at most twice the rows it needs."""
    if n < 1:
        raise ValueError(f"a batch needs at least one row, got {n}")
    return 1 << (n - 1).bit_length()
