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

/* RoPE over rows of d (x addressed in two levels as vit5_row does; out contiguous [rows, d]); row i
 * belongs to token t = (i / per_token) % tokens of the [tokens, d] tables. transpose = 0:
 * out[c] = x[c] cos[t, c] + (sign[c] x[partner[c]]) sin[t, c], the two products and the sum of
 * vit5/ops/rope.py's PyTorch expression (the same bits); transpose = 1, its adjoint, the
 * backward pass: out[c] = x[c] cos[t, c] + sign[p] (x[p] sin[t, p]) with p = partner[c], as
 * autograd rounds it. partner must be a permutation of 0 .. d - 1. */
void vit5_rope(const float *x, int64_t inner, int64_t outer_stride, int64_t inner_stride, const float *cos_t,
               const float *sin_t, const int32_t *partner, const float *sign, float *out, int64_t rows, int64_t d,
               int64_t per_token, int64_t tokens, int transpose, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < rows; i++) {
        const float *xi = vit5_row(x, i, inner, outer_stride, inner_stride);
        const int64_t t = (i / per_token) % tokens;
        const float *ci = cos_t + t * d, *si = sin_t + t * d;
        float *oi = out + i * d;
        if (!transpose) {
#pragma omp simd
            for (int64_t j = 0; j < d; j++) oi[j] = xi[j] * ci[j] + (sign[j] * xi[partner[j]]) * si[j];
        } else {
#pragma omp simd
            for (int64_t j = 0; j < d; j++) {
                const int32_t q = partner[j];
                oi[j] = xi[j] * ci[j] + sign[q] * (xi[q] * si[q]);
            }
        }
    }
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

/* 2-D zero-padded FFT convolution of channels-last fp32 data (see vit5/ops/fftnative.py).
 *
 * Work item = one sample and one group of 16 channels. The group is packed as 8 complex lanes,
 * z = x[c0 + l] + i x[c0 + 8 + l] (l < 8), into a work buffer of fh x fw elements (one element =
 * 8 real parts then 8 imaginary parts, 64 bytes), so every butterfly is plain vector arithmetic
 * on 8 channels with a scalar twiddle. Forward: radix-2 decimation in frequency along the width
 * (only the fh/2 rows that hold data), then along the height (all columns at once, row pairs),
 * the stages after the first two at a time (radix-2^2 quads: the same butterflies, half the
 * loads and stores); the spectrum comes out in bit-reversed order on both axes. Each output
 * spectrum element W[k] = Z[k] A[k] + conj(Z[-k]) B[k] separates and convolves both halves of
 * the packing at once (A = (Sc + Sd) / 2, B = (Sc - Sd) / 2 for the kernel spectra Sc, Sd of the
 * two channels, crop shift and 1 / (fh fw) included; k and -k are handled together through the
 * bit-reversed partner tables, and as the taps are real, A[-k] = conj A[k] and B[-k] = conj B[k],
 * so the kernel spectrum holds one frequency of each pair, in the order they are visited).
 * Inverse: decimation in time along the
 * height, then the width, each keeping only the first nh (nw) outputs in its last stage; the real
 * parts are channels c0.., the imaginary parts channels c0 + 8... The input needs nh <= fh / 2 and
 * nw <= fw / 2 (the first forward stage reads only the first half). */
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
#define EL 16 /* floats per work-buffer element */
#define VIT5_FFT_MAX 1024 /* largest transform per axis (vit5/ops/fftnative.py: MAX_SIZE); tables on the stack */
#define V(p) (*(v8 *)(p))
#define VU(p) (*(v8u *)(p))

static inline v8 vit5_bcast(float s) { return (v8){s, s, s, s, s, s, s, s}; }

/* One butterfly on values in registers (real and imaginary parts of 8 lanes each): decimation in
 * frequency (a, b) -> (a + b, (a - b) w), and decimation in time with the conjugate twiddle
 * (a, b) -> (a + b w*, a - b w*). */
static inline void vit5_dif(v8 *ar, v8 *ai, v8 *br, v8 *bi, v8 wr, v8 wi) {
    const v8 dr = *ar - *br, di = *ai - *bi;
    *ar = *ar + *br;
    *ai = *ai + *bi;
    *br = dr * wr - di * wi;
    *bi = dr * wi + di * wr;
}

static inline void vit5_dit(v8 *ar, v8 *ai, v8 *br, v8 *bi, v8 wr, v8 wi) {
    const v8 tr = *br * wr + *bi * wi, ti = *bi * wr - *br * wi;
    *br = *ar - tr;
    *bi = *ai - ti;
    *ar = *ar + tr;
    *ai = *ai + ti;
}

/* Butterflies of one stage over `cols` elements side by side (a row pair on the height axis,
 * cols = 1 along the width). */
static inline void vit5_dif_pair(float *a, float *b, int64_t cols, float wr, float wi) {
    const v8 vr = vit5_bcast(wr), vi = vit5_bcast(wi);
    for (int64_t c = 0; c < cols; c++, a += EL, b += EL) {
        v8 ar = V(a), ai = V(a + 8), br = V(b), bi = V(b + 8);
        vit5_dif(&ar, &ai, &br, &bi, vr, vi);
        V(a) = ar, V(a + 8) = ai, V(b) = br, V(b + 8) = bi;
    }
}

static inline void vit5_dit_pair(float *a, float *b, int64_t cols, float wr, float wi) {
    const v8 vr = vit5_bcast(wr), vi = vit5_bcast(wi);
    for (int64_t c = 0; c < cols; c++, a += EL, b += EL) {
        v8 ar = V(a), ai = V(a + 8), br = V(b), bi = V(b + 8);
        vit5_dit(&ar, &ai, &br, &bi, vr, vi);
        V(a) = ar, V(a + 8) = ai, V(b) = br, V(b + 8) = bi;
    }
}

/* Two stages at once on a quad of points (a, b, c, d) over `cols` elements, the intermediate
 * values kept in registers (half the loads and stores of two passes, the same operations and
 * bits). Decimation in frequency, points (j, j + h, j + m, j + m + h) of a block of 2m (h = m /
 * 2): span m on (a, c) with w1 and (b, d) with w2, then span h on (a, b) and (c, d) with w3.
 * Decimation in time, points (j, j + m, j + 2m, j + 3m) of a block of 4m: span m on (a, b) and
 * (c, d) with w1*, then span 2m on (a, c) with w2* and (b, d) with w3*. w: w1, w2, w3 as (re, im). */
static inline void vit5_quad(float *a, float *b, float *c, float *d, int64_t cols, const float *w, int dit) {
    const v8 w1r = vit5_bcast(w[0]), w1i = vit5_bcast(w[1]), w2r = vit5_bcast(w[2]), w2i = vit5_bcast(w[3]);
    const v8 w3r = vit5_bcast(w[4]), w3i = vit5_bcast(w[5]);
    for (int64_t k = 0; k < cols; k++, a += EL, b += EL, c += EL, d += EL) {
        v8 ar = V(a), ai = V(a + 8), br = V(b), bi = V(b + 8), cr = V(c), ci = V(c + 8), dr = V(d), di = V(d + 8);
        if (dit) {
            vit5_dit(&ar, &ai, &br, &bi, w1r, w1i);
            vit5_dit(&cr, &ci, &dr, &di, w1r, w1i);
            vit5_dit(&ar, &ai, &cr, &ci, w2r, w2i);
            vit5_dit(&br, &bi, &dr, &di, w3r, w3i);
        } else {
            vit5_dif(&ar, &ai, &cr, &ci, w1r, w1i);
            vit5_dif(&br, &bi, &dr, &di, w2r, w2i);
            vit5_dif(&ar, &ai, &br, &bi, w3r, w3i);
            vit5_dif(&cr, &ci, &dr, &di, w3r, w3i);
        }
        V(a) = ar, V(a + 8) = ai, V(b) = br, V(b + 8) = bi;
        V(c) = cr, V(c + 8) = ci, V(d) = dr, V(d + 8) = di;
    }
}

/* Forward transform of n points spaced `st` floats apart, `cols` side by side; unless `full`, points
 * n/2.. are zero on entry (not read). tw: cos, sin of -2 pi j / n for j < n / 2. */
static void vit5_fft_forward(float *p, int64_t n, int64_t st, int64_t cols, int full, const float *twr,
                             const float *twi) {
    int64_t m = n / 2;
    for (int64_t j = 0; j < m && full; j++) vit5_dif_pair(p + j * st, p + (j + m) * st, cols, twr[j], twi[j]);
    for (int64_t j = 0; j < m && !full; j++) { /* first stage: b = 0, so (a, b) -> (a, a w) */
        const v8 vr = vit5_bcast(twr[j]), vi = vit5_bcast(twi[j]);
        float *a = p + j * st, *b = p + (j + m) * st;
        for (int64_t c = 0; c < cols; c++, a += EL, b += EL) {
            const v8 ar = V(a), ai = V(a + 8);
            V(b) = ar * vr - ai * vi;
            V(b + 8) = ar * vi + ai * vr;
        }
    }
    for (m = n / 4; m >= 2; m /= 4) { /* the other stages two at a time: spans m and m / 2 */
        const int64_t step = n / (2 * m), h = m / 2;
        for (int64_t s = 0; s < n; s += 2 * m)
            for (int64_t j = 0; j < h; j++) {
                const float w[6] = {twr[j * step], twi[j * step], twr[(j + h) * step], twi[(j + h) * step],
                                    twr[2 * j * step], twi[2 * j * step]};
                vit5_quad(p + (s + j) * st, p + (s + j + h) * st, p + (s + j + m) * st, p + (s + j + m + h) * st, cols,
                          w, 0);
            }
    }
    if (m == 1) /* an odd stage left: span 1 */
        for (int64_t s = 0; s < n; s += 2) vit5_dif_pair(p + s * st, p + (s + 1) * st, cols, twr[0], twi[0]);
}

/* Inverse (unscaled) transform from bit-reversed order; only points < keep are final (all of them
 * when keep > n / 2). */
static void vit5_fft_inverse(float *p, int64_t n, int64_t st, int64_t cols, int64_t keep, const float *twr,
                             const float *twi) {
    int64_t m = 1;
    for (; 2 * m < n / 2; m *= 4) { /* all but the last stage two at a time: spans m and 2m */
        const int64_t step = n / (4 * m);
        for (int64_t s = 0; s < n; s += 4 * m)
            for (int64_t j = 0; j < m; j++) {
                const float w[6] = {twr[2 * j * step], twi[2 * j * step], twr[j * step], twi[j * step],
                                    twr[(j + m) * step], twi[(j + m) * step]};
                vit5_quad(p + (s + j) * st, p + (s + j + m) * st, p + (s + j + 2 * m) * st,
                          p + (s + j + 3 * m) * st, cols, w, 1);
            }
    }
    if (m < n / 2) { /* an odd stage left before the last */
        const int64_t step = n / (2 * m);
        for (int64_t s = 0; s < n; s += 2 * m)
            for (int64_t j = 0; j < m; j++)
                vit5_dit_pair(p + (s + j) * st, p + (s + j + m) * st, cols, twr[j * step], twi[j * step]);
    }
    m = n / 2;
    if (keep > m) { /* every output: the full last stage */
        for (int64_t j = 0; j < m; j++) vit5_dit_pair(p + j * st, p + (j + m) * st, cols, twr[j], twi[j]);
        return;
    }
    for (int64_t j = 0; j < keep; j++) { /* last stage: only a + b w* */
        const v8 vr = vit5_bcast(twr[j]), vi = vit5_bcast(twi[j]);
        float *a = p + j * st, *b = p + (j + m) * st;
        for (int64_t c = 0; c < cols; c++, a += EL, b += EL) {
            const v8 br = V(b), bi = V(b + 8);
            V(a) = V(a) + (br * vr + bi * vi);
            V(a + 8) = V(a + 8) + (bi * vr - br * vi);
        }
    }
}

static void vit5_twiddles(int64_t n, float *re, float *im) {
    for (int64_t j = 0; j < n / 2; j++) {
        const double angle = -2.0 * 3.14159265358979323846 * (double)j / (double)n;
        re[j] = (float)cos(angle);
        im[j] = (float)sin(angle);
    }
}

/* v with its log2(n) low bits reversed (n a power of two): a frequency's bit-reversed position and back. */
static int64_t vit5_bit_reverse(int64_t v, int64_t n) {
    int64_t r = 0;
    for (int64_t m = n >> 1; m > 0; m >>= 1, v >>= 1) r = (r << 1) | (v & 1);
    return r;
}

/* Bit-reversed position of the partner frequency -k of the frequency at bit-reversed position p. */
static void vit5_partners(int64_t n, int32_t *partner) {
    for (int64_t p = 0; p < n; p++) partner[p] = (int32_t)vit5_bit_reverse((n - vit5_bit_reverse(p, n)) % n, n);
}

/* Twiddles and partner tables of fh x fw transforms (on the caller's stack, shared by its threads). */
typedef struct {
    float twhr[VIT5_FFT_MAX / 2], twhi[VIT5_FFT_MAX / 2], twwr[VIT5_FFT_MAX / 2], twwi[VIT5_FFT_MAX / 2];
    int32_t parth[VIT5_FFT_MAX], partw[VIT5_FFT_MAX];
} vit5_fft_tables;

/* Fills t; -1 unless fh and fw are powers of two in [4, VIT5_FFT_MAX]. */
static int vit5_fft_tables_init(vit5_fft_tables *t, int64_t fh, int64_t fw) {
    if (fh < 4 || fw < 4 || (fh & (fh - 1)) || (fw & (fw - 1)) || fh > VIT5_FFT_MAX || fw > VIT5_FFT_MAX) return -1;
    vit5_twiddles(fh, t->twhr, t->twhi);
    vit5_twiddles(fw, t->twwr, t->twwi);
    vit5_partners(fh, t->parth);
    vit5_partners(fw, t->partw);
    return 0;
}

/* exp(-2 pi i s k / n) at the bit-reversed position of every frequency k. */
static void vit5_shift_ramp(int64_t n, int64_t s, float *re, float *im) {
    for (int64_t p = 0; p < n; p++) {
        const int64_t k = vit5_bit_reverse(p, n);
        const double angle = -2.0 * 3.14159265358979323846 * (double)((s * k) % n) / (double)n;
        re[p] = (float)cos(angle);
        im[p] = (float)sin(angle);
    }
}

/* Packs 16 channels of one sample (xs: its first channel, rows sxh and columns sxw apart, `lanes`
 * of them real) as 8 complex lanes into buf and transforms it (bit-reversed spectrum). */
static void vit5_fft_load_forward(const float *xs, int64_t sxh, int64_t sxw, int64_t lanes, int64_t nh, int64_t nw,
                                  int64_t fh, int64_t fw, float *buf, const float *twhr, const float *twhi,
                                  const float *twwr, const float *twwi) {
    const int64_t row = fw * EL;
    for (int64_t h = 0; h < nh; h++) { /* rows < nh, columns < nw; zeros up to fw / 2 */
        float *e = buf + h * row;
        const float *xr = xs + h * sxh;
        if (lanes == 16) {
            for (int64_t w = 0; w < nw; w++, e += EL) {
                V(e) = VU(xr + w * sxw);
                V(e + 8) = VU(xr + w * sxw + 8);
            }
        } else {
            for (int64_t w = 0; w < nw; w++, e += EL)
                for (int l = 0; l < 16; l++) e[l] = l < lanes ? xr[w * sxw + l] : 0.f;
        }
        memset(buf + h * row + nw * EL, 0, (size_t)(fw / 2 - nw) * EL * sizeof(float));
        vit5_fft_forward(buf + h * row, fw, EL, 1, 0, twwr, twwi);
    }
    memset(buf + nh * row, 0, (size_t)(fh / 2 - nh) * row * sizeof(float)); /* zero rows up to fh / 2 */
    vit5_fft_forward(buf, fh, row, fw, 0, twhr, twhi);
}

/* Frequencies per group the spectrum stores: one of each pair (k, -k), the four that are their own
 * partner once (A and B are Hermitian, so A[-k] = conj A[k]). */
static inline int64_t vit5_spectrum_entries(int64_t fh, int64_t fw) { return fh * fw / 2 + 2; }

/* x [B, nh, nw, C] with strides (sxb, sxh, sxw, 1); spec [ceil(C / 16), fh fw / 2 + 2, 4, 8] (A re,
 * A im, B re, B im per stored frequency: the bit-reversed positions p in row-major order whose
 * partner q is not before p); out [B, nh, nw, C] with strides (sob, soh, sow, 1):
 * out = y, or shortcut[c] * x + y when shortcut is not NULL (two roundings, as PyTorch's
 * shortcut * x + y). work: threads x fh x fw x 16 floats, 64-byte aligned. Returns 0, or -1 for
 * sizes it does not take (not powers of two >= 4, or more than half the FFT size of signal). */
int vit5_fft_conv2d(const float *x, int64_t batch, int64_t nh, int64_t nw, int64_t channels, int64_t sxb,
                    int64_t sxh, int64_t sxw, const float *spec, int64_t fh, int64_t fw, const float *shortcut,
                    float *out, int64_t sob, int64_t soh, int64_t sow, float *work, int threads) {
    vit5_fft_tables tab;
    if (vit5_fft_tables_init(&tab, fh, fw) || 2 * nh > fh ||
        2 * nw > fw || nh < 1 || nw < 1)
        return -1;
    const int64_t groups = (channels + 15) / 16, items = groups * batch, row = fw * EL;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t item = 0; item < items; item++) {
        const int64_t g = item / batch, b = item % batch, c0 = g * 16;
        const int64_t lanes = channels - c0 < 16 ? channels - c0 : 16;
        float *buf = work + (int64_t)omp_get_thread_num() * fh * row;
        const float *xs = x + b * sxb + c0;
        vit5_fft_load_forward(xs, sxh, sxw, lanes, nh, nw, fh, fw, buf, tab.twhr, tab.twhi, tab.twwr, tab.twwi);
        /* spectral product, k and -k together */
        const float *sp_ = spec + g * vit5_spectrum_entries(fh, fw) * 32; /* read in order */
        for (int64_t ph = 0; ph < fh; ph++) {
            for (int64_t pw = 0; pw < fw; pw++) {
                const int64_t p = ph * fw + pw, q = (int64_t)tab.parth[ph] * fw + tab.partw[pw];
                if (q < p) continue;
                float *zp = buf + p * EL, *zq = buf + q * EL;
                const v8 pr = V(zp), pi = V(zp + 8), qr = V(zq), qi = V(zq + 8);
                const v8 apr = VU(sp_), api = VU(sp_ + 8), bpr = VU(sp_ + 16), bpi = VU(sp_ + 24);
                /* W[p] = Z[p] A[p] + conj(Z[q]) B[p] */
                V(zp) = (pr * apr - pi * api) + (qr * bpr + qi * bpi);
                V(zp + 8) = (pr * api + pi * apr) + (qr * bpi - qi * bpr);
                if (q != p) { /* A and B are Hermitian: A[q] = conj A[p] exactly, as the spectrum stores it */
                    const v8 aqr = apr, aqi = -api, bqr = bpr, bqi = -bpi;
                    V(zq) = (qr * aqr - qi * aqi) + (pr * bqr + pi * bqi);
                    V(zq + 8) = (qr * aqi + qi * aqr) + (pr * bqi - pi * bqr);
                }
                sp_ += 32;
            }
        }
        vit5_fft_inverse(buf, fh, row, fw, nh, tab.twhr, tab.twhi);
        float *os = out + b * sob + c0;
        for (int64_t h = 0; h < nh; h++) {
            float *e = buf + h * row;
            vit5_fft_inverse(e, fw, EL, 1, nw, tab.twwr, tab.twwi);
            float *orow = os + h * soh;
            const float *xr = xs + h * sxh;
            for (int64_t w = 0; w < nw; w++, e += EL) {
                if (lanes == 16) {
                    v8 lo = V(e), hi = V(e + 8);
                    if (shortcut) {
                        lo = VU(shortcut + c0) * VU(xr + w * sxw) + lo;
                        hi = VU(shortcut + c0 + 8) * VU(xr + w * sxw + 8) + hi;
                    }
                    VU(orow + w * sow) = lo;
                    VU(orow + w * sow + 8) = hi;
                } else {
                    for (int l = 0; l < lanes; l++)
                        orow[w * sow + l] = shortcut ? shortcut[c0 + l] * xr[w * sxw + l] + e[l] : e[l];
                }
            }
        }
    }
    return 0;
}

/* The kernel spectrum vit5_fft_conv2d reads: k [C, kh, kw] with strides (skc, skh, skw); spec
 * [ceil(C / 16), fh fw / 2 + 2, 4, 8]. Per group, the taps a = (k_c + k_d) s and b = (k_c - k_d) s
 * (s = 1 / (2 fh fw); c = c0 + l, d = c0 + 8 + l) are shifted back by the crop start (sh, sw),
 * zero padded to fh x fw and transformed together as a + i b; A and B are separated from the
 * packed spectrum through the partner tables and stored for one frequency of each pair (k, -k), in
 * the order vit5_fft_conv2d reads them. work: threads x fh x fw x 16
 * floats. Returns 0, or -1 for sizes it does not take. */
int vit5_fft_kernel_spectrum(const float *k, int64_t channels, int64_t kh, int64_t kw, int64_t skc, int64_t skh,
                             int64_t skw, int64_t sh, int64_t sw, int64_t fh, int64_t fw, float *spec, float *work,
                             int threads) {
    vit5_fft_tables tab;
    if (vit5_fft_tables_init(&tab, fh, fw) || kh > fh || kw > fw ||
        sh < 0 || sw < 0 || sh >= fh || sw >= fw)
        return -1;
    const int64_t groups = (channels + 15) / 16, row = fw * EL;
    const float scale = 0.5f / (float)(fh * fw);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t g = 0; g < groups; g++) {
        const int64_t c0 = g * 16, lanes = channels - c0 < 16 ? channels - c0 : 16;
        float *buf = work + (int64_t)omp_get_thread_num() * fh * row;
        memset(buf, 0, (size_t)(fh * row) * sizeof(float));
        for (int64_t i = 0; i < fh; i++) {
            const int64_t ti = (i + sh) % fh;
            if (ti >= kh) continue;
            for (int64_t j = 0; j < fw; j++) {
                const int64_t tj = (j + sw) % fw;
                if (tj >= kw) continue;
                float *e = buf + i * row + j * EL;
                const float *t = k + ti * skh + tj * skw + c0 * skc;
                for (int l = 0; l < 8; l++) {
                    const float kc = l < lanes ? t[l * skc] : 0.f, kd = l + 8 < lanes ? t[(l + 8) * skc] : 0.f;
                    e[l] = (kc + kd) * scale;
                    e[l + 8] = (kc - kd) * scale;
                }
            }
        }
        for (int64_t i = 0; i < fh; i++) vit5_fft_forward(buf + i * row, fw, EL, 1, 1, tab.twwr, tab.twwi);
        vit5_fft_forward(buf, fh, row, fw, 1, tab.twhr, tab.twhi);
        float *o = spec + g * vit5_spectrum_entries(fh, fw) * 32;
        const v8 half = vit5_bcast(0.5f);
        for (int64_t ph = 0; ph < fh; ph++)
            for (int64_t pw = 0; pw < fw; pw++) {
                const int64_t p = ph * fw + pw, q = (int64_t)tab.parth[ph] * fw + tab.partw[pw];
                if (q < p) continue;
                const float *zp = buf + p * EL, *zq = buf + q * EL;
                const v8 zr = V(zp), zi = V(zp + 8), qr = V(zq), qi = V(zq + 8);
                VU(o) = (zr + qr) * half;      /* A = (Z[p] + conj Z[q]) / 2 */
                VU(o + 8) = (zi - qi) * half;
                VU(o + 16) = (zi + qi) * half; /* B = (Z[p] - conj Z[q]) / 2i */
                VU(o + 24) = (qr - zr) * half;
                o += 32;
            }
    }
    return 0;
}

/* Gradient of vit5_fft_conv2d's convolution with respect to the kernel, summed over the batch:
 * dk[c, t] = sum_b sum_i g[b, i, c] x[b, i + s - t, c] for taps t < (kh, kw), crop start s = (sh,
 * sw). x and g [B, nh, nw, C] with strides (sxb, sxh, sxw, 1) and (sgb, sgh, sgw, 1); dk [C, kh,
 * kw] with strides (skc, skh, skw). Per group of 16 channels both signals are transformed packed
 * (as vit5_fft_conv2d does), the two halves separated per frequency pair, conj(X) G summed over
 * the batch (packed again as Pc + i Pd), shifted by the crop start and transformed back in full.
 * work: threads x 3 x fh x fw x 16 floats. Returns 0, or -1 for sizes it does not take. */
int vit5_fft_conv2d_kernel_grad(const float *x, const float *g, int64_t batch, int64_t nh, int64_t nw,
                                int64_t channels, int64_t sxb, int64_t sxh, int64_t sxw, int64_t sgb, int64_t sgh,
                                int64_t sgw, int64_t sh, int64_t sw, int64_t fh, int64_t fw, float *dk, int64_t kh,
                                int64_t kw, int64_t skc, int64_t skh, int64_t skw, float *work, int threads) {
    vit5_fft_tables tab;
    if (vit5_fft_tables_init(&tab, fh, fw) || 2 * nh > fh ||
        2 * nw > fw || nh < 1 || nw < 1 || kh > fh || kw > fw || kh < 1 || kw < 1)
        return -1;
    float rhr[VIT5_FFT_MAX], rhi[VIT5_FFT_MAX], rwr[VIT5_FFT_MAX], rwi[VIT5_FFT_MAX];
    vit5_shift_ramp(fh, sh, rhr, rhi);
    vit5_shift_ramp(fw, sw, rwr, rwi);
    const int64_t groups = (channels + 15) / 16, row = fw * EL, plane = fh * row;
    const v8 half = vit5_bcast(0.5f);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t grp = 0; grp < groups; grp++) {
        const int64_t c0 = grp * 16, lanes = channels - c0 < 16 ? channels - c0 : 16;
        float *bx = work + (int64_t)omp_get_thread_num() * 3 * plane, *bg = bx + plane, *acc = bg + plane;
        memset(acc, 0, (size_t)plane * sizeof(float));
        for (int64_t b = 0; b < batch; b++) {
            vit5_fft_load_forward(x + b * sxb + c0, sxh, sxw, lanes, nh, nw, fh, fw, bx, tab.twhr, tab.twhi, tab.twwr, tab.twwi);
            vit5_fft_load_forward(g + b * sgb + c0, sgh, sgw, lanes, nh, nw, fh, fw, bg, tab.twhr, tab.twhi, tab.twwr, tab.twwi);
            for (int64_t ph = 0; ph < fh; ph++)
                for (int64_t pw = 0; pw < fw; pw++) {
                    const int64_t p = ph * fw + pw, q = (int64_t)tab.parth[ph] * fw + tab.partw[pw];
                    if (q < p) continue;
                    const float *xp = bx + p * EL, *xq = bx + q * EL, *gp = bg + p * EL, *gq = bg + q * EL;
                    /* halves at p: C = (Z[p] + conj Z[q]) / 2, D = (Z[p] - conj Z[q]) / 2i */
                    const v8 xcr = (V(xp) + V(xq)) * half, xci = (V(xp + 8) - V(xq + 8)) * half;
                    const v8 xdr = (V(xp + 8) + V(xq + 8)) * half, xdi = (V(xq) - V(xp)) * half;
                    const v8 gcr = (V(gp) + V(gq)) * half, gci = (V(gp + 8) - V(gq + 8)) * half;
                    const v8 gdr = (V(gp + 8) + V(gq + 8)) * half, gdi = (V(gq) - V(gp)) * half;
                    /* Pc = conj(Xc) Gc, Pd = conj(Xd) Gd at p; at q their conjugates */
                    const v8 pcr = xcr * gcr + xci * gci, pci = xcr * gci - xci * gcr;
                    const v8 pdr = xdr * gdr + xdi * gdi, pdi = xdr * gdi - xdi * gdr;
                    float *ap = acc + p * EL, *aq = acc + q * EL;
                    V(ap) = V(ap) + (pcr - pdi); /* Pc + i Pd */
                    V(ap + 8) = V(ap + 8) + (pci + pdr);
                    if (q != p) {
                        V(aq) = V(aq) + (pcr + pdi); /* conj(Pc) + i conj(Pd) */
                        V(aq + 8) = V(aq + 8) + (pdr - pci);
                    }
                }
        }
        /* shift by the crop start (output gradient placed at s) and scale, then invert in full */
        const float scale = 1.0f / (float)(fh * fw);
        for (int64_t ph = 0; ph < fh; ph++)
            for (int64_t pw = 0; pw < fw; pw++) {
                const float rr = rhr[ph] * rwr[pw] - rhi[ph] * rwi[pw], ri = rhr[ph] * rwi[pw] + rhi[ph] * rwr[pw];
                const v8 vr = vit5_bcast(rr * scale), vi = vit5_bcast(ri * scale);
                float *a = acc + (ph * fw + pw) * EL;
                const v8 ar = V(a), ai = V(a + 8);
                V(a) = ar * vr - ai * vi;
                V(a + 8) = ar * vi + ai * vr;
            }
        vit5_fft_inverse(acc, fh, row, fw, kh, tab.twhr, tab.twhi);
        for (int64_t t = 0; t < kh; t++) {
            float *e = acc + t * row;
            vit5_fft_inverse(e, fw, EL, 1, kw, tab.twwr, tab.twwi);
            for (int64_t u = 0; u < kw; u++, e += EL)
                for (int l = 0; l < lanes; l++) dk[(c0 + l) * skc + t * skh + u * skw] = e[l];
        }
    }
    return 0;
}
