"""The numba kernels behind adamas.cpu_decode (imported on first use: numba compiles or loads them then).

Arrays arrive C-contiguous from cpu_decode: K, V and codes as row matrices [N, d] and [N, W] with a
table of each (batch, head)'s row of token 0, so one compiled version serves every cache layout.
Codes are read as little-endian words (dim j of a word at bits 2j, 2j + 1) widened to uint64.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

FAST = {"nsz", "arcp", "contract", "reassoc"}
"""Reassociation lets the dot products vectorize; NaN and inf keep their meaning (no nnan, ninf)."""
EVEN = np.uint64(0x5555555555555555)
"""The low bit of every 2-bit code in a word."""
ONE = np.uint64(1)
BLOCK = 4
"""Query heads scored in one pass over a KV head's codes (ranks4_)."""


@intrinsic
def popcount(typingctx, x):
    """The hardware population count of an unsigned integer."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return x(x), codegen


@intrinsic
def bf16_bits_to_float(typingctx, bits):
    """A bfloat16 given as its 16 bits (uint16), as the float32 with those top bits."""
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 16):
        return None

    def codegen(context, builder, signature, args):
        wide = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(wide, ir.FloatType())

    return types.float32(bits), codegen


def as_float(x):
    """An element of K or V as a float: floats as they are, bf16 bits (uint16) widened to float32."""
    return x


@overload(as_float)
def _as_float(x):
    if isinstance(x, types.Integer):
        return lambda x: bf16_bits_to_float(x)
    return lambda x: x


@njit(cache=True, nogil=True, fastmath=FAST)
def hadamard_(y):
    """The orthonormal Walsh–Hadamard transform of y [d] in place (d a power of two)."""
    d = y.shape[0]
    h = 1
    while h < d:
        for i in range(0, d, 2 * h):
            for j in range(i, i + h):
                a, b = y[j], y[j + h]
                y[j], y[j + h] = a + b, a - b
        h *= 2
    norm = 1.0 / np.sqrt(d)
    for j in range(d):
        y[j] *= norm


@njit(cache=True, nogil=True)
def pack_(y, edges, h, words, row):
    """Bucketize y [d] under edges[h] (the count of edges below each value) and pack into words[row]."""
    per_word = words.itemsize * 4  # dims per word: 2 bits each
    for i in range(words.shape[1]):
        w = np.uint64(0)
        for j in range(per_word):
            v = y[i * per_word + j]
            c = np.uint64((v > edges[h, 0]) + (v > edges[h, 1]) + (v > edges[h, 2]))
            w |= c << np.uint64(2 * j)
        words[row, i] = w


@njit(cache=True, nogil=True)
def encode_key_(keys, row, edges, h, words, code_row, y):
    """Hadamard-transform key row `row` into the scratch y, bucketize it, write its code at words[code_row]."""
    for j in range(y.shape[0]):
        y[j] = as_float(keys[row, j])
    hadamard_(y)
    pack_(y, edges, h, words, code_row)


@njit(cache=True, nogil=True)
def encode_rows(keys, words, edges, first, code_first, at, y):
    """Write the codes of the keys at positions `at` of every (batch, KV head) (see adamas.cpu_decode.encode_rows),
    transforming each in the scratch y [d] of the compute dtype."""
    for b in range(first.shape[0]):
        for h in range(first.shape[1]):
            for t in at:
                encode_key_(keys, first[b, h] + t, edges, h, words, code_first[b, h] + t, y)


@njit(cache=True, nogil=True)
def thermometer_(word):
    """A packed word's thermometer bits: (t1 | t3 << 1, t2), each dim's bits at its even bit and the one above."""
    w = np.uint64(word)
    lo, hi = w & EVEN, (w >> ONE) & EVEN
    return lo | hi | ((lo & hi) << ONE), hi


@njit(cache=True, nogil=True)
def valid_run(valid, b, length):
    """(first valid token, one past the last, valid count) of batch row b; (0, length, length) without a mask."""
    if valid.shape[1] == 0:
        return 0, length, length
    lo, hi, count = length, 0, 0
    for t in range(length):
        if valid[b, t]:
            count += 1
            lo = min(lo, t)
            hi = t + 1
    return lo, max(hi, lo), count


@njit(cache=True, nogil=True, fastmath=FAST)
def ranks_(words, q_words, rank):
    """rank[t] = 1 + the L1 distance of code words[t] to the query's (words and rank: the tokens to score).

    Word by word, each a pass over the tokens that vectorizes; the t2 bits (even bits only) of two
    words share one popcount, the second shifted onto the odd bits. Loops run from 0 over slices, so
    that no index needs a wraparound check.
    """
    width = q_words.shape[0]
    rank[:] = 1
    for i in range(0, width - 1, 2):
        q_both0, q_t20 = thermometer_(q_words[i])
        q_both1, q_t21 = thermometer_(q_words[i + 1])
        q_t2 = q_t20 | (q_t21 << ONE)
        for t in range(rank.shape[0]):
            both0, t20 = thermometer_(words[t, i])
            both1, t21 = thermometer_(words[t, i + 1])
            dist = popcount(both0 ^ q_both0) + popcount(both1 ^ q_both1) + popcount((t20 | (t21 << ONE)) ^ q_t2)
            rank[t] += np.uint16(dist)
    if width % 2:
        q_both, q_t2 = thermometer_(q_words[width - 1])
        for t in range(rank.shape[0]):
            both, t2 = thermometer_(words[t, width - 1])
            rank[t] += np.uint16(popcount(both ^ q_both) + popcount(t2 ^ q_t2))


@njit(cache=True, nogil=True)
def pair_(q_words, g, i):
    """Query g's thermometer words for the word pair i, i + 1: (both of i, both of i + 1, the pair's t2 bits)."""
    both0, t20 = thermometer_(q_words[g, i])
    both1, t21 = thermometer_(q_words[g, i + 1])
    return both0, both1, t20 | (t21 << ONE)


@njit(cache=True, nogil=True, fastmath=FAST)
def ranks4_(words, q_words, rank):
    """ranks_ for four query heads at once (rows of q_words [4, W], of rank [4, n]), in one pass over the tokens per
    pair of words: each key word's thermometer bits are made once for the four (a GQA group's heads share the keys)."""
    width = q_words.shape[1]
    rank[:] = 1
    for i in range(0, width - 1, 2):
        a0, c0, p0 = pair_(q_words, 0, i)
        a1, c1, p1 = pair_(q_words, 1, i)
        a2, c2, p2 = pair_(q_words, 2, i)
        a3, c3, p3 = pair_(q_words, 3, i)
        for t in range(rank.shape[1]):
            both0, t20 = thermometer_(words[t, i])
            both1, t21 = thermometer_(words[t, i + 1])
            t2 = t20 | (t21 << ONE)
            rank[0, t] += np.uint16(popcount(both0 ^ a0) + popcount(both1 ^ c0) + popcount(t2 ^ p0))
            rank[1, t] += np.uint16(popcount(both0 ^ a1) + popcount(both1 ^ c1) + popcount(t2 ^ p1))
            rank[2, t] += np.uint16(popcount(both0 ^ a2) + popcount(both1 ^ c2) + popcount(t2 ^ p2))
            rank[3, t] += np.uint16(popcount(both0 ^ a3) + popcount(both1 ^ c3) + popcount(t2 ^ p3))
    if width % 2:
        last = width - 1
        a0, p0 = thermometer_(q_words[0, last])
        a1, p1 = thermometer_(q_words[1, last])
        a2, p2 = thermometer_(q_words[2, last])
        a3, p3 = thermometer_(q_words[3, last])
        for t in range(rank.shape[1]):
            both, t2 = thermometer_(words[t, last])
            rank[0, t] += np.uint16(popcount(both ^ a0) + popcount(t2 ^ p0))
            rank[1, t] += np.uint16(popcount(both ^ a1) + popcount(t2 ^ p1))
            rank[2, t] += np.uint16(popcount(both ^ a2) + popcount(t2 ^ p2))
            rank[3, t] += np.uint16(popcount(both ^ a3) + popcount(t2 ^ p3))


@njit(cache=True, nogil=True)
def force_(rank, valid, lo, count, sink, recent, skip):
    """Rank 0 for the forced tokens (the first `sink` and last `recent` valid ones), `skip` for invalid ones.

    rank covers tokens lo..hi-1, valid (a batch row's mask, or empty) all tokens.
    """
    n = rank.shape[0]
    if count == n:  # one run of valid tokens (no mask, a fixed cache's prefix, left padding)
        rank[: min(sink, n)] = 0
        rank[max(n - recent, 0) :] = 0
        return
    upto = 0
    for t in range(n):
        if not valid[lo + t]:
            rank[t] = skip
            continue
        upto += 1
        if upto <= sink or count - upto < recent:
            rank[t] = 0


@njit(cache=True, nogil=True)
def select_(rank, lo, take, slots, hist, out):
    """The `take` lowest ranks of rank (tokens lo, lo + 1, ...) by counting, ties to the earliest token, into out;
    out[take:slots] = -1."""
    hist[:] = 0
    for t in range(rank.shape[0]):
        hist[rank[t]] += 1
    below, threshold = 0, 0
    while below + hist[threshold] < take:
        below += hist[threshold]
        threshold += 1
    ties, n, bound = take - below, 0, np.uint16(threshold)
    for t in range(rank.shape[0]):
        if n == take:
            break
        r = rank[t]
        if r <= bound:  # rare: the scan's common case is one compare
            if r < bound:
                out[n] = lo + t
                n += 1
            elif ties > 0:
                ties -= 1
                out[n] = lo + t
                n += 1
    out[take:slots] = -1


@njit(cache=True, nogil=True, fastmath=FAST)
def attend_(q, keys, values, k_first, v_first, chosen, take, scale, scores, out):
    """Exact softmax attention of q [d] over rows `chosen[:take]` of K and V (from k_first / v_first), into out [d].

    Accumulates in q's dtype (fp32, or fp64 for fp64 inputs), as the reference computes.
    """
    d = q.shape[0]
    zero = q[0] - q[0]
    best = zero - np.inf
    for i in range(take):
        row = keys[k_first + chosen[i]]
        s = zero
        for j in range(d):
            s += q[j] * as_float(row[j])
        scores[i] = s * scale
        best = max(best, scores[i])
    total = zero
    for i in range(take):
        scores[i] = np.exp(scores[i] - best)
        total += scores[i]
    out[:] = 0
    for i in range(take):
        row = values[v_first + chosen[i]]
        p = scores[i]
        for j in range(d):
            out[j] += p * as_float(row[j])
    inverse = 1 / total
    for j in range(d):
        out[j] *= inverse


@njit(cache=True, nogil=True)
def decode_step(
    queries, keys, values, words, edges, k_first, v_first, code_first, length, valid, budget, sink, recent, scale,
    at, out, idx,
):  # fmt: skip
    """The whole step of adamas.cpu_decode.decode_step for every batch row and head, writing out and idx.

    A KV head's query heads are scored in blocks of four (ranks4_, the last block padded with copies
    of its last head), a block of one alone (ranks_); then each head is selected and attended.
    """
    b_size, hq, d = queries.shape
    hkv = k_first.shape[1]
    group = hq // hkv
    slots = idx.shape[2]
    skip = 3 * d + 2  # past every rank: 0 forced, 1 + distance (0 .. 3d)
    rank = np.empty((BLOCK, length), dtype=np.uint16)
    hist = np.empty(skip + 1, dtype=np.int64)
    y = np.empty(d, dtype=queries.dtype)
    q_words = np.empty((BLOCK, words.shape[1]), dtype=words.dtype)
    scores = np.empty(max(slots, 1), dtype=queries.dtype)
    for b in range(b_size):
        lo, hi, count = valid_run(valid, b, length)
        take = min(slots, count)
        mask = valid[b] if valid.shape[1] else valid[0]
        for h in range(hkv):
            for t in at:
                encode_key_(keys, k_first[b, h] + t, edges, h, words, code_first[b, h] + t, y)
            tokens = words[code_first[b, h] + lo : code_first[b, h] + hi]
            for start in range(h * group, (h + 1) * group, BLOCK):
                heads = min(BLOCK, (h + 1) * group - start)
                for g in range(BLOCK):
                    y[:] = queries[b, start + min(g, heads - 1)]
                    hadamard_(y)
                    pack_(y, edges, h, q_words, g)
                scored = rank[:, : hi - lo]
                if heads == 1:
                    ranks_(tokens, q_words[0], scored[0])
                else:
                    ranks4_(tokens, q_words, scored)
                for g in range(heads):
                    head = start + g
                    force_(scored[g], mask, lo, count, sink, recent, skip)
                    select_(scored[g], lo, take, slots, hist, idx[b, head])
                    attend_(queries[b, head], keys, values, k_first[b, h], v_first[b, h], idx[b, head], take, scale,
                            scores, out[b, head])  # fmt: skip
