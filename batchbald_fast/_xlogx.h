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
 * fused tile by __builtin_cpu_supports (its register blocking differs per set).
 * Measured on Zen 5, W2 step, one thread: v4 0.83 s, v3 1.8 s, baseline 4.8 s.
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

/* log(x) for normal, positive, finite x (fdlibm e_log.c, without branches). */
static inline double bbf_log(double x)
{
    uint64_t ix, iz, kb;
    double z, dk;
    memcpy(&ix, &x, 8);
    /* Reduce x = 2^k · z with z in [sqrt(2)/2, sqrt(2)). */
    uint64_t tmp = ix - 0x3fe6a09e667f3bcdULL;
    iz = ix - (tmp & 0xfff0000000000000ULL);
    memcpy(&z, &iz, 8);
    /* k to double without a 64-bit arithmetic shift or int64->double conversion,
     * neither of which AVX2 has: flip the 12-bit sign to bias k by 2048. */
    kb = ((tmp >> 52) ^ 0x800) | 0x4330000000000000ULL;
    memcpy(&dk, &kb, 8);
    dk -= 4503599627372544.0; /* 2^52 + 2^11 */
    double f = z - 1.0;
    double s = f / (2.0 + f);
    double hfsq = 0.5 * f * f;
    double s2 = s * s, w = s2 * s2;
    double t1 = w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01
                + w * 1.531383769920937332e-01));
    double t2 = s2 * (6.666666666666735130e-01 + w * (2.857142874366239149e-01
                + w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01)));
    double R = t2 + t1;
    return dk * 6.93147180369123816490e-01
           - ((hfsq - (s * (hfsq + R) + dk * 1.90821492927058770002e-10)) - f);
}

/* logf(x) for normal, positive, finite x (fdlibm e_logf.c, without branches). */
static inline float bbf_logf(float x)
{
    uint32_t ix, iz, kb;
    float z, dk;
    memcpy(&ix, &x, 4);
    uint32_t tmp = ix - 0x3f3504f3U;
    iz = ix - (tmp & 0xff800000U);
    memcpy(&z, &iz, 4);
    kb = ((tmp >> 23) ^ 0x100) | 0x4b000000U;
    memcpy(&dk, &kb, 4);
    dk -= 8388864.0f; /* 2^23 + 2^8 */
    float f = z - 1.0f;
    float s = f / (2.0f + f);
    float hfsq = 0.5f * f * f;
    float s2 = s * s, w = s2 * s2;
    float t1 = w * (0.40000972152f + w * 0.24279078841f);
    float t2 = s2 * (0.66666662693f + w * 0.28498786688f);
    float R = t2 + t1;
    return dk * 6.9313812256e-01f
           - ((hfsq - (s * (hfsq + R) + dk * 9.0580006145e-06f)) - f);
}

/* acc_J[j] += sum over m (ascending) of w_M[m] · P[m, j] · log P[m, j], for float32 P:
 * x·log x in float32, the weighted sum in float64. P_M_J is row-major with leading
 * dimension J. The order over m is fixed so that a candidate's sum does not depend on
 * how M is tiled. */
BBF_DISPATCH static void bbf_xlogx_accumulate_f(const float *P_M_J, const double *w_M,
                                                ptrdiff_t M, ptrdiff_t J, double *acc_J)
{
    for (ptrdiff_t m = 0; m < M; m++) {
        const float *restrict p = P_M_J + m * J;
        double *restrict acc = acc_J;
        const double w = w_M[m];
        for (ptrdiff_t j = 0; j < J; j++) {
            float x = p[j] > FLT_MIN ? p[j] : FLT_MIN;
            acc[j] += w * (double)(p[j] * bbf_logf(x));
        }
    }
}

/* Fused tile: acc_J[j] += Σ_r w_R[r] · P log P (r ascending) with P = B_R_K @ A_K_J
 * (row-major, A's leading dimension J, J a multiple of BBF_NB). An MR × NB block of P is
 * accumulated in registers, then reduced from L1 by the vectorised log loop, so P never
 * travels through L2 as it does with a BLAS call per tile; with K this small (a short,
 * wide product) that beats OpenBLAS plus a separate pass.
 *
 * gcc does not auto-vectorise this loop nest, so it is written with GCC vector
 * extensions, once per instruction set with that set's register width and count (a
 * 64-byte vector type compiled for AVX2 spills and runs ~30x slower), and picked at
 * run time from the CPU's features. */
#define BBF_NB 16 /* J is padded to a multiple of this: every NB below divides it */

#if defined(__GNUC__)
#define BBF_FUSED_TILE(NAME, TARGET, VBYTES, MR, NB)                                      \
typedef double NAME##_vec __attribute__((vector_size(VBYTES)));                           \
typedef double NAME##_uvec __attribute__((vector_size(VBYTES), aligned(8), may_alias));   \
TARGET static void NAME(const double *A_K_J, const double *B_R_K, const double *w_R,     \
                        ptrdiff_t R, ptrdiff_t K, ptrdiff_t J, double *acc_J)            \
{                                                                                         \
    enum { NV = NB / (VBYTES / 8) };                                                      \
    double tile[MR * NB] __attribute__((aligned(64)));                                    \
    for (ptrdiff_t r = 0; r < R; r += MR) {                                               \
        const int mr = R - r < MR ? (int)(R - r) : MR;                                    \
        for (ptrdiff_t j0 = 0; j0 < J; j0 += NB) {                                        \
            NAME##_vec p[MR][NV];                                                         \
            for (int rr = 0; rr < MR; rr++)                                               \
                for (int v = 0; v < NV; v++)                                              \
                    p[rr][v] = (NAME##_vec){0};                                           \
            for (ptrdiff_t k = 0; k < K; k++) {                                           \
                /* direct unaligned loads: a memcpy here went through the stack */        \
                const NAME##_uvec *a = (const NAME##_uvec *)(A_K_J + k * J + j0);         \
                for (int rr = 0; rr < MR; rr++) {                                         \
                    /* rows past R reuse row r: valid memory, never accumulated */        \
                    const double bk = B_R_K[(r + (rr < mr ? rr : 0)) * K + k];            \
                    for (int v = 0; v < NV; v++)                                          \
                        p[rr][v] += bk * a[v];                                            \
                }                                                                         \
            }                                                                             \
            memcpy(tile, p, sizeof(tile));                                                \
            double *restrict acc = acc_J + j0;                                            \
            for (int rr = 0; rr < mr; rr++) {                                             \
                const double w = w_R[r + rr];                                             \
                const double *restrict t = tile + rr * NB;                                \
                for (int j = 0; j < NB; j++) {                                            \
                    double x = t[j] > DBL_MIN ? t[j] : DBL_MIN;                           \
                    acc[j] += w * (t[j] * bbf_log(x));                                    \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
}

#if defined(__x86_64__) && !defined(BBF_NO_DISPATCH) \
    && ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11))
/* 32 zmm registers: 8 × 2 accumulators; 16 ymm: 4 × 2; baseline 16 xmm: 4 × 4. */
BBF_FUSED_TILE(bbf_fused_tile_v4, __attribute__((target("arch=x86-64-v4"))), 64, 8, 16)
BBF_FUSED_TILE(bbf_fused_tile_v3, __attribute__((target("arch=x86-64-v3"))), 32, 4, 8)
BBF_FUSED_TILE(bbf_fused_tile_v1, , 16, 4, 8)

static void bbf_fused_tile_d(const double *A_K_J, const double *B_R_K, const double *w_R,
                             ptrdiff_t R, ptrdiff_t K, ptrdiff_t J, double *acc_J)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw"))
        bbf_fused_tile_v4(A_K_J, B_R_K, w_R, R, K, J, acc_J);
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        bbf_fused_tile_v3(A_K_J, B_R_K, w_R, R, K, J, acc_J);
    else
        bbf_fused_tile_v1(A_K_J, B_R_K, w_R, R, K, J, acc_J);
}
#else
BBF_FUSED_TILE(bbf_fused_tile_d, , 16, 4, 8)
#endif

#else /* no vector extensions: plain loops, correct but slower */
static void bbf_fused_tile_d(const double *A_K_J, const double *B_R_K, const double *w_R,
                             ptrdiff_t R, ptrdiff_t K, ptrdiff_t J, double *acc_J)
{
    for (ptrdiff_t r = 0; r < R; r++)
        for (ptrdiff_t j = 0; j < J; j++) {
            double p = 0.0;
            for (ptrdiff_t k = 0; k < K; k++)
                p += B_R_K[r * K + k] * A_K_J[k * J + j];
            double x = p > DBL_MIN ? p : DBL_MIN;
            acc_J[j] += w_R[r] * (p * bbf_log(x));
        }
}
#endif

/* out[i] = x[i] · log x[i] (0 at x = 0). */
BBF_DISPATCH static void bbf_xlogx_d(const double *x, ptrdiff_t n, double *out)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        double y = x[i] > DBL_MIN ? x[i] : DBL_MIN;
        out[i] = x[i] * bbf_log(y);
    }
}

BBF_DISPATCH static void bbf_xlogx_f(const float *x, ptrdiff_t n, double *out)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        float y = x[i] > FLT_MIN ? x[i] : FLT_MIN;
        out[i] = (double)(x[i] * bbf_logf(y));
    }
}

#endif /* BATCHBALD_FAST_XLOGX_H */
