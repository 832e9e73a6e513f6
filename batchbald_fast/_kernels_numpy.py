"""NumPy kernels: the reference backend, used when the extension is not built.

Every kernel here has a twin of the same name and signature in ``_kernels.pyx``.
"""

import numpy as np
import scipy.sparse

from . import _sizes, _threads

# P and P·log P for one tile must fit in this many bytes, whatever N, M and C.
WORKING_SET_BYTES = 64 * 2**20
# The sub-centres nearest_subgroups gathers at a time.
SUBGROUP_TILE_BYTES = WORKING_SET_BYTES // 4


def _tile_shape(M, C, tile_bytes):
    """Rows of the joint and candidates per tile so that the tile fits ``tile_bytes``."""
    bytes_per_entry = 2 * np.dtype(np.float64).itemsize  # P and P·log P
    rows = max(1, min(M, tile_bytes // (bytes_per_entry * C)))
    cols = max(1, tile_bytes // (bytes_per_entry * rows * C))
    return rows, cols


def scratch_bytes(M, K, C, n, itemsize, num_threads=None, tile_bytes=WORKING_SET_BYTES,
                  groups=1):
    """Bytes ``score_candidates`` (``score_candidates_grouped`` with ``groups`` groups)
    allocates to score n candidates against M rows: a tile of P and P·log P (and in
    float32 the float64 copy the weighted sum makes; grouped, the weighted copy), the
    tile's gathered probabilities (twice: gather, then transpose) and its sums (grouped:
    per group, and their transpose)."""
    rows, cols = _tile_shape(M, C, tile_bytes)
    width = min(cols, n)
    per_entry = 2 * itemsize + (8 if itemsize != 8 or groups > 1 else 0)
    return (rows * width * C * per_entry + width * C * (2 * K * itemsize + 16)
            + (16 * groups * width if groups > 1 else 0))


def score_candidates(joint_M_K, weights_M, probs_N_K_C, candidates, out,
                     num_threads=None, tile_bytes=WORKING_SET_BYTES):
    """Weighted joint entropy of the joint state with each candidate.

    ``out[i] = Σ_m weights_M[m] Σ_c −P log P`` with
    ``P[m, c] = Σ_k joint_M_K[m, k] · probs_N_K_C[candidates[i], k, c]``
    (the 1/K of the mixture is folded into ``joint_M_K`` by the caller).

    Parameters
    ----------
    joint_M_K : ndarray of shape (M, K), float64 (or float32), C-contiguous
    weights_M : ndarray of shape (M,), float64
    probs_N_K_C : ndarray of shape (N, K, C), same dtype as ``joint_M_K``, C-contiguous
        With float32 the product and the log run in float32, the sums in float64.
    candidates : ndarray of shape (n,), intp
    out : ndarray of shape (n,), float64
        Written in place.
    num_threads : int or None
        Most BLAS threads; None: as many as BLAS has now. Fewer when the call is small
        (``_threads.threads_for_work``).
    tile_bytes : int
        Working-set budget of one tile (P and P·log P).
    """
    M, K = joint_M_K.shape
    C = probs_N_K_C.shape[2]
    rows, cols = _tile_shape(M, C, tile_bytes)
    limit = _threads.blas_threads() if num_threads is None else num_threads
    # Threads a caller's product left spinning are most likely BLAS's own, which a BLAS
    # call takes at no cost: no need to leave their cores to them.
    threads = _threads.threads_for_work(_threads.score_work(len(candidates), M, K, C), limit)
    with _threads.blas_limit(threads):
        for start in range(0, len(candidates), cols):
            tile = candidates[start:start + cols]
            # K × (tile·C), so that one GEMM scores the whole tile.
            probs_K_TC = probs_N_K_C[tile].transpose(1, 0, 2).reshape(K, -1)
            acc_TC = np.zeros(probs_K_TC.shape[1])
            for m0 in range(0, M, rows):
                P = joint_M_K[m0:m0 + rows] @ probs_K_TC
                acc_TC -= weights_M[m0:m0 + rows] @ _xlogx(P)
            out[start:start + len(tile)] = acc_TC.reshape(len(tile), C).sum(axis=1)
    return out


def score_candidates_grouped(joint_M_K, weights_M, probs_N_K_C, candidates, out_n_G,
                             num_threads=None, tile_bytes=WORKING_SET_BYTES):
    """Weighted joint entropy of each candidate with each group of the joint's rows.

    ``out_n_G[i, g] = Σ_{m in group g} weights_M[m] Σ_c −P log P`` with
    ``P[m, c] = Σ_k joint_M_K[m, k] · probs_N_K_C[candidates[i], k, c]``, the M rows cut
    into G = ``out_n_G.shape[1]`` groups of S = M / G consecutive rows. ``score_candidates``
    is the sum over groups. EPIG's targets are the groups: S = C rows per target.

    Parameters
    ----------
    joint_M_K : ndarray of shape (M, K), float64 (or float32), C-contiguous
        M a multiple of G.
    weights_M : ndarray of shape (M,), float64
    probs_N_K_C : ndarray of shape (N, K, C), same dtype as ``joint_M_K``, C-contiguous
        With float32 the product and the log run in float32, the sums in float64.
    candidates : ndarray of shape (n,), intp
    out_n_G : ndarray of shape (n, G), float64
        Written in place.
    num_threads : int or None
        Most BLAS threads; None: as many as BLAS has now. Fewer when the call is small.
    tile_bytes : int
        Working-set budget of one tile (P and P·log P).

    Returns
    -------
    out_n_G : ndarray of shape (n, G)
    """
    M, K = joint_M_K.shape
    C = probs_N_K_C.shape[2]
    n, G = out_n_G.shape
    if G < 1 or M % G:
        raise ValueError("score_candidates_grouped: inconsistent shapes")
    if M == 0:
        out_n_G[:] = 0.0
        return out_n_G
    S = M // G
    rows, cols = _tile_shape(M, C, tile_bytes)
    rows = max(S, rows // max(S, 1) * S)  # whole groups per block
    limit = _threads.blas_threads() if num_threads is None else num_threads
    threads = _threads.threads_for_work(_threads.score_work(n, M, K, C), limit)
    with _threads.blas_limit(threads):
        for start in range(0, n, cols):
            tile = candidates[start:start + cols]
            probs_K_TC = probs_N_K_C[tile].transpose(1, 0, 2).reshape(K, -1)
            for m0 in range(0, M, rows):
                P = joint_M_K[m0:m0 + rows] @ probs_K_TC
                # float64 whatever P's dtype: the sums over configurations and classes.
                weighted = _xlogx(P) * weights_M[m0:m0 + rows, None]
                sums_g_T = weighted.reshape(len(P) // S, S, len(tile), C).sum(axis=(1, 3))
                np.negative(sums_g_T.T, out=out_n_G[start:start + len(tile),
                                                    m0 // S:m0 // S + len(sums_g_T)])
    return out_n_G


def entropy_rows(probs_R_C, out, num_threads=None, tile_bytes=WORKING_SET_BYTES):
    """``out[r] = Σ_c −p log p`` for each row of ``probs_R_C`` (0·log 0 = 0).

    Parameters
    ----------
    probs_R_C : ndarray of shape (R, C), float64
    out : ndarray of shape (R,), float64
        Written in place.
    num_threads : int or None
        Unused: NumPy's elementwise functions run on one thread.
    tile_bytes : int
        Working-set budget of one tile.
    """
    R, C = probs_R_C.shape
    rows = max(1, tile_bytes // (np.dtype(np.float64).itemsize * C))
    for r0 in range(0, R, rows):
        np.negative(_xlogx(probs_R_C[r0:r0 + rows]).sum(axis=1, dtype=np.float64),
                    out=out[r0:r0 + rows])
    return out


def _xlogx(x):
    """``x · log x`` elementwise in x's dtype, 0 at x = 0.

    Clamping at the smallest normal number before the log makes 0·log 0 exactly 0
    without touching any positive x.
    """
    xlogx = np.maximum(x, np.finfo(x.dtype).tiny)
    np.log(xlogx, out=xlogx)
    xlogx *= x
    return xlogx


def nearest_centres(joint_M_K, log_centre_K_G, out, num_threads=None):
    """Each row's best centre: the assignment step of grouping rows (``_coarse``).

    ``out[m] = argmax_g Σ_k joint_M_K[m, k] · log_centre_K_G[k, g]`` (the lowest g among
    equal sums).

    Parameters
    ----------
    joint_M_K : ndarray of shape (M, K), float64, C-contiguous
    log_centre_K_G : ndarray of shape (K, G), float64, C-contiguous
        The log centres, one per column.
    out : ndarray of shape (M,), intp
        Written in place.
    num_threads : int or None
        Unused: the products run on the BLAS threads the caller allows.

    Returns
    -------
    out : ndarray of shape (M,)
    """
    M, G = len(joint_M_K), log_centre_K_G.shape[1]
    rows = _sizes.chunk_rows(_sizes.COARSE_CHUNK_BYTES, _sizes.FLOAT * G)
    for m0 in range(0, M, rows):
        out[m0:m0 + rows] = (joint_M_K[m0:m0 + rows] @ log_centre_K_G).argmax(axis=1)
    return out


def nearest_subgroups(joint_M_K, parent_M, log_centre_P_K_W, out, num_threads=None):
    """Each row's best sub-centre of its group: the assignment step of splitting groups.

    ``out[m] = W·parent_M[m] + argmax_w Σ_k joint_M_K[m, k] · log_centre_P_K_W[parent_M[m],
    k, w]`` (the lowest w among equal sums).

    Parameters
    ----------
    joint_M_K : ndarray of shape (M, K), float64, C-contiguous
    parent_M : ndarray of shape (M,), intp
        Each row's group, in [0, P).
    log_centre_P_K_W : ndarray of shape (P, K, W), float64, C-contiguous
        The log sub-centres of every group, one per column (very negative for a sub-centre
        unused).
    out : ndarray of shape (M,), intp
        Written in place.
    num_threads : int or None
        Unused: the products are not BLAS calls.

    Returns
    -------
    out : ndarray of shape (M,)
    """
    M, K = joint_M_K.shape
    W = log_centre_P_K_W.shape[2]
    rows = max(1, SUBGROUP_TILE_BYTES // (W * K * np.dtype(np.float64).itemsize))
    for m0 in range(0, M, rows):
        parent_m = parent_M[m0:m0 + rows]
        totals_m_W = np.einsum("mk,mkw->mw", joint_M_K[m0:m0 + rows],
                               log_centre_P_K_W[parent_m])
        out[m0:m0 + rows] = W * parent_m + totals_m_W.argmax(axis=1)
    return out


def subgroup_seeds(parent_M, key_M, mass_M, num_groups, ways, out_slot_M, num_threads=None):
    """Each group's first sub-centres: its ``ways`` rows of largest key.

    ``out_slot_M[m] = ways·parent_M[m] + r`` for the row of rank r < ``ways`` among its
    group's rows ordered by ``key_M`` descending (ties: lowest m first) when
    ``mass_M[m] > 0``; -1 for every other row.

    Parameters
    ----------
    parent_M : ndarray of shape (M,), intp
        Each row's group, in [0, num_groups).
    key_M : ndarray of shape (M,), float64
    mass_M : ndarray of shape (M,), float64
    num_groups, ways : int
    out_slot_M : ndarray of shape (M,), intp
        Written in place.
    num_threads : int or None
        Unused.

    Returns
    -------
    out_slot_M : ndarray of shape (M,)
    """
    M = len(parent_M)
    # np.lexsort((-key_M, parent_M)), faster: by key, then stably by group (a radix sort
    # of 16-bit ints).
    by_key = np.argsort(-key_M, kind="stable")
    group_dtype = np.int16 if num_groups <= np.iinfo(np.int16).max else np.intp
    order = by_key[np.argsort(parent_M[by_key].astype(group_dtype), kind="stable")]
    rank = np.arange(M) - np.searchsorted(parent_M[order], parent_M[order])
    seed = (rank < ways) & (mass_M[order] > 0)
    out_slot_M[:] = -1
    out_slot_M[order[seed]] = ways * parent_M[order[seed]] + rank[seed]
    return out_slot_M


def draw_labels(probs_K_C, log_probs_C_K, member_M, u_M, labels_M, log_joint_M_K,
                num_threads=None):
    """A label for every draw from its member's row, and its log-probabilities added.

    ``labels_M[m]`` is the inverse CDF of ``probs_K_C[member_M[m]]`` at ``u_M[m]`` times the
    row's total (so that rows off 1 by rounding draw exactly their own distribution), never
    a class of zero probability; then ``log_joint_M_K[m] += log_probs_C_K[labels_M[m]]``.
    The cumulative sums run in the dtype of ``probs_K_C``.

    Parameters
    ----------
    probs_K_C : ndarray of shape (K, C), float64 or float32, C-contiguous
    log_probs_C_K : ndarray of shape (C, K), float64, C-contiguous
        ``log(probs_K_C).T`` (-inf at 0).
    member_M : ndarray of shape (M,), intp
        Each draw's member, in [0, K).
    u_M : ndarray of shape (M,), float64
        Uniform numbers in [0, 1), one per draw.
    labels_M : ndarray of shape (M,), intp (any stride)
        Written in place.
    log_joint_M_K : ndarray of shape (M, K), float64, C-contiguous
        Updated in place.
    num_threads : int or None
        Unused.

    Returns
    -------
    labels_M : ndarray of shape (M,)
    """
    C = probs_K_C.shape[1]
    cdf_M_C = np.cumsum(probs_K_C, axis=1)[member_M]
    below_M = (cdf_M_C <= (u_M * cdf_M_C[:, -1])[:, None]).sum(axis=1)
    last_nonzero_K = C - 1 - np.argmax(probs_K_C[:, ::-1] > 0, axis=1)
    np.minimum(below_M, last_nonzero_K[member_M], out=labels_M)
    log_joint_M_K += log_probs_C_K[labels_M]
    return labels_M


def unique_keys(keys_M, first_M, ids_M, counts_M, num_threads=None):
    """The distinct keys in ascending order: each one's first index and count, and each
    key's place among them (``np.unique`` with ``return_index``, ``return_inverse`` and
    ``return_counts``).

    Parameters
    ----------
    keys_M : ndarray of shape (M,), int64
    first_M : ndarray of shape (M,), intp
        ``first_M[:U]``: the first index of each distinct key, written in place.
    ids_M : ndarray of shape (M,), intp
        Each key's distinct key, in [0, U), written in place.
    counts_M : ndarray of shape (M,), intp
        ``counts_M[:U]``: how often each distinct key occurs, written in place.
    num_threads : int or None
        Unused.

    Returns
    -------
    U : int
        How many keys are distinct.
    """
    _, first_U, ids, counts_U = np.unique(keys_M, return_index=True, return_inverse=True,
                                          return_counts=True)
    U = len(first_U)
    first_M[:U], ids_M[:], counts_M[:U] = first_U, ids.reshape(-1), counts_U
    return U


def exp_rows(log_joint_M_K, rows_U, out_U_K, out_max_U, num_threads=None):
    """Rows of a log joint exponentiated below their largest entry: ``out_max_U[u] =
    max_k log_joint_M_K[rows_U[u], k]`` and ``out_U_K[u] = exp(log_joint_M_K[rows_U[u]] −
    out_max_U[u]) / K`` (merging draws: a draw's row scaled so that its largest entry is
    1/K).

    Parameters
    ----------
    log_joint_M_K : ndarray of shape (M, K), float64, C-contiguous
        No row all -inf.
    rows_U : ndarray of shape (U,), intp
    out_U_K : ndarray of shape (U, K), float64
        Written in place.
    out_max_U : ndarray of shape (U,), float64
        Written in place.
    num_threads : int or None
        Unused.

    Returns
    -------
    out_U_K : ndarray of shape (U, K)
    """
    K = log_joint_M_K.shape[1]
    np.take(log_joint_M_K, rows_U, axis=0, out=out_U_K)
    if len(rows_U) and K:
        out_max_U[:] = out_U_K.max(axis=1)
        out_U_K -= out_max_U[:, None]
        np.exp(out_U_K, out=out_U_K)
        out_U_K /= K
    return out_U_K


def gather_rows(probs_N_K_C, xs, out_n_K_C, num_threads=None):
    """Rows of a pool gathered in float64: ``out_n_K_C[i] = probs_N_K_C[xs[i]]``.

    Parameters
    ----------
    probs_N_K_C : ndarray of shape (N, K, C), float32 or float64, C-contiguous
    xs : ndarray of shape (n,), intp
        Indices in [0, N).
    out_n_K_C : ndarray of shape (n, K, C), float64
        Written in place.
    num_threads : int or None
        Unused (the compiled kernel is serial too).

    Returns
    -------
    out_n_K_C : ndarray
    """
    if len(xs) and (xs.min() < 0 or xs.max() >= len(probs_N_K_C)):
        bad = xs[(xs < 0) | (xs >= len(probs_N_K_C))][0]
        raise IndexError(f"candidate {bad} out of range for N={len(probs_N_K_C)}")
    out_n_K_C[...] = probs_N_K_C[xs]
    return out_n_K_C


def group_sums(joint_M_K, weights_M, group_M, out_G_K, num_threads=None):
    """Weighted rows summed by group: ``out_G_K[g] = Σ_{m: group_M[m] = g} weights_M[m] ·
    joint_M_K[m]``, in ascending m.

    Parameters
    ----------
    joint_M_K : ndarray of shape (M, K), float64
    weights_M : ndarray of shape (M,), float64
    group_M : ndarray of shape (M,), intp
        Each row's group, in [0, G).
    out_G_K : ndarray of shape (G, K), float64
        Written in place.
    num_threads : int or None
        Unused: one sparse product.

    Returns
    -------
    out_G_K : ndarray of shape (G, K)
    """
    G, M = len(out_G_K), len(group_M)
    summing_G_M = scipy.sparse.csr_matrix((weights_M, (group_M, np.arange(M))), shape=(G, M))
    out_G_K[:] = summing_G_M @ joint_M_K
    return out_G_K
