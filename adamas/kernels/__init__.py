"""Triton kernels of the GPU decode path, one op a file; each mirrors its twin in adamas.reference.

Modules are named for how they work, the functions they export for what they compute (the
names adamas.reference and adamas.cpu share): hadamard_encode (encode, hadamard),
code_distance (manhattan), histogram_select (select), scan_select (nearest: the decode
step's selection, manhattan + mark_forced + select + drop_excluded in one op), sparse_decode
(sparse_attention) and dense_decode (dense_attention); append writes a fixed cache's new K, V and codes
in one kernel, and scan_select's nearest_query encodes the query inside its scan (the decode step's
selection in two kernels). The pieces several share have modules
of their own: bits (popcounts, thermometer planes, Sylvester signs), histogram (distance bins and
the threshold pass of both selections), split_k (online softmax and the merge of splits), forced (the
sink and recent tokens) and runtime (interpreter check, programmatic dependent launch, persistent counters).
"""

from adamas.kernels.append import append
from adamas.kernels.code_distance import manhattan
from adamas.kernels.dense_decode import dense_attention
from adamas.kernels.hadamard_encode import encode, hadamard
from adamas.kernels.histogram_select import select
from adamas.kernels.scan_select import nearest, nearest_attention, nearest_query
from adamas.kernels.sparse_decode import sparse_attention

__all__ = [
    "append",
    "dense_attention",
    "encode",
    "hadamard",
    "manhattan",
    "nearest",
    "nearest_attention",
    "nearest_query",
    "select",
    "sparse_attention",
]
