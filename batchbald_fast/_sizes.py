"""How large a run's arrays are: one definition of each size, read by the code that
allocates the arrays and by the memory planner (``_memory``) that adds them up.

Counts (rows, draws, chunks) are what the engine allocates by; bytes are what those
allocations take. Nothing here runs the algorithm: it imports nothing of the engine.
"""

import math

FLOAT = 8  # bytes of a float64 or an intp

# Memory the unmerged draws of a sampled joint may take (they are ~M·(K + A) numbers).
MAX_DRAW_BYTES = 256 * 2**20
# Draws per member may grow to this many times the budget's share while they merge into
# fewer distinct rows than the budget; beyond that the counts barely sharpen the estimate.
MAX_GROWTH = 16
# The rows × groups products of the coarse grouping run in chunks of at most this many
# bytes: in cache, and reused by the allocator (a whole product is a fresh mapping each
# time, whose page faults cost more than the product).
COARSE_CHUNK_BYTES = 2 * 2**20
# Per-row terms of sampled estimates are computed from P in chunks of rows of this size.
TERMS_CHUNK_BYTES = 2 * 2**20
# Candidate × configuration rows a step must score in full before a coarse joint pays for
# grouping its rows (~1 ms of kernel work).
COARSE_MIN_WORK = 2**22
# The contender rounds (and the candidates scored for them) score at most this fraction of
# the rows the step scored, and at most EXTRA_ROWS_MAX rows: a fresh round costs more per
# row than the kernel (drawing and merging its draws, the per-row terms).
EXTRA_WORK = 0.25
EXTRA_ROWS_MAX = 2**21

# Bytes per draw of np.unique's sort of one int64 key per draw (the key, argsort, sorted
# copy, mask, inverse, first indices, counts).
UNIQUE_BYTES_PER_DRAW = 8 * FLOAT
# Bytes per row of the coarse grouping beside its chunked products: the group ids and
# sums, the draw of first centres, each level's group ids, per-row sums, and a split's
# sort keys and ranks; of which kept while the step scores: sums, masses and a group id
# per level.
COARSE_BYTES_PER_ROW = 14 * FLOAT
COARSE_KEPT_BYTES_PER_ROW = 5 * FLOAT


def last_exact_step(C, num_samples, steps):
    """The last step (of ``steps``) whose joint enumerates all ``C ** t`` configurations."""
    t = 0
    while t + 1 < steps and C ** (t + 1) <= num_samples:
        t += 1
    return t


def draws_per_member(num_samples, K):
    """Draws of each posterior sample in a sampled joint of budget ``num_samples``."""
    return max(1, num_samples // K)


def draw_bytes(D, A, K):
    """D draws of A labels: labels, log joint (K), member and rank."""
    return D * FLOAT * (A + K + 2)


def max_draws_per_member(num_samples, K, A, max_draw_bytes):
    """Most draws per member that fitting a sampled joint of A labels may grow to: up to
    ``MAX_GROWTH`` times the budget's share, within ``max_draw_bytes``."""
    return min(MAX_GROWTH * draws_per_member(num_samples, K),
               max_draw_bytes // draw_bytes(K, A, K))


def extend_bytes(D, K, C):
    """Drawing one more label for D draws: cdf, uniforms, comparison, labels, log-probs."""
    return D * (FLOAT * (C + K + 5) + C)


def unique_bytes(D, A, C):
    """Merging D draws of A labels: int64 keys, or the rows themselves past 63 bits."""
    return D * UNIQUE_BYTES_PER_DRAW + (D * A * FLOAT if A * math.log2(C) >= 63 else 0)


def exact_bytes(M, K):
    """An exact or pruned joint of M rows: the joint and its weights."""
    return M * (K + 1) * FLOAT


def merged_bytes(U, K):
    """A sampled joint of U merged rows: the joint, its scales, weights and counts, and
    their temporaries."""
    return U * FLOAT * (3 * K + 4)


def chunk_rows(chunk_bytes, row_bytes):
    """Rows of ``row_bytes`` each in a chunk of at most ``chunk_bytes`` (at least one)."""
    return max(1, chunk_bytes // row_bytes)


def rounds_rows(rows_scored):
    """Candidate × configuration rows the contender rounds of a step may score."""
    return min(EXTRA_WORK * rows_scored, EXTRA_ROWS_MAX)
