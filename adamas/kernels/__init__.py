"""Triton kernels of the GPU decode path, one op a file; each mirrors its twin in adamas.reference.

`nearest` is the decode step's selection: manhattan, mark_forced, select and drop_excluded in one op.
"""

from adamas.kernels.dense_attention import dense_attention
from adamas.kernels.encode import encode, hadamard
from adamas.kernels.manhattan import manhattan
from adamas.kernels.nearest import nearest
from adamas.kernels.select import select
from adamas.kernels.sparse_attention import sparse_attention

__all__ = ["dense_attention", "encode", "hadamard", "manhattan", "nearest", "select", "sparse_attention"]
