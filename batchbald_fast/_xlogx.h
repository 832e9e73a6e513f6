/* Vectorised x·log x reductions for batchbald_fast._kernels.
 *
 * libm's log() is a scalar call that gcc vectorises only with -ffast-math and glibc's
 * libmvec, and -ffast-math on gcc < 13 links crtfastmath.o into the extension, which
 * turns on flush-to-zero for the whole Python process. So the log here is fdlibm's
 * algorithm written branch-free (bit operations and a polynomial), which any C compiler
 * vectorises at -O2/-O3 given -fno-trapping-math; it agrees with libm to ~1 ulp.
 *
 * Inputs are clamped at the smallest normal number before the log, so 0·log 0 is
 * exactly 0 and subnormals never reach the bit tricks.
 *
 * The default build stays portable (no -march=native): on x86-64 the hot loops are
 * compiled for x86-64-v4 (AVX-512), v3 (AVX2+FMA) and the SSE2 baseline, and the CPU picks
 * one at run time: the simple loops by gcc's target_clones (ifunc, Linux/glibc), the
 * fused tiles and bbf_xlogx_d by __builtin_cpu_supports (the tiles' register blocking
 * differs per set; the float64 v4 code uses bbf_log_v4, a faster log that needs AVX-512,
 * and the float32 v3 and v4 tiles bbf_logf_v3 / _v4, a division-free, table-free logf).
 * Measured on Zen 5, W2 step, one thread: v4 0.72 s (0.85 with fdlibm's log), v3 1.8 s,
 * baseline 4.8 s.
 */
#ifndef BATCHBALD_FAST_XLOGX_H
#define BATCHBALD_FAST_XLOGX_H

#include <float.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(_MSC_VER) && !defined(restrict)
#define restrict __restrict
#endif

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) \
    && defined(__linux__) && defined(__GLIBC__) && !defined(BBF_NO_DISPATCH)
#define BBF_DISPATCH __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define BBF_DISPATCH_NAME "x86-64-v4/v3/baseline (ifunc)"
#else
#define BBF_DISPATCH
#define BBF_DISPATCH_NAME "none"
#endif

/* log(x) for normal, positive, finite x, as NAME taking and returning T: fdlibm's e_log.c
 * (E = d; T double or a GCC vector of doubles) or e_logf.c (E = f, floats), without
 * branches; U is the unsigned integer (vector) of T's size. One body for scalars and
 * vectors, so the fused tile's registers run the same operations as the scalar loops.
 * The constants, by E: */
#define BBF_LOG_OFF_d 0x3fe6a09e667f3bcdULL /* the bits of sqrt(2)/2 */
#define BBF_LOG_OFF_f 0x3f3504f3U
#define BBF_LOG_EXP_d 0xfff0000000000000ULL /* sign and exponent */
#define BBF_LOG_EXP_f 0xff800000U
#define BBF_LOG_MANT_d 52
#define BBF_LOG_MANT_f 23
#define BBF_LOG_SIGN_d 0x800 /* the sign bit of k, at the bottom */
#define BBF_LOG_SIGN_f 0x100
#define BBF_LOG_TWO_d 0x4330000000000000ULL /* 2^52, 2^23 */
#define BBF_LOG_TWO_f 0x4b000000U
#define BBF_LOG_BIAS_d 4503599627372544.0 /* 2^52 + 2^11 */
#define BBF_LOG_BIAS_f 8388864.0f         /* 2^23 + 2^8 */
#define BBF_LOG_T1_d(w) (w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01   \
                         + w * 1.531383769920937332e-01)))
#define BBF_LOG_T1_f(w) (w * (0.40000972152f + w * 0.24279078841f))
#define BBF_LOG_T2_d(s2, w) (s2 * (6.666666666666735130e-01 + w * (2.857142874366239149e-01 \
                             + w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01))))
#define BBF_LOG_T2_f(s2, w) (s2 * (0.66666662693f + w * 0.28498786688f))
#define BBF_LOG_LN2HI_d 6.93147180369123816490e-01
#define BBF_LOG_LN2HI_f 6.9313812256e-01f
#define BBF_LOG_LN2LO_d 1.90821492927058770002e-10
#define BBF_LOG_LN2LO_f 9.0580006145e-06f

#define BBF_DEFINE_LOG(NAME, ATTR, E, T, U)                                               \
ATTR static inline T NAME(T x)                                                            \
{                                                                                         \
    typedef __typeof__(BBF_LOG_BIAS_##E) S; /* the scalar type */                         \
    U ix, iz, kb, tmp;                                                                    \
    T z, dk;                                                                              \
    memcpy(&ix, &x, sizeof(ix));                                                          \
    /* Reduce x = 2^k · z with z in [sqrt(2)/2, sqrt(2)). */                              \
    tmp = ix - BBF_LOG_OFF_##E;                                                           \
    iz = ix - (tmp & BBF_LOG_EXP_##E);                                                    \
    memcpy(&z, &iz, sizeof(z));                                                           \
    /* k to floating point without an arithmetic shift or int64->double conversion,       \
     * which AVX2 lacks for 64 bits: flip k's sign bit to bias it, as the low bits of     \
     * 2^MANT, and subtract. */                                                           \
    kb = ((tmp >> BBF_LOG_MANT_##E) ^ BBF_LOG_SIGN_##E) | BBF_LOG_TWO_##E;                \
    memcpy(&dk, &kb, sizeof(dk));                                                         \
    dk -= BBF_LOG_BIAS_##E;                                                               \
    T f = z - (S)1.0;                                                                     \
    T s = f / ((S)2.0 + f);                                                               \
    T hfsq = (S)0.5 * f * f;                                                              \
    T s2 = s * s, w = s2 * s2;                                                            \
    T t1 = BBF_LOG_T1_##E(w), t2 = BBF_LOG_T2_##E(s2, w);                                 \
    T R = t2 + t1;                                                                        \
    return dk * BBF_LOG_LN2HI_##E                                                         \
           - ((hfsq - (s * (hfsq + R) + dk * BBF_LOG_LN2LO_##E)) - f);                    \
}

BBF_DEFINE_LOG(bbf_log, , d, double, uint64_t)
BBF_DEFINE_LOG(bbf_logf, , f, float, uint32_t)

/* acc_GJ[(m0 + m) / S · J + j] += w_M[m] · P[m, j] · log P[m, j] (m ascending), for float32
 * P: x·log x in float32, the weighted sum in float64; rows m0, m0 + 1, ... of the joint,
 * summed in groups of S rows (S ≥ m0 + M: one group). P_M_J is row-major with leading
 * dimension J. The order over m is fixed so that a candidate's sum does not depend on
 * how M is tiled. */
BBF_DISPATCH static void bbf_xlogx_accumulate_f(const float *P_M_J, const double *w_M,
                                                ptrdiff_t m0, ptrdiff_t M, ptrdiff_t J,
                                                ptrdiff_t S, double *acc_GJ)
{
    for (ptrdiff_t m = 0; m < M; m++) {
        const float *restrict p = P_M_J + m * J;
        double *restrict acc = acc_GJ + (m0 + m) / S * J;
        const double w = w_M[m];
        for (ptrdiff_t j = 0; j < J; j++) {
            float x = p[j] > FLT_MIN ? p[j] : FLT_MIN;
            acc[j] += w * (double)(p[j] * bbf_logf(x));
        }
    }
}

/* Fused tile: acc_J[((r0 + r) / G) · J + j] += w_R[r] · P log P (r ascending) with
 * P = B_R_K @ A_K_J (row-major, A's leading dimension J, J a multiple of
 * BBF_PAD_BYTES / sizeof(element)): the rows summed in groups of G, each group's sums in
 * its own row of acc (G ≥ r0 + R: one row, the joint entropy; G = C: one row per EPIG
 * target). B_R_K and w_R start at the joint's row r0: a joint scored in blocks of rows
 * calls it once per block, and a multiple of MR as r0 leaves every sum as one call's.
 * An MR × NB block of P is accumulated in registers and reduced there, so P
 * never travels through memory as it does with a BLAS call per tile; with K this small
 * (a short, wide product) that beats OpenBLAS plus a separate pass.
 *
 * E is the element type of A, B and P: d (float64) or f (float32: the product and
 * x·log x in float32, the weighted x·log x of a register block's rows (at most MR, one
 * group) summed in float32 and widened to float64 for the sums over blocks). acc_J and
 * w_R are float64 either way.
 *
 * gcc does not auto-vectorise this loop nest, so it is written with GCC vector
 * extensions, once per instruction set with that set's register width and count (a
 * 64-byte vector type compiled for AVX2 spills and runs ~30x slower), and picked at
 * run time from the CPU's features. */
#define BBF_PAD_BYTES 128 /* J · sizeof(element) is padded to a multiple: every NB divides it */

#define BBF_T_d double
#define BBF_T_f float
#define BBF_U_d uint64_t
#define BBF_U_f uint32_t
#define BBF_MIN_d DBL_MIN
#define BBF_MIN_f FLT_MIN

#if defined(__GNUC__)
/* P[rr][·] = Σ_k B[(r + rr) · K + k] · A[k · lda + ·] for the MR rows from r (k ascending,
 * one multiply-add each): the register block of BBF_FUSED_TILE and BBF_NEAREST, NV vectors
 * of NAME##_vec a row. Rows past the mr valid ones reuse row r: valid memory, never
 * stored. */
#define BBF_BLOCK_PRODUCT(NAME, MR, NV, A, lda, B, r, mr, K, P)                           \
    for (int rr = 0; rr < MR; rr++)                                                       \
        for (int v = 0; v < NV; v++)                                                      \
            P[rr][v] = (NAME##_vec){0};                                                   \
    for (ptrdiff_t k = 0; k < K; k++) {                                                   \
        /* direct unaligned loads: a memcpy here went through the stack */                \
        const NAME##_uvec *a = (const NAME##_uvec *)((A) + k * (lda));                    \
        for (int rr = 0; rr < MR; rr++) {                                                 \
            const __typeof__(*(B)) bk = (B)[((r) + (rr < (mr) ? rr : 0)) * (K) + k];     \
            for (int v = 0; v < NV; v++)                                                  \
                P[rr][v] += bk * a[v];                                                    \
        }                                                                                 \
    }

/* The fused tile NAME for element type E on VBYTES-byte vectors, with LOG the log of one
 * vector of normal positive x: NAME##_log (fdlibm's, defined here) or a faster one.
 * The reduction runs on the block's registers, rows ascending, a group's acc held in
 * registers across its rows. HALF(y, h) is the h-th of the W vectors of doubles that
 * hold vector y: y itself in float64 (BBF_SAME), its h-th half widened in float32
 * (gcc 12 widens with __builtin_convertvector through the stack). */
#define BBF_SAME(y, h) (y)
#define BBF_ACC(NAME, NV, W, STMT)                                                        \
    for (int v = 0; v < NV; v++)                                                          \
        for (int h = 0; h < W; h++)                                                       \
            STMT;
/* float32 (W > 1): the partial sums s added to the float64 sums a, then cleared. */
#define BBF_WIDEN(NAME, NV, W, HALF, s, a)                                                \
    if (W > 1) {                                                                          \
        BBF_ACC(NAME, NV, W, a[v][h] += (NAME##_dvec)HALF(s[v], h))                       \
        for (int v = 0; v < NV; v++)                                                      \
            s[v] = (NAME##_vec){0};                                                       \
    }
#define BBF_FUSED_TILE(NAME, TARGET, E, VBYTES, MR, NB, LOG, HALF)                        \
typedef BBF_T_##E NAME##_vec __attribute__((vector_size(VBYTES)));                        \
typedef BBF_T_##E NAME##_uvec __attribute__((vector_size(VBYTES), aligned(8), may_alias));\
typedef BBF_U_##E NAME##_ivec __attribute__((vector_size(VBYTES)));                       \
typedef double NAME##_dvec __attribute__((vector_size(VBYTES)));                          \
typedef double NAME##_udvec __attribute__((vector_size(VBYTES), aligned(8), may_alias));  \
BBF_DEFINE_LOG(NAME##_log, TARGET, E, NAME##_vec, NAME##_ivec)                           \
TARGET static void NAME(const BBF_T_##E *A_K_J, const BBF_T_##E *B_R_K,                  \
                        const double *w_R, ptrdiff_t R, ptrdiff_t K, ptrdiff_t J,        \
                        ptrdiff_t G, double *acc_J, ptrdiff_t r0)                         \
{                                                                                         \
    enum { L = VBYTES / sizeof(BBF_T_##E), DL = VBYTES / 8, W = L / DL, NV = NB / L };   \
    const NAME##_vec lo = (NAME##_vec){0} + BBF_MIN_##E;                                  \
    for (ptrdiff_t r = 0; r < R; r += MR) {                                               \
        const int mr = R - r < MR ? (int)(R - r) : MR;                                    \
        ptrdiff_t goff[MR]; /* each row's acc row, once per block: no division below */   \
        for (int rr = 0; rr < MR; rr++)                                                   \
            goff[rr] = (r0 + r + rr) / G * J;                                             \
        for (ptrdiff_t j0 = 0; j0 < J; j0 += NB) {                                        \
            NAME##_vec p[MR][NV];                                                         \
            BBF_BLOCK_PRODUCT(NAME, MR, NV, A_K_J + j0, J, B_R_K, r, mr, K, p)             \
            /* acc_J + off: the block's acc row; every vector of a row in registers */   \
            ptrdiff_t off = goff[0] + j0;                                                 \
            NAME##_dvec a[NV][W];                                                         \
            BBF_ACC(NAME, NV, W, a[v][h] = *(const NAME##_udvec *)(acc_J + off + DL * (W * v + h)))\
            /* float32 (W > 1): a group's rows of the block summed in float32 (at most MR \
             * terms), widened once; float64 sums straight into a */                    \
            NAME##_vec s[NV];                                                             \
            for (int v = 0; v < NV; v++)                                                  \
                s[v] = (NAME##_vec){0};                                                   \
            for (int rr = 0; rr < MR; rr++) {                                             \
                if (rr >= mr)                                                             \
                    break;                                                                \
                if (goff[rr] + j0 != off) { /* the block enters a new group */            \
                    BBF_WIDEN(NAME, NV, W, HALF, s, a)                                    \
                    BBF_ACC(NAME, NV, W, *(NAME##_udvec *)(acc_J + off + DL * (W * v + h)) = a[v][h])\
                    off = goff[rr] + j0;                                                  \
                    BBF_ACC(NAME, NV, W, a[v][h] = *(const NAME##_udvec *)(acc_J + off + DL * (W * v + h)))\
                }                                                                         \
                const double w = w_R[r + rr];                                             \
                for (int v = 0; v < NV; v++) {                                            \
                    /* max(x, lo) as x > lo ? x : lo, NaN included */                     \
                    const NAME##_vec x = p[rr][v];                                        \
                    const NAME##_ivec gt = (NAME##_ivec)(x > lo);                         \
                    const NAME##_vec y = x * LOG((NAME##_vec)(((NAME##_ivec)x & gt)       \
                                                              | ((NAME##_ivec)lo & ~gt)));\
                    if (W > 1)                                                            \
                        s[v] += (BBF_T_##E)w * y;                                         \
                    else                                                                  \
                        a[v][0] += w * (NAME##_dvec)HALF(y, 0);                           \
                }                                                                         \
            }                                                                             \
            BBF_WIDEN(NAME, NV, W, HALF, s, a)                                            \
            BBF_ACC(NAME, NV, W, *(NAME##_udvec *)(acc_J + off + DL * (W * v + h)) = a[v][h])\
        }                                                                                 \
    }                                                                                     \
}

#if defined(__x86_64__) && !defined(BBF_NO_DISPATCH) \
    && ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11))
#include <immintrin.h>
#define BBF_V4 __attribute__((target("arch=x86-64-v4")))
#define BBF_V3 __attribute__((target("arch=x86-64-v3")))

/* log of 8 doubles for the x86-64-v4 paths, without fdlibm's division. On Zen 5 (one
 * thread, L1): 0.36 ns/log against 0.46 for bbf_log; a glibc-style 128-entry table read
 * with vgatherqpd was slower (0.79), so this table has 16 entries, held in two zmm
 * registers each and read with vpermt2pd.
 *
 * x = 2^k z with z in [0x1.68p-1, 0x1.68p0) as in bbf_log, but with OFF = 0x3fe6800000000000;
 * the next 4 bits pick interval i, the z whose bits are in [OFF + i 2^48, OFF + (i+1) 2^48).
 * log x = k ln2 + log c + log1p(r), r = z invc - 1 in one fma (c = 1/invc, |r| <= 0.0333),
 * log1p(r) = r + r^2 q(r).
 * - Interval 9 is centred on 1 with invc = 1: near x = 1, log x = r + r^2 q(r), r exact.
 * - invc is a multiple of 2^-5 where that keeps |r| <= 0.034 (all but intervals 0, 11,
 *   13-15), which makes r exact (it fits in 53 bits): the rounding of r would otherwise
 *   cost up to 0.5 ulp where |log x| ~ |r|. Elsewhere invc = RN((a + b) / 2ab) for the
 *   interval [a, b).
 * - log c = hi + lo with hi on the 2^-43 grid, so k ln2hi + hi is exact for every k.
 * Max error 1.06 ulp against logl over 6.5e7 random x in [DBL_MIN, 2], 0.75 ulp on (0, 1]
 * (bbf_log: 0.75), from the roundings of r + (r^2 q + lo) and of the final sum.
 *
 * Generated by a Python/mpmath script at 256 bits: invc as above, log c = -log(invc),
 * hi = log c rounded to a multiple of 2^-43, lo = RN(log c - hi); q interpolates
 * (log1p(r) - r) / r^2 at 9 Chebyshev nodes on |r| <= 0.034, error < 0.01 ulp of r. */
static const double bbf_log_tab[3][16] __attribute__((aligned(64))) = {
    { /* invc */
        0x1.6457a212a3e37p+0, 0x1.58p+0, 0x1.48p+0, 0x1.38p+0,
        0x1.3p+0, 0x1.28p+0, 0x1.18p+0, 0x1.1p+0,
        0x1.08p+0, 0x1p+0, 0x1.ep-1, 0x1.c77669901c776p-1,
        0x1.bp-1, 0x1.99db2d4eede8ap-1, 0x1.86510688c8f77p-1, 0x1.748e5ac1f3905p-1,
    },
    { /* log(c) hi */
        -0x1.52a6cae96f8p-2, -0x1.2e8e2bae12p-2, -0x1.fb9186d5e4p-3, -0x1.9525a9cf45p-3,
        -0x1.5ff3070a79p-3, -0x1.29552f81ffp-3, -0x1.6f0d28ae56p-4, -0x1.f0a30c0118p-5,
        -0x1.f829b0e78p-6, 0.0, 0x1.08598b59e4p-4, 0x1.df4710cfa6p-4,
        0x1.5bf406b544p-3, 0x1.c7b7b42b8p-3, 0x1.15e1245e498p-2, 0x1.45914b81cc8p-2,
    },
    { /* log(c) lo */
        0x1.fed9f3e918debp-49, 0x1.67b1e99b72bd8p-45, 0x1.d572aab993c87p-47,
        -0x1.ad1d904c1d4e3p-45, -0x1.e9e439f105039p-46, -0x1.48d301771c408p-45,
        -0x1.69737c93373dap-45, 0x1.d599e83368e91p-45, -0x1.980267c7e09e4p-45,
        0.0, -0x1.7e5dd7009902cp-46, 0x1.57ffad8ff8b23p-47,
        -0x1.27023eb68981cp-46, -0x1.50a823d84f60bp-45, -0x1.c85370062f7aep-46,
        0x1.ccd1d3f6d7efdp-49,
    },
};
/* q(r) = q[0] + q[1] r + ... + q[8] r^8 */
static const double bbf_log_q[9] = {
    -0x1p-1, 0x1.55555555554eep-2, -0x1.fffffffffff43p-3,
    0x1.9999999bdde0dp-3, -0x1.5555555769451p-3, 0x1.24922d9302043p-3,
    -0x1.ffffcd74cf245p-4, 0x1.c814bfcf0d31fp-4, -0x1.9a7d3792aa144p-4,
};

BBF_V4 static inline __m512d bbf_log_v4(__m512d x)
{
    const __m512i ix = _mm512_castpd_si512(x);
    const __m512i tmp = _mm512_sub_epi64(ix, _mm512_set1_epi64(0x3fe6800000000000LL));
    const __m512i idx = _mm512_srli_epi64(tmp, 48); /* vpermt2pd reads the low 4 bits */
    const __m512d kd = _mm512_cvtepi64_pd(_mm512_srai_epi64(tmp, 52));
    const __m512d z = _mm512_castsi512_pd(_mm512_sub_epi64(
        ix, _mm512_and_si512(tmp, _mm512_set1_epi64((long long)0xfff0000000000000ULL))));
#define BBF_LOOKUP(t) \
    _mm512_permutex2var_pd(_mm512_load_pd(t), idx, _mm512_load_pd((t) + 8))
    const __m512d r = _mm512_fmadd_pd(z, BBF_LOOKUP(bbf_log_tab[0]), _mm512_set1_pd(-1.0));
    const __m512d A = _mm512_fmadd_pd(kd, _mm512_set1_pd(0x1.62e42fefa3800p-1),
                                      BBF_LOOKUP(bbf_log_tab[1])); /* exact */
    const __m512d B = _mm512_fmadd_pd(kd, _mm512_set1_pd(0x1.ef35793c76730p-45),
                                      BBF_LOOKUP(bbf_log_tab[2]));
#undef BBF_LOOKUP
#define BBF_C _mm512_set1_pd
    /* q(r) by Estrin's scheme: Horner's longer dependency chain ran 20% slower */
    const __m512d r2 = _mm512_mul_pd(r, r), r4 = _mm512_mul_pd(r2, r2);
    const __m512d q01 = _mm512_fmadd_pd(r, BBF_C(bbf_log_q[1]), BBF_C(bbf_log_q[0]));
    const __m512d q23 = _mm512_fmadd_pd(r, BBF_C(bbf_log_q[3]), BBF_C(bbf_log_q[2]));
    const __m512d q45 = _mm512_fmadd_pd(r, BBF_C(bbf_log_q[5]), BBF_C(bbf_log_q[4]));
    const __m512d q67 = _mm512_fmadd_pd(r, BBF_C(bbf_log_q[7]), BBF_C(bbf_log_q[6]));
    const __m512d q48 = _mm512_fmadd_pd(r4, BBF_C(bbf_log_q[8]),
                                        _mm512_fmadd_pd(r2, q67, q45));
    const __m512d q = _mm512_fmadd_pd(r4, q48, _mm512_fmadd_pd(r2, q23, q01));
#undef BBF_C
    return _mm512_add_pd(A, _mm512_add_pd(r, _mm512_fmadd_pd(r2, q, B)));
}

static int bbf_cpu_v4(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
           && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
}
#define BBF_HAVE_V4 1

/* NAME##_v4, _v3 or _v1 called with ARGS, whichever this CPU runs best. */
#define BBF_PICK(NAME, ARGS)                                                              \
    do {                                                                                  \
        if (bbf_cpu_v4())                                                                 \
            NAME##_v4 ARGS;                                                               \
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))         \
            NAME##_v3 ARGS;                                                               \
        else                                                                              \
            NAME##_v1 ARGS;                                                               \
    } while (0)

/* logf of 8 (AVX2) or 16 (AVX-512) floats for the float32 v3 and v4 tiles, without
 * fdlibm's division (whose latency left the tile's reduction at half its throughput) and
 * without a table (on Zen 3 the four vpermps and two blends of a 16-entry table cost more
 * than the longer polynomial: the E1 EPIG tile went from 1.8 to 1.45 ns an entry,
 * docs/algorithm.md).
 *
 * x = 2^k (1 + f) with 1 + f in [sqrt(2)/2, sqrt(2)) as in bbf_logf, and
 * log(1 + f) = f + f^2 (-1/2 + f s(f)): f is exact (Sterbenz), so near x = 1 the error is
 * that of the small correction. s, of degree 7, interpolates ((log1p(f) - f)/f^2 + 1/2)/f
 * at Chebyshev nodes on the interval (fitted in float64 with mpmath's log1p, coefficients
 * rounded to float). Max error against log over every 7th float in [FLT_MIN, 4):
 * 1.03 ulp (fdlibm's bbf_logf: 0.97). */
#define BBF_LOGF_S0 0x1.555552p-2f
#define BBF_LOGF_S1 -0x1.0000c6p-2f
#define BBF_LOGF_S2 0x1.99a150p-3f
#define BBF_LOGF_S3 -0x1.54d552p-3f
#define BBF_LOGF_S4 0x1.22dbfcp-3f
#define BBF_LOGF_S5 -0x1.09ab66p-3f
#define BBF_LOGF_S6 0x1.045b0cp-3f
#define BBF_LOGF_S7 -0x1.4bde76p-4f

/* One body for AVX2 (P = _mm256_, BITS 256) and AVX-512 (P = _mm512_, BITS 512). */
#define BBF_DEFINE_LOGF_POLY(NAME, TARGET, P, BITS)                                       \
TARGET static inline __m##BITS NAME(__m##BITS x)                                          \
{                                                                                         \
    const __m##BITS##i ix = P##castps_si##BITS(x);                                        \
    const __m##BITS##i tmp = P##sub_epi32(ix, P##set1_epi32(BBF_LOG_OFF_f));              \
    const __m##BITS kf = P##cvtepi32_ps(P##srai_epi32(tmp, 23));                          \
    const __m##BITS f = P##sub_ps(P##castsi##BITS##_ps(P##sub_epi32(                     \
        ix, P##and_si##BITS(tmp, P##set1_epi32((int)BBF_LOG_EXP_f)))), P##set1_ps(1.0f)); \
    /* s by Estrin's scheme: a short dependency chain */                                 \
    const __m##BITS f2 = P##mul_ps(f, f), f4 = P##mul_ps(f2, f2);                         \
    const __m##BITS s01 = P##fmadd_ps(f, P##set1_ps(BBF_LOGF_S1), P##set1_ps(BBF_LOGF_S0));\
    const __m##BITS s23 = P##fmadd_ps(f, P##set1_ps(BBF_LOGF_S3), P##set1_ps(BBF_LOGF_S2));\
    const __m##BITS s45 = P##fmadd_ps(f, P##set1_ps(BBF_LOGF_S5), P##set1_ps(BBF_LOGF_S4));\
    const __m##BITS s67 = P##fmadd_ps(f, P##set1_ps(BBF_LOGF_S7), P##set1_ps(BBF_LOGF_S6));\
    const __m##BITS s = P##fmadd_ps(f4, P##fmadd_ps(f2, s67, s45), P##fmadd_ps(f2, s23, s01));\
    const __m##BITS y = P##fmadd_ps(f2, P##fmadd_ps(f, s, P##set1_ps(-0.5f)), f);         \
    return P##fmadd_ps(kf, P##set1_ps(0x1.62e43p-1f), y);                                 \
}
BBF_DEFINE_LOGF_POLY(bbf_logf_v3, BBF_V3, _mm256_, 256)
BBF_DEFINE_LOGF_POLY(bbf_logf_v4, BBF_V4, _mm512_, 512)

BBF_V4 static inline __m512d bbf_half_v4(__m512 y, int h)
{
    return _mm512_cvtps_pd(h ? _mm512_extractf32x8_ps(y, 1) : _mm512_castps512_ps256(y));
}
BBF_V3 static inline __m256d bbf_half_v3(__m256 y, int h)
{
    return _mm256_cvtps_pd(h ? _mm256_extractf128_ps(y, 1) : _mm256_castps256_ps128(y));
}
static inline __m128d bbf_half_v1(__m128 y, int h)
{
    return _mm_cvtps_pd(h ? _mm_movehl_ps(y, y) : y);
}

/* 32 zmm registers: 8 × 2 accumulators; 16 ymm: 6 × 2; baseline 16 xmm: 4 × 4 (float64)
 * or 4 × 2 (float32). */
BBF_FUSED_TILE(bbf_fused_tile_d_v4, BBF_V4, d, 64, 8, 16, bbf_log_v4, BBF_SAME)
BBF_FUSED_TILE(bbf_fused_tile_d_v3, BBF_V3, d, 32, 6, 8, bbf_fused_tile_d_v3_log, BBF_SAME)
BBF_FUSED_TILE(bbf_fused_tile_d_v1, , d, 16, 4, 8, bbf_fused_tile_d_v1_log, BBF_SAME)
BBF_FUSED_TILE(bbf_fused_tile_f_v4, BBF_V4, f, 64, 8, 32, bbf_logf_v4, bbf_half_v4)
BBF_FUSED_TILE(bbf_fused_tile_f_v3, BBF_V3, f, 32, 6, 16, bbf_logf_v3, bbf_half_v3)
BBF_FUSED_TILE(bbf_fused_tile_f_v1, , f, 16, 4, 8, bbf_fused_tile_f_v1_log, bbf_half_v1)

#define BBF_FUSED_TILE_PICK(E)                                                            \
static void bbf_fused_tile_##E(const BBF_T_##E *A_K_J, const BBF_T_##E *B_R_K,           \
                               const double *w_R, ptrdiff_t R, ptrdiff_t K, ptrdiff_t J, \
                               ptrdiff_t G, double *acc_J, ptrdiff_t r0)                  \
{                                                                                         \
    BBF_PICK(bbf_fused_tile_##E, (A_K_J, B_R_K, w_R, R, K, J, G, acc_J, r0));             \
}
BBF_FUSED_TILE_PICK(d)
BBF_FUSED_TILE_PICK(f)
#else
typedef float bbf_f4 __attribute__((vector_size(16)));
typedef double bbf_d2 __attribute__((vector_size(16)));
static inline bbf_d2 bbf_half_any(bbf_f4 y, int h)
{
    return (bbf_d2){y[2 * h], y[2 * h + 1]};
}
BBF_FUSED_TILE(bbf_fused_tile_d, , d, 16, 4, 8, bbf_fused_tile_d_log, BBF_SAME)
BBF_FUSED_TILE(bbf_fused_tile_f, , f, 16, 4, 8, bbf_fused_tile_f_log, bbf_half_any)
#endif

#else /* no vector extensions: plain loops, correct but slower */
#define BBF_PLAIN_TILE(E, LOG)                                                            \
static void bbf_fused_tile_##E(const BBF_T_##E *A_K_J, const BBF_T_##E *B_R_K,           \
                               const double *w_R, ptrdiff_t R, ptrdiff_t K, ptrdiff_t J, \
                               ptrdiff_t G, double *acc_J, ptrdiff_t r0)                  \
{                                                                                         \
    for (ptrdiff_t r = 0; r < R; r++)                                                     \
        for (ptrdiff_t j = 0; j < J; j++) {                                               \
            BBF_T_##E p = 0;                                                              \
            for (ptrdiff_t k = 0; k < K; k++)                                             \
                p += B_R_K[r * K + k] * A_K_J[k * J + j];                                 \
            BBF_T_##E x = p > BBF_MIN_##E ? p : BBF_MIN_##E;                              \
            acc_J[(r0 + r) / G * J + j] += w_R[r] * (double)(p * LOG(x));                 \
        }                                                                                 \
}
BBF_PLAIN_TILE(d, bbf_log)
BBF_PLAIN_TILE(f, bbf_logf)
#endif

/* out[i] = x[i] · log x[i] (0 at x = 0). */
BBF_DISPATCH static void bbf_xlogx_d_clones(const double *x, ptrdiff_t n, double *out)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        double y = x[i] > DBL_MIN ? x[i] : DBL_MIN;
        out[i] = x[i] * bbf_log(y);
    }
}

#ifdef BBF_HAVE_V4
BBF_V4 static void bbf_xlogx_d_v4(const double *x, ptrdiff_t n, double *out)
{
    ptrdiff_t i = 0;
    /* max(x, DBL_MIN) is x > DBL_MIN ? x : DBL_MIN, NaN included; masked loads and stores
     * on every iteration ran 2x slower from DRAM on Zen 5, so only the tail uses them */
    for (; i + 8 <= n; i += 8) {
        const __m512d v = _mm512_loadu_pd(x + i);
        const __m512d y = bbf_log_v4(_mm512_max_pd(v, _mm512_set1_pd(DBL_MIN)));
        _mm512_storeu_pd(out + i, _mm512_mul_pd(v, y));
    }
    if (i < n) {
        const __mmask8 m = (__mmask8)((1u << (n - i)) - 1);
        const __m512d v = _mm512_maskz_loadu_pd(m, x + i);
        const __m512d y = bbf_log_v4(_mm512_max_pd(v, _mm512_set1_pd(DBL_MIN)));
        _mm512_mask_storeu_pd(out + i, m, _mm512_mul_pd(v, y));
    }
}
#endif

static void bbf_xlogx_d(const double *x, ptrdiff_t n, double *out)
{
#ifdef BBF_HAVE_V4
    if (bbf_cpu_v4()) {
        bbf_xlogx_d_v4(x, n, out);
        return;
    }
#endif
    bbf_xlogx_d_clones(x, n, out);
}

BBF_DISPATCH static void bbf_xlogx_f(const float *x, ptrdiff_t n, double *out)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        float y = x[i] > FLT_MIN ? x[i] : FLT_MIN;
        out[i] = (double)(x[i] * bbf_logf(y));
    }
}

/* out[m] = argmax_g Σ_k X[m, k] · L[k, g] (the lowest g among equal sums) for rows
 * [m0, m1): the assignment step of a k-means in KL geometry. Each sum runs over k in
 * ascending order from 0, one multiply-add per k (fused where the instruction set has
 * FMA), as BLAS's microkernels accumulate one entry of a product with K this small: the
 * argmax is the NumPy twin's on the same CPU. As in BBF_FUSED_TILE, an MR × NB block of
 * sums is held in registers; acc (MR × G entries) holds the sums of MR rows. */
#if defined(__GNUC__)
#define BBF_NEAREST(NAME, TARGET, VBYTES, MR, NB)                                         \
typedef double NAME##_vec __attribute__((vector_size(VBYTES)));                           \
typedef double NAME##_uvec __attribute__((vector_size(VBYTES), aligned(8), may_alias));   \
TARGET static void NAME(const double *X_M_K, const double *L_K_G, ptrdiff_t m0,          \
                        ptrdiff_t m1, ptrdiff_t K, ptrdiff_t G, double *acc,             \
                        ptrdiff_t *out_M)                                                 \
{                                                                                         \
    enum { NV = NB / (VBYTES / 8) };                                                      \
    const ptrdiff_t Gv = G / NB * NB;                                                     \
    for (ptrdiff_t r = m0; r < m1; r += MR) {                                             \
        const int mr = m1 - r < MR ? (int)(m1 - r) : MR;                                  \
        for (ptrdiff_t g0 = 0; g0 < Gv; g0 += NB) {                                       \
            NAME##_vec p[MR][NV];                                                         \
            BBF_BLOCK_PRODUCT(NAME, MR, NV, L_K_G + g0, G, X_M_K, r, mr, K, p)             \
            for (int rr = 0; rr < mr; rr++)                                               \
                memcpy(acc + rr * G + g0, &p[rr][0], sizeof(p[rr]));                      \
        }                                                                                 \
        for (int rr = 0; rr < mr; rr++) {                                                 \
            const double *x = X_M_K + (r + rr) * K;                                       \
            double *a = acc + rr * G;                                                     \
            for (ptrdiff_t g = Gv; g < G; g++) {                                          \
                double t = 0.0;                                                           \
                for (ptrdiff_t k = 0; k < K; k++)                                         \
                    t += x[k] * L_K_G[k * G + g];                                         \
                a[g] = t;                                                                 \
            }                                                                             \
            ptrdiff_t best = 0;                                                           \
            for (ptrdiff_t g = 1; g < G; g++)                                             \
                if (a[g] > a[best])                                                       \
                    best = g;                                                             \
            out_M[r + rr] = best;                                                         \
        }                                                                                 \
    }                                                                                     \
}

#define BBF_NEAREST_MR 4 /* rows of acc */
#ifdef BBF_HAVE_V4
BBF_NEAREST(bbf_nearest_v4, BBF_V4, 64, 4, 16)
BBF_NEAREST(bbf_nearest_v3, BBF_V3, 32, 4, 8)
BBF_NEAREST(bbf_nearest_v1, , 16, 4, 4)

static void bbf_nearest_rows(const double *X_M_K, const double *L_K_G, ptrdiff_t m0,
                             ptrdiff_t m1, ptrdiff_t K, ptrdiff_t G, double *acc,
                             ptrdiff_t *out_M)
{
    BBF_PICK(bbf_nearest, (X_M_K, L_K_G, m0, m1, K, G, acc, out_M));
}
#else
BBF_NEAREST(bbf_nearest_rows, , 16, 4, 4)
#endif

#else /* no vector extensions: plain loops */
#define BBF_NEAREST_MR 1
static void bbf_nearest_rows(const double *X_M_K, const double *L_K_G, ptrdiff_t m0,
                             ptrdiff_t m1, ptrdiff_t K, ptrdiff_t G, double *acc,
                             ptrdiff_t *out_M)
{
    for (ptrdiff_t m = m0; m < m1; m++) {
        for (ptrdiff_t g = 0; g < G; g++) {
            double t = 0.0;
            for (ptrdiff_t k = 0; k < K; k++)
                t += X_M_K[m * K + k] * L_K_G[k * G + g];
            acc[g] = t;
        }
        ptrdiff_t best = 0;
        for (ptrdiff_t g = 1; g < G; g++)
            if (acc[g] > acc[best])
                best = g;
        out_M[m] = best;
    }
}
#endif

/* out[m] = W·parent[m] + argmax_w Σ_k X[m, k] · L[parent[m], k, w] (the lowest w among
 * equal sums) for rows [m0, m1): the assignment step of splitting groups. Each sum starts
 * at 0 and adds one rounded product per k in ascending order, never fused: the sums of
 * the scalar loop this replaced, so the groups stay those of earlier builds. Hence AVX2
 * without FMA (GCC contracts a product and a sum wherever FMA is enabled). Up to sixteen
 * sums at a time are held in registers (four AVX2 vectors); acc holds a row's W sums. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) \
    && defined(__linux__) && defined(__GLIBC__) && !defined(BBF_NO_DISPATCH)
#define BBF_DISPATCH_NOFMA __attribute__((target_clones("avx2", "default")))
#else
#define BBF_DISPATCH_NOFMA
#endif
/* The sums of w in [w0, w0 + 4 NV) into acc: NV vectors of four sums in registers
 * (GCC's and clang's vector extensions; elsewhere the plain loop below does them all). */
#if defined(__GNUC__)
typedef double bbf_v4d __attribute__((vector_size(32)));
typedef double bbf_v4du __attribute__((vector_size(32), aligned(8), may_alias));
#define BBF_SUBGROUP_BLOCK(NV)                                                            \
    for (; w0 + 4 * NV <= W; w0 += 4 * NV) {                                              \
        bbf_v4d a[NV];                                                                    \
        for (int j = 0; j < NV; j++)                                                      \
            a[j] = (bbf_v4d){0.0, 0.0, 0.0, 0.0};                                         \
        for (ptrdiff_t k = 0; k < K; k++) {                                               \
            const double J = x[k];                                                        \
            const double *l = L + k * W + w0;                                             \
            for (int j = 0; j < NV; j++)                                                  \
                a[j] = a[j] + J * *(const bbf_v4du *)(l + 4 * j);                         \
        }                                                                                 \
        memcpy(acc + w0, a, sizeof(a));                                                   \
    }
#else
#define BBF_SUBGROUP_BLOCK(NV)
#endif
BBF_DISPATCH_NOFMA static void bbf_subgroup_rows(const double *X_M_K, const ptrdiff_t *parent_M,
                                                 const double *L_P_K_W, ptrdiff_t m0,
                                                 ptrdiff_t m1, ptrdiff_t K, ptrdiff_t W,
                                                 double *restrict acc, ptrdiff_t *out_M)
{
    for (ptrdiff_t m = m0; m < m1; m++) {
        const double *x = X_M_K + m * K;
        const double *L = L_P_K_W + parent_M[m] * K * W;
        ptrdiff_t w0 = 0;
        BBF_SUBGROUP_BLOCK(4)
        BBF_SUBGROUP_BLOCK(2)
        BBF_SUBGROUP_BLOCK(1)
        for (; w0 < W; w0++) {
            double t = 0.0;
            for (ptrdiff_t k = 0; k < K; k++)
                t = t + x[k] * L[k * W + w0];
            acc[w0] = t;
        }
        ptrdiff_t best = 0;
        for (ptrdiff_t w = 1; w < W; w++)
            if (acc[w] > acc[best])
                best = w;
        out_M[m] = W * parent_M[m] + best;
    }
}

#endif /* BATCHBALD_FAST_XLOGX_H */
