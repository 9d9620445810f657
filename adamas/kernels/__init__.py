"""Triton kernels of the GPU decode path, one op a file; each mirrors its twin in adamas.reference."""

from adamas.kernels.encode import encode, hadamard
from adamas.kernels.manhattan import manhattan
from adamas.kernels.select import select
from adamas.kernels.sparse_attention import sparse_attention

__all__ = ["encode", "hadamard", "manhattan", "select", "sparse_attention"]
