/* Fused fp32 CPU kernels of vit5 (see vit5/ops/native.py, which compiles and loads this file).
 *
 * Each kernel does in one or two passes over memory what a chain of PyTorch ops does in five to
 * ten: on a CPU those chains are bound by memory traffic, not arithmetic. Plain C11 + OpenMP, no
 * PyTorch headers: the caller passes contiguous fp32 buffers and the thread count. Reductions
 * use a fixed order for a given thread count (static schedules, per-thread partial sums added in
 * thread order), so results are deterministic run to run.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#define ROW_BLOCK 32 /* rows summed in a block before joining the thread's running sum */

/* Rows of x are addressed in two levels, row i at (i / inner) * outer_stride + (i % inner) *
 * inner_stride floats: a contiguous [rows, d] tensor has inner = rows, inner_stride = d; the
 * per-head q of a packed [B, T, 3, H, hd] projection has inner = H, inner_stride = hd,
 * outer_stride = 3 H hd. Outputs and gradients are contiguous [rows, d]. */
static inline const float *vit5_row(const float *x, int64_t i, int64_t inner, int64_t outer_stride,
                                    int64_t inner_stride) {
    return x + (i / inner) * outer_stride + (i % inner) * inner_stride;
}

/* RMSNorm forward over rows of d: r[i] = 1 / sqrt(mean_j x[i,j]^2 + eps); y = w * (x * r). */
void vit5_rms_forward(const float *x, int64_t inner, int64_t outer_stride, int64_t inner_stride, const float *w,
                      float *y, float *r, int64_t rows, int64_t d, float eps, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < rows; i++) {
        const float *xi = vit5_row(x, i, inner, outer_stride, inner_stride);
        float *yi = y + i * d;
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < d; j++) s += xi[j] * xi[j];
        const float ri = 1.0f / sqrtf(s / (float)d + eps);
        r[i] = ri;
#pragma omp simd
        for (int64_t j = 0; j < d; j++) yi[j] = w[j] * (xi[j] * ri);
    }
}

/* RMSNorm backward with n = x r: gx = r (g w - n mean_j(g w n)) (if gx); gw = sum_i g n (if gw,
 * overwritten). Returns 0, or -1 if scratch memory could not be allocated. */
int vit5_rms_backward(const float *x, int64_t inner, int64_t outer_stride, int64_t inner_stride, const float *w,
                      const float *r, const float *g, float *gx, float *gw, int64_t rows, int64_t d, int threads) {
    float *scratch = NULL;
    if (gw) {
        scratch = (float *)calloc((size_t)threads * 2 * (size_t)d, sizeof(float));
        if (!scratch) return -1;
    }
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num();
        float *total = gw ? scratch + (size_t)t * 2 * d : NULL; /* this thread's sum of g n */
        float *block = gw ? total + d : NULL;                   /* the current block's */
        int64_t in_block = 0;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < rows; i++) {
            const float *xi = vit5_row(x, i, inner, outer_stride, inner_stride), *gi = g + i * d;
            const float ri = r[i];
            if (gw) {
#pragma omp simd
                for (int64_t j = 0; j < d; j++) block[j] += gi[j] * (xi[j] * ri);
                if (++in_block == ROW_BLOCK) {
#pragma omp simd
                    for (int64_t j = 0; j < d; j++) {
                        total[j] += block[j];
                        block[j] = 0.f;
                    }
                    in_block = 0;
                }
            }
            if (gx) {
                float m = 0.f;
#pragma omp simd reduction(+ : m)
                for (int64_t j = 0; j < d; j++) m += gi[j] * w[j] * (xi[j] * ri);
                m /= (float)d;
                float *oi = gx + i * d;
#pragma omp simd
                for (int64_t j = 0; j < d; j++) oi[j] = (gi[j] * w[j] - (xi[j] * ri) * m) * ri;
            }
        }
        if (gw) {
#pragma omp simd
            for (int64_t j = 0; j < d; j++) total[j] += block[j];
        }
    }
    if (gw) {
        for (int64_t j = 0; j < d; j++) {
            float s = 0.f;
            for (int t = 0; t < threads; t++) s += scratch[(size_t)t * 2 * d + j];
            gw[j] = s;
        }
        free(scratch);
    }
    return 0;
}

/* Complex products of spectra stored as [n, f, 2, r] (real plane, imaginary plane per f):
 * out[i] = a[i] * b[i] (conj: a[i] * conj(b[i])); b_shared: b has one row [1, f, 2, r]. The
 * operations are those of vit5/ops/dftconv.py's PyTorch product, a product then an addcmul_,
 * which PyTorch's CPU kernels evaluate as one fused multiply-add: the same bits. */
void vit5_complex_product(const float *a, const float *b, float *out, int64_t n, int64_t f, int64_t r,
                          int b_shared, int conj, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t row = 0; row < n * f; row++) {
        const float *ar = a + row * 2 * r, *ai = ar + r;
        const float *br = b + (b_shared ? row % f : row) * 2 * r, *bi = br + r;
        float *o_re = out + row * 2 * r, *o_im = o_re + r;
        if (conj) {
#pragma omp simd
            for (int64_t j = 0; j < r; j++) {
                const float re = fmaf(ai[j], bi[j], ar[j] * br[j]);
                const float im = fmaf(-ar[j], bi[j], ai[j] * br[j]);
                o_re[j] = re;
                o_im[j] = im;
            }
        } else {
#pragma omp simd
            for (int64_t j = 0; j < r; j++) {
                const float re = fmaf(-ai[j], bi[j], ar[j] * br[j]);
                const float im = fmaf(ar[j], bi[j], ai[j] * br[j]);
                o_re[j] = re;
                o_im[j] = im;
            }
        }
    }
}

/* acc[0, f, 2, r] += sum_i a[i] * conj(b[i]) over the n rows of [n, f, 2, r] spectra (the kernel
 * gradient of a shared kernel), without writing the n products. Summed in row order. */
void vit5_complex_product_sum(const float *a, const float *b, float *acc, int64_t n, int64_t f, int64_t r,
                              int threads) {
    const int64_t width = 256; /* columns per task: a task's sums stay in registers/L1 */
    const int64_t blocks = (r + width - 1) / width;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t task = 0; task < f * blocks; task++) {
        const int64_t k = task / blocks, j0 = (task % blocks) * width;
        const int64_t j1 = j0 + width < r ? j0 + width : r;
        float *c_re = acc + k * 2 * r, *c_im = c_re + r;
        for (int64_t i = 0; i < n; i++) {
            const float *ar = a + (i * f + k) * 2 * r, *ai = ar + r;
            const float *br = b + (i * f + k) * 2 * r, *bi = br + r;
#pragma omp simd
            for (int64_t j = j0; j < j1; j++) {
                c_re[j] += ar[j] * br[j] + ai[j] * bi[j];
                c_im[j] += ai[j] * br[j] - ar[j] * bi[j];
            }
        }
    }
}

/* Residual with a per-channel scale over [samples, rows, d]: out = x + b * s, with s [samples, d]
 * (s_per_sample) or [d]. out may be x or b (elementwise in place). */
void vit5_scaled_add(const float *x, const float *b, const float *s, float *out, int64_t samples,
                     int64_t rows, int64_t d, int s_per_sample, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < samples * rows; i++) {
        const float *si = s + (s_per_sample ? (i / rows) * d : 0);
        const float *xi = x + i * d, *bi = b + i * d;
        float *oi = out + i * d;
#pragma omp simd
        for (int64_t j = 0; j < d; j++) oi[j] = xi[j] + bi[j] * si[j];
    }
}

/* Backward of vit5_scaled_add: gb = g * s (if gb); ds[samples, d] = sum over rows of g * b per
 * sample (if ds, overwritten). Returns 0, or -1 if scratch memory could not be allocated. */
int vit5_scaled_add_backward(const float *g, const float *b, const float *s, float *gb, float *ds,
                             int64_t samples, int64_t rows, int64_t d, int s_per_sample, int threads) {
    float *scratch = NULL;
    const size_t per_thread = (size_t)(samples + 1) * d; /* sums per sample + the current block */
    if (ds) {
        scratch = (float *)calloc((size_t)threads * per_thread, sizeof(float));
        if (!scratch) return -1;
    }
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num();
        float *total = ds ? scratch + (size_t)t * per_thread : NULL;
        float *block = ds ? total + (size_t)samples * d : NULL;
        int64_t in_block = 0, sample = -1;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < samples * rows; i++) {
            const float *gi = g + i * d, *bi = b + i * d;
            if (gb) {
                const float *si = s + (s_per_sample ? (i / rows) * d : 0);
                float *oi = gb + i * d;
#pragma omp simd
                for (int64_t j = 0; j < d; j++) oi[j] = gi[j] * si[j];
            }
            if (ds) {
                const int64_t here = i / rows;
                if (here != sample || in_block == ROW_BLOCK) {
                    if (sample >= 0) {
                        float *sum = total + sample * d;
#pragma omp simd
                        for (int64_t j = 0; j < d; j++) {
                            sum[j] += block[j];
                            block[j] = 0.f;
                        }
                    }
                    sample = here;
                    in_block = 0;
                }
#pragma omp simd
                for (int64_t j = 0; j < d; j++) block[j] += gi[j] * bi[j];
                in_block++;
            }
        }
        if (ds && sample >= 0) {
            float *sum = total + sample * d;
#pragma omp simd
            for (int64_t j = 0; j < d; j++) sum[j] += block[j];
        }
    }
    if (ds) {
        for (int64_t k = 0; k < samples * d; k++) {
            float sum = 0.f;
            for (int t = 0; t < threads; t++) sum += scratch[(size_t)t * per_thread + k];
            ds[k] = sum;
        }
        free(scratch);
    }
    return 0;
}

/* exp(v) for the gates, written so the compiler vectorises it: v = n ln2 + t (Cody-Waite split
 * of ln2), exp(t) by the Cephes single-precision polynomial (about 1 ulp), 2^n through the
 * exponent bits. Saturates below -87.3 (0) and above 88.7 (FLT_MAX-scale). */
static inline float vit5_exp(float v) {
    v = v < -87.3f ? -87.3f : (v > 88.7f ? 88.7f : v);
    const float n = floorf(v * 1.44269504088896341f + 0.5f);
    const float t = (v - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * t + 1.3981999507e-3f;
    p = p * t + 8.3334519073e-3f;
    p = p * t + 4.1665795894e-2f;
    p = p * t + 1.6666665459e-1f;
    p = p * t + 5.0000001201e-1f;
    p = p * t * t + t + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float vit5_sigmoid(float v) { return 1.0f / (1.0f + vit5_exp(-v)); }

/* Hyena's gates over rows of d (x and gate rows addressed in two levels as vit5_row does, e.g.
 * channel slices of one [B, H, W, 3C] tensor; out contiguous):
 * out = x' * act(gate), act = silu (1: gate * sigmoid(gate)) or sigmoid (2), x' = x with l2 = 0, or
 * x / max(||x||_2, eps) per row with l2 = 1 (then rnorm[i] = 1 / max(||x_i||, eps) is stored). */
void vit5_gate_forward(const float *x, int64_t x_inner, int64_t x_outer_stride, int64_t x_inner_stride,
                       const float *gate, int64_t g_inner, int64_t g_outer_stride, int64_t g_inner_stride,
                       float *out, float *rnorm, int64_t rows, int64_t d, int act, int l2, float eps,
                       int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < rows; i++) {
        const float *xi = vit5_row(x, i, x_inner, x_outer_stride, x_inner_stride);
        const float *ki = vit5_row(gate, i, g_inner, g_outer_stride, g_inner_stride);
        float *oi = out + i * d;
        float scale = 1.0f;
        if (l2) {
            float s = 0.f;
#pragma omp simd reduction(+ : s)
            for (int64_t j = 0; j < d; j++) s += xi[j] * xi[j];
            const float norm = sqrtf(s);
            scale = 1.0f / (norm > eps ? norm : eps);
            rnorm[i] = scale;
        }
        if (act == 1) {
#pragma omp simd
            for (int64_t j = 0; j < d; j++) oi[j] = (xi[j] * scale) * (ki[j] * vit5_sigmoid(ki[j]));
        } else {
#pragma omp simd
            for (int64_t j = 0; j < d; j++) oi[j] = (xi[j] * scale) * vit5_sigmoid(ki[j]);
        }
    }
}

/* Backward of vit5_gate_forward (g contiguous; gx, ggate contiguous, each optional):
 * ggate = g x' act'(gate); gx = g act(gate) for l2 = 0, else r (u - x' <u, x'>) with u = g act(gate)
 * and r = rnorm (the projection term only where ||x|| > eps, as the clamp's derivative says). */
void vit5_gate_backward(const float *x, int64_t x_inner, int64_t x_outer_stride, int64_t x_inner_stride,
                        const float *gate, int64_t g_inner, int64_t g_outer_stride, int64_t g_inner_stride,
                        const float *rnorm, const float *g, float *gx, float *ggate, int64_t rows, int64_t d,
                        int act, int l2, float eps, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < rows; i++) {
        const float *xi = vit5_row(x, i, x_inner, x_outer_stride, x_inner_stride), *gi = g + i * d;
        const float *ki = vit5_row(gate, i, g_inner, g_outer_stride, g_inner_stride);
        const float scale = l2 ? rnorm[i] : 1.0f;
        if (ggate) {
            float *oi = ggate + i * d;
            if (act == 1) {
#pragma omp simd
                for (int64_t j = 0; j < d; j++) {
                    const float sg = vit5_sigmoid(ki[j]);
                    oi[j] = gi[j] * (xi[j] * scale) * (sg * (1.0f + ki[j] * (1.0f - sg)));
                }
            } else {
#pragma omp simd
                for (int64_t j = 0; j < d; j++) {
                    const float sg = vit5_sigmoid(ki[j]);
                    oi[j] = gi[j] * (xi[j] * scale) * (sg * (1.0f - sg));
                }
            }
        }
        if (gx) {
            float *oi = gx + i * d;
            if (act == 1) {
#pragma omp simd
                for (int64_t j = 0; j < d; j++) oi[j] = gi[j] * (ki[j] * vit5_sigmoid(ki[j]));
            } else {
#pragma omp simd
                for (int64_t j = 0; j < d; j++) oi[j] = gi[j] * vit5_sigmoid(ki[j]);
            }
            if (l2) {
                /* oi holds u; project out the normalised direction where the norm was not clamped */
                const float norm = 1.0f / scale;
                float dot = 0.f;
#pragma omp simd reduction(+ : dot)
                for (int64_t j = 0; j < d; j++) dot += oi[j] * (xi[j] * scale);
                if (!(norm > eps)) dot = 0.f;
#pragma omp simd
                for (int64_t j = 0; j < d; j++) oi[j] = scale * (oi[j] - (xi[j] * scale) * dot);
            }
        }
    }
}

/* Batched products with one small shared matrix: out[b] (m x n) = M (m x k) @ X[b] (k x n), X and
 * out contiguous, M read through strides (sm0, sm1), so a transposed view needs no copy. The DFT
 * path's transforms are such products with k of 14 to 54 and n of hundreds to thousands of
 * channels, a shape general GEMM libraries block poorly. Tiles of 4 rows x 64 columns keep 16
 * vector sums in registers over the whole k loop (fused multiply-adds, in k order). */
#define VEC 16
#define TILE_ROWS 4
typedef float vec_t __attribute__((vector_size(VEC * sizeof(float)), aligned(4)));

#if defined(__GNUC__) && !defined(__clang__)
#define FMA_CONTRACT __attribute__((optimize("fp-contract=fast")))
#else
#define FMA_CONTRACT
#endif

#define DEFINE_TILE(NAME, NV)                                                                                  \
    FMA_CONTRACT static void NAME(const float *M, int64_t sm0, int64_t sm1, int64_t k, const float *x,        \
                                  int64_t n, float *o, int64_t rows) {                                        \
        vec_t acc[TILE_ROWS][NV];                                                                              \
        for (int r = 0; r < TILE_ROWS; r++)                                                                    \
            for (int v = 0; v < NV; v++) acc[r][v] = (vec_t){0};                                               \
        for (int64_t kk = 0; kk < k; kk++) {                                                                   \
            vec_t xv[NV];                                                                                      \
            for (int v = 0; v < NV; v++) xv[v] = *(const vec_t *)(x + kk * n + v * VEC);                       \
            for (int r = 0; r < TILE_ROWS; r++) {                                                              \
                const float a = r < rows ? M[r * sm0 + kk * sm1] : 0.f;                                        \
                for (int v = 0; v < NV; v++) acc[r][v] += a * xv[v];                                           \
            }                                                                                                  \
        }                                                                                                      \
        for (int r = 0; r < TILE_ROWS; r++)                                                                    \
            if (r < rows)                                                                                      \
                for (int v = 0; v < NV; v++) *(vec_t *)(o + r * n + v * VEC) = acc[r][v];                      \
    }
DEFINE_TILE(vit5_tile_wide, 4)
DEFINE_TILE(vit5_tile_narrow, 1)

FMA_CONTRACT void vit5_batched_matmul(const float *M, int64_t m, int64_t k, int64_t sm0, int64_t sm1,
                                      const float *X, int64_t n, int64_t batch, float *out, int threads) {
    const int64_t wide = n / (4 * VEC), narrow = (n - wide * 4 * VEC) / VEC, done = (wide * 4 + narrow) * VEC;
    const int64_t blocks = wide + narrow + (done < n ? 1 : 0);
#pragma omp parallel for collapse(2) num_threads(threads) schedule(static)
    for (int64_t b = 0; b < batch; b++) {
        for (int64_t jb = 0; jb < blocks; jb++) {
            const float *x = X + b * k * n;
            float *o = out + b * m * n;
            if (jb < wide + narrow) {
                const int64_t j = jb < wide ? jb * 4 * VEC : (wide * 4 + (jb - wide)) * VEC;
                for (int64_t i = 0; i < m; i += TILE_ROWS) {
                    const int64_t rows = m - i < TILE_ROWS ? m - i : TILE_ROWS;
                    if (jb < wide)
                        vit5_tile_wide(M + i * sm0, sm0, sm1, k, x + j, n, o + i * n + j, rows);
                    else
                        vit5_tile_narrow(M + i * sm0, sm0, sm1, k, x + j, n, o + i * n + j, rows);
                }
            } else { /* the last n % 16 columns */
                for (int64_t i = 0; i < m; i++)
                    for (int64_t j = done; j < n; j++) {
                        float s = 0.f;
                        for (int64_t kk = 0; kk < k; kk++) s += M[i * sm0 + kk * sm1] * x[kk * n + j];
                        o[i * n + j] = s;
                    }
            }
        }
    }
}
