"""Brute-force BatchBALD: enumerate every label configuration, take the mixture's entropy.

Independent of the package: no GEMM, no joint state, no chunking — just the definitions.
"""

import itertools
import math


def _xlogx(p):
    return p * math.log(p) if p > 0 else 0.0


def joint_entropy(probs_N_K_C, batch):
    """H(y_A) for the points ``batch``, summing over all C^|A| configurations."""
    _, K, C = probs_N_K_C.shape
    total = 0.0
    for labels in itertools.product(range(C), repeat=len(batch)):
        q = 0.0
        for k in range(K):
            prod = 1.0
            for a, c in zip(batch, labels):
                prod *= probs_N_K_C[a, k, c]
            q += prod
        total -= _xlogx(q / K)
    return total


def conditional_entropy(probs_N_K_C, n):
    _, K, C = probs_N_K_C.shape
    return -sum(_xlogx(probs_N_K_C[n, k, c]) for k in range(K) for c in range(C)) / K


def mutual_information(probs_N_K_C, batch):
    """a(A) = H(y_A) − Σ_{a∈A} E_a."""
    return joint_entropy(probs_N_K_C, batch) - sum(
        conditional_entropy(probs_N_K_C, a) for a in batch)


def greedy(probs_N_K_C, batch_size, candidates=None, objective=None):
    """Greedy picks, batch scores and utilities (nan-free dicts), lowest index on ties.

    ``objective(batch)`` is the batch's score; None: BatchBALD's ``mutual_information``.
    """
    if objective is None:
        def objective(batch):
            return mutual_information(probs_N_K_C, batch)
    N = probs_N_K_C.shape[0]
    pool = sorted(range(N) if candidates is None else candidates)
    batch, scores, utilities = [], [], []
    for _ in range(min(batch_size, len(pool))):
        util = {x: objective(batch + [x]) for x in pool}
        best = max(pool, key=lambda x: (util[x], -x))
        batch.append(best)
        scores.append(util[best])
        utilities.append(util)
        pool.remove(best)
    return batch, scores, utilities


def tie_rule_order(scores, tie_tolerance):
    """Indices by the documented rule, one pick at a time: the lowest index among the
    remaining scores within ``tie_tolerance`` of the best remaining one."""
    remaining = list(range(len(scores)))
    order = []
    while remaining:
        best = max(scores[i] for i in remaining)
        pick = min(i for i in remaining if scores[i] >= best - tie_tolerance)
        order.append(pick)
        remaining.remove(pick)
    return order


def _joint_distribution(probs_N_K_C, points, K):
    """Every configuration of the points' labels and its probability under each member."""
    C = probs_N_K_C.shape[2]
    for labels in itertools.product(range(C), repeat=len(points)):
        yield [math.prod(probs_N_K_C[a, k, c] for a, c in zip(points, labels))
               for k in range(K)]


def joint_epig(probs_N_K_C, target_probs_T_K_C, batch):
    """Mean over targets of I(y_A; y*_t) = H(y_A) + H(y*_t) − H(y_A, y*_t), by enumeration."""
    K = probs_N_K_C.shape[1]
    T, _, C = target_probs_T_K_C.shape
    h_batch = -sum(_xlogx(sum(q) / K) for q in _joint_distribution(probs_N_K_C, batch, K))
    total = 0.0
    for t in range(T):
        h_target = -sum(_xlogx(sum(target_probs_T_K_C[t, k, c] for k in range(K)) / K)
                        for c in range(C))
        h_both = -sum(_xlogx(sum(q[k] * target_probs_T_K_C[t, k, c] for k in range(K)) / K)
                      for q in _joint_distribution(probs_N_K_C, batch, K) for c in range(C))
        total += h_batch + h_target - h_both
    return total / T


def greedy_joint_epig(probs_N_K_C, target_probs_T_K_C, batch_size, candidates=None):
    """Greedy joint-EPIG picks, batch scores and utilities, lowest index on ties."""
    return greedy(probs_N_K_C, batch_size, candidates,
                  lambda batch: joint_epig(probs_N_K_C, target_probs_T_K_C, batch))


def epig_terms(probs_N_K_C, target_probs_T_K_C, n):
    """EPIG_t(x_n) = I(y; y*_t) for every target, from the definition: the KL divergence
    of the joint predictive of (y, y*_t) from the product of its marginals."""
    _, K, C = probs_N_K_C.shape
    terms = []
    for t in range(len(target_probs_T_K_C)):
        p = [sum(probs_N_K_C[n, k, c] for k in range(K)) / K for c in range(C)]
        q = [sum(target_probs_T_K_C[t, k, c] for k in range(K)) / K for c in range(C)]
        total = 0.0
        for c in range(C):
            for d in range(C):
                joint = sum(probs_N_K_C[n, k, c] * target_probs_T_K_C[t, k, d]
                            for k in range(K)) / K
                if joint > 0:
                    total += joint * math.log(joint / (p[c] * q[d]))
        terms.append(total)
    return terms


def epig(probs_N_K_C, target_probs_T_K_C):
    """Per-point EPIG (mean over targets) and its standard error over targets."""
    scores, errors = [], []
    for n in range(len(probs_N_K_C)):
        terms = epig_terms(probs_N_K_C, target_probs_T_K_C, n)
        T = len(terms)
        mean = sum(terms) / T
        scores.append(mean)
        if T > 1:
            errors.append(math.sqrt(sum((v - mean) ** 2 for v in terms) / (T - 1) / T))
    return scores, errors
