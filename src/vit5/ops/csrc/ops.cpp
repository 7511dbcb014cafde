// The vit5:: operators' schemas and their elementwise CPU kernels (RMSNorm, Hyena's gates,
// residual updates, RoPE, spectral products); the FFT convolution's kernels are in fft.cpp. On a
// CPU, the elementwise chains around the matrix products are bound by memory traffic: each kernel
// does in one or two passes what a chain of PyTorch ops does in five to ten.
// All take fp32 CPU tensors; Python (vit5/ops/kernels.py) adds the fake implementations and the
// autograd formulas.
#include "common.h"

#include <cmath>
#include <vector>

namespace vit5 {
namespace {

// ---- RMSNorm ------------------------------------------------------------------------------------

// r[i] = 1 / sqrt(mean_j x[i,j]^2 + eps); y = w * (x * r).
std::tuple<at::Tensor, at::Tensor> rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
    check_float(x, "vit5::rms_norm", "x");
    check_float(weight, "vit5::rms_norm", "weight");
    TORCH_CHECK(x.dim() >= 1 && weight.dim() == 1 && weight.size(0) == x.size(-1),
                "vit5::rms_norm: weight of shape ", weight.sizes(), " for x of shape ", x.sizes());
    const Rows xr = rows_of(x);
    const at::Tensor wc = weight.contiguous();
    at::Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
    std::vector<int64_t> r_shape(x.sizes().begin(), x.sizes().end());
    r_shape.back() = 1;
    at::Tensor r = at::empty(r_shape, x.options().memory_format(at::MemoryFormat::Contiguous));
    const int64_t d = xr.d;
    const float* w = wc.const_data_ptr<float>();
    float* yp = y.data_ptr<float>();
    float* rp = r.data_ptr<float>();
    const float e = static_cast<float>(eps);
    at::parallel_for(0, xr.count, grain_rows(d), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; i++) {
            const float* xi = xr.row(i);
            Vec acc(0.f);
            for (int64_t j = 0; j < d; j += kLanes) {
                const Vec v = Vec::loadu(xi + j, std::min(kLanes, d - j));
                acc = acc + v * v;
            }
            const float ri = 1.0f / std::sqrt(lane_sum(acc) / static_cast<float>(d) + e);
            rp[i] = ri;
            const Vec vr(ri);
            float* yi = yp + i * d;
            for (int64_t j = 0; j < d; j += kLanes) {
                const int64_t n = std::min(kLanes, d - j);
                (Vec::loadu(w + j, n) * (Vec::loadu(xi + j, n) * vr)).store(yi + j, n);
            }
        }
    });
    return {y, r};
}

// Rows per piece of the weight-gradient sums: a function of the shape only (deterministic).
int64_t reduction_block(int64_t rows) { return std::max<int64_t>(64, (rows + 255) / 256); }

// With n = x r: gx = r (g w - n mean_j(g w n)); gw = sum_i g n (summed per block of rows, the blocks
// in order). An unneeded gradient is an empty tensor.
std::tuple<at::Tensor, at::Tensor> rms_norm_backward(const at::Tensor& x, const at::Tensor& weight,
                                                     const at::Tensor& r, const at::Tensor& grad, bool need_x,
                                                     bool need_weight) {
    const char* op = "vit5::rms_norm_backward";
    check_float(x, op, "x");
    check_float(weight, op, "weight");
    check_float(r, op, "r");
    check_float(grad, op, "grad");
    const Rows xr = rows_of(x);
    const int64_t d = xr.d, rows = xr.count;
    const at::Tensor wc = weight.contiguous(), rc = r.contiguous(), gc = grad.contiguous();
    at::Tensor grad_x = at::empty(need_x ? x.sizes() : at::IntArrayRef{0}, x.options().memory_format(at::MemoryFormat::Contiguous));
    at::Tensor grad_w = at::empty(need_weight ? weight.sizes() : at::IntArrayRef{0}, weight.options());
    const float *w = wc.const_data_ptr<float>(), *rp = rc.const_data_ptr<float>(), *g = gc.const_data_ptr<float>();
    if (need_x) {
        float* gx = grad_x.data_ptr<float>();
        at::parallel_for(0, rows, grain_rows(d), [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; i++) {
                const float *xi = xr.row(i), *gi = g + i * d;
                const Vec vr(rp[i]);
                Vec acc(0.f);
                for (int64_t j = 0; j < d; j += kLanes) {
                    const int64_t n = std::min(kLanes, d - j);
                    acc = acc + Vec::loadu(gi + j, n) * Vec::loadu(w + j, n) * (Vec::loadu(xi + j, n) * vr);
                }
                const Vec m(lane_sum(acc) / static_cast<float>(d));
                float* oi = gx + i * d;
                for (int64_t j = 0; j < d; j += kLanes) {
                    const int64_t n = std::min(kLanes, d - j);
                    const Vec nx = Vec::loadu(xi + j, n) * vr;
                    ((Vec::loadu(gi + j, n) * Vec::loadu(w + j, n) - nx * m) * vr).store(oi + j, n);
                }
            }
        });
    }
    if (need_weight) {
        const int64_t block = reduction_block(rows), blocks = (rows + block - 1) / block;
        std::vector<float> partial(static_cast<size_t>(blocks * d), 0.f);
        at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
            for (int64_t b = b0; b < b1; b++) {
                float* sum = partial.data() + b * d;
                for (int64_t i = b * block; i < std::min(rows, (b + 1) * block); i++) {
                    const float *xi = xr.row(i), *gi = g + i * d;
                    const Vec vr(rp[i]);
                    for (int64_t j = 0; j < d; j += kLanes) {
                        const int64_t n = std::min(kLanes, d - j);
                        (Vec::loadu(sum + j, n) + Vec::loadu(gi + j, n) * (Vec::loadu(xi + j, n) * vr)).store(sum + j, n);
                    }
                }
            }
        });
        float* gw = grad_w.data_ptr<float>();
        for (int64_t j = 0; j < d; j++) gw[j] = 0.f;
        for (int64_t b = 0; b < blocks; b++)
            for (int64_t j = 0; j < d; j++) gw[j] += partial[b * d + j];
    }
    return {grad_x, grad_w};
}

// ---- Hyena's gates --------------------------------------------------------------------------------

inline Vec sigmoid(const Vec& v) {
    const Vec one(1.f);
    return one / (one + v.neg().exp_u20());
}

// out = x' * act(g), act = silu (1) or sigmoid (2); x' = x, or x / max(||x||, eps) per row with
// l2_eps (then rnorm[i] = 1 / max(||x_i||, eps)).
std::tuple<at::Tensor, at::Tensor> gate(const at::Tensor& x, const at::Tensor& g, int64_t activation,
                                        std::optional<double> l2_eps) {
    const char* op = "vit5::gate";
    check_float(x, op, "x");
    check_float(g, op, "g");
    TORCH_CHECK(x.sizes() == g.sizes(), op, ": x of shape ", x.sizes(), " and g of shape ", g.sizes());
    TORCH_CHECK(activation == 1 || activation == 2, op, ": activation code ", activation, " (1 silu, 2 sigmoid)");
    const Rows xr = rows_of(x), gr = rows_of(g);
    const int64_t d = xr.d, rows = xr.count;
    const bool l2 = l2_eps.has_value();
    const float eps = l2 ? static_cast<float>(*l2_eps) : 0.f;
    at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
    at::Tensor rnorm = at::empty({l2 ? rows : 0}, x.options());
    float* o = out.data_ptr<float>();
    float* rn = rnorm.data_ptr<float>();
    at::parallel_for(0, rows, grain_rows(d), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; i++) {
            const float *xi = xr.row(i), *ki = gr.row(i);
            float scale = 1.0f;
            if (l2) {
                Vec acc(0.f);
                for (int64_t j = 0; j < d; j += kLanes) {
                    const Vec v = Vec::loadu(xi + j, std::min(kLanes, d - j));
                    acc = acc + v * v;
                }
                const float norm = std::sqrt(lane_sum(acc));
                scale = 1.0f / (norm > eps ? norm : eps);
                rn[i] = scale;
            }
            const Vec vs(scale);
            float* oi = o + i * d;
            for (int64_t j = 0; j < d; j += kLanes) {
                const int64_t n = std::min(kLanes, d - j);
                const Vec k = Vec::loadu(ki + j, n);
                const Vec act = activation == 1 ? k * sigmoid(k) : sigmoid(k);
                ((Vec::loadu(xi + j, n) * vs) * act).store(oi + j, n);
            }
        }
    });
    return {out, rnorm};
}

// ggate = grad x' act'(g); gx = grad act(g), or with l2_eps r (u - x' <u, x'>) with u = grad act(g)
// (the projection only where ||x|| > eps, as the clamp's derivative says).
std::tuple<at::Tensor, at::Tensor> gate_backward(const at::Tensor& x, const at::Tensor& g, const at::Tensor& rnorm,
                                                 const at::Tensor& grad, int64_t activation,
                                                 std::optional<double> l2_eps, bool need_x, bool need_g) {
    const char* op = "vit5::gate_backward";
    check_float(x, op, "x");
    check_float(g, op, "g");
    check_float(grad, op, "grad");
    check_float(rnorm, op, "rnorm");
    const Rows xr = rows_of(x), gr = rows_of(g);
    const int64_t d = xr.d, rows = xr.count;
    const bool l2 = l2_eps.has_value();
    const float eps = l2 ? static_cast<float>(*l2_eps) : 0.f;
    const at::Tensor gc = grad.contiguous(), rc = rnorm.contiguous();
    const auto contiguous = x.options().memory_format(at::MemoryFormat::Contiguous);
    at::Tensor grad_x = at::empty(need_x ? x.sizes() : at::IntArrayRef{0}, contiguous);
    at::Tensor grad_g = at::empty(need_g ? g.sizes() : at::IntArrayRef{0}, contiguous);
    const float *gp = gc.const_data_ptr<float>(), *rp = rc.const_data_ptr<float>();
    float* gxp = need_x ? grad_x.data_ptr<float>() : nullptr;
    float* ggp = need_g ? grad_g.data_ptr<float>() : nullptr;
    const Vec one(1.f);
    at::parallel_for(0, rows, grain_rows(d), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; i++) {
            const float *xi = xr.row(i), *ki = gr.row(i), *gi = gp + i * d;
            const float scale = l2 ? rp[i] : 1.0f;
            const Vec vs(scale);
            if (ggp) {
                float* oi = ggp + i * d;
                for (int64_t j = 0; j < d; j += kLanes) {
                    const int64_t n = std::min(kLanes, d - j);
                    const Vec k = Vec::loadu(ki + j, n), sg = sigmoid(k);
                    const Vec deriv = activation == 1 ? sg * (one + k * (one - sg)) : sg * (one - sg);
                    (Vec::loadu(gi + j, n) * (Vec::loadu(xi + j, n) * vs) * deriv).store(oi + j, n);
                }
            }
            if (gxp) {
                float* oi = gxp + i * d;
                Vec dot(0.f);
                for (int64_t j = 0; j < d; j += kLanes) {
                    const int64_t n = std::min(kLanes, d - j);
                    const Vec k = Vec::loadu(ki + j, n);
                    const Vec u = Vec::loadu(gi + j, n) * (activation == 1 ? k * sigmoid(k) : sigmoid(k));
                    u.store(oi + j, n);
                    if (l2) dot = dot + u * (Vec::loadu(xi + j, n) * vs);
                }
                if (l2) {
                    const float norm = 1.0f / scale;
                    const Vec vd(norm > eps ? lane_sum(dot) : 0.f);
                    for (int64_t j = 0; j < d; j += kLanes) {
                        const int64_t n = std::min(kLanes, d - j);
                        (vs * (Vec::loadu(oi + j, n) - (Vec::loadu(xi + j, n) * vs) * vd)).store(oi + j, n);
                    }
                }
            }
        }
    });
    return {grad_x, grad_g};
}

// ---- Residual updates -------------------------------------------------------------------------------

// out = x + b * s over contiguous [samples, rows, d] with s [samples, d] (per sample) or [d]; out
// may be b (in place: element j is read before it is written). One function for the training
// (scaled_add) and the inference (scaled_add_into_) forms: the same bits.
void scaled_add_kernel(const float* x, const float* b, const float* s, float* out, int64_t samples, int64_t rows,
                       int64_t d, bool per_sample) {
    at::parallel_for(0, samples * rows, grain_rows(d), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; i++) {
            const float* si = s + (per_sample ? (i / rows) * d : 0);
            const float *xi = x + i * d, *bi = b + i * d;
            float* oi = out + i * d;
            for (int64_t j = 0; j < d; j += kLanes) {
                const int64_t n = std::min(kLanes, d - j);
                (Vec::loadu(xi + j, n) + Vec::loadu(bi + j, n) * Vec::loadu(si + j, n)).store(oi + j, n);
            }
        }
    });
}

void check_scaled_add(const char* op, const at::Tensor& x, const at::Tensor& branch, const at::Tensor& scale) {
    check_float(x, op, "x");
    check_float(branch, op, "branch");
    check_float(scale, op, "scale");
    TORCH_CHECK(x.sizes() == branch.sizes() && x.dim() >= 1, op, ": x of shape ", x.sizes(), " and branch of shape ",
                branch.sizes());
    const int64_t d = x.size(-1);
    TORCH_CHECK((scale.dim() == 1 && scale.size(0) == d) || (scale.dim() == 2 && x.dim() >= 2 &&
                scale.size(0) == x.size(0) && scale.size(1) == d),
                op, ": scale of shape ", scale.sizes(), " for x of shape ", x.sizes(), " (expected [D] or [B, D])");
}

at::Tensor scaled_add(const at::Tensor& x, const at::Tensor& branch, const at::Tensor& scale) {
    check_scaled_add("vit5::scaled_add", x, branch, scale);
    const at::Tensor xc = x.contiguous(), bc = branch.contiguous(), sc = scale.contiguous();
    at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
    const bool per_sample = scale.dim() == 2;
    const int64_t d = x.size(-1), samples = per_sample ? x.size(0) : 1;
    const int64_t rows = d == 0 || samples == 0 ? 0 : x.numel() / (samples * d);
    scaled_add_kernel(xc.const_data_ptr<float>(), bc.const_data_ptr<float>(), sc.const_data_ptr<float>(),
                      out.data_ptr<float>(), samples, rows, d, per_sample);
    return out;
}

void scaled_add_into_(const at::Tensor& x, const at::Tensor& branch, const at::Tensor& gamma) {
    const char* op = "vit5::scaled_add_into_";
    check_scaled_add(op, x, branch, gamma);
    TORCH_CHECK(branch.is_contiguous() && gamma.dim() == 1, op, " writes into a contiguous branch with a [D] gamma");
    const at::Tensor xc = x.contiguous(), gc = gamma.contiguous();
    const int64_t d = x.size(-1), rows = d == 0 ? 0 : x.numel() / d;
    float* b = branch.data_ptr<float>();
    scaled_add_kernel(xc.const_data_ptr<float>(), b, gc.const_data_ptr<float>(), b, 1, rows, d, false);
}

// grad_branch = grad * scale; grad_scale = sum over rows of grad * branch (per sample for a [B, D]
// scale), summed per block of rows, the blocks in order.
std::tuple<at::Tensor, at::Tensor> scaled_add_backward(const at::Tensor& grad, const at::Tensor& branch,
                                                       const at::Tensor& scale, bool need_branch, bool need_scale) {
    const char* op = "vit5::scaled_add_backward";
    check_scaled_add(op, grad, branch, scale);
    const bool per_sample = scale.dim() == 2;
    const at::Tensor g = grad.contiguous(), bc = branch.contiguous(), sc = scale.contiguous();
    const int64_t d = branch.size(-1), samples = per_sample ? branch.size(0) : 1;
    const int64_t rows = d == 0 || samples == 0 ? 0 : branch.numel() / (samples * d);
    const auto contiguous = branch.options().memory_format(at::MemoryFormat::Contiguous);
    at::Tensor grad_branch = at::empty(need_branch ? branch.sizes() : at::IntArrayRef{0}, contiguous);
    at::Tensor grad_scale = at::empty(need_scale ? scale.sizes() : at::IntArrayRef{0}, contiguous);
    const float *gp = g.const_data_ptr<float>(), *bp = bc.const_data_ptr<float>(), *sp = sc.const_data_ptr<float>();
    // One pass over grad: per block of rows (of one sample) grad_branch and the block's partial sums.
    const int64_t block = reduction_block(rows), per = std::max<int64_t>(1, (rows + block - 1) / block);
    const int64_t blocks = samples * per;
    std::vector<float> partial(need_scale ? static_cast<size_t>(blocks * d) : 0, 0.f);
    float* gb = need_branch ? grad_branch.data_ptr<float>() : nullptr;
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; b++) {
            const int64_t sample = b / per, r0 = (b % per) * block, r1 = std::min(rows, r0 + block);
            const float* si = sp + (per_sample ? sample * d : 0);
            float* sum = need_scale ? partial.data() + b * d : nullptr;
            for (int64_t r = r0; r < r1; r++) {
                const int64_t i = sample * rows + r;
                for (int64_t j = 0; j < d; j += kLanes) {
                    const int64_t n = std::min(kLanes, d - j);
                    const Vec g = Vec::loadu(gp + i * d + j, n);
                    if (gb) (g * Vec::loadu(si + j, n)).store(gb + i * d + j, n);
                    if (sum) (Vec::loadu(sum + j, n) + g * Vec::loadu(bp + i * d + j, n)).store(sum + j, n);
                }
            }
        }
    });
    if (need_scale) {
        float* gs = grad_scale.data_ptr<float>();
        for (int64_t k = 0; k < samples * d; k++) gs[k] = 0.f;
        for (int64_t b = 0; b < blocks; b++)
            for (int64_t j = 0; j < d; j++) gs[(b / per) * d + j] += partial[b * d + j];
    }
    return {grad_branch, grad_scale};
}

// ---- RoPE ---------------------------------------------------------------------------------------------

// u [..., T, H, hd] (rows in two levels), tables cos, sin [T, hd], rot(v)[c] = sign[c] v[partner[c]]
// (partner an involution of 0 .. hd - 1). transpose = false: out = u cos + rot(u) sin; true, the
// adjoint (the backward pass): out[c] = u[c] cos[c] + sign[p] (u[p] sin[p]) with p = partner[c].
at::Tensor rope(const at::Tensor& u, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& partner,
                const at::Tensor& sign, bool transpose) {
    const char* op = "vit5::rope";
    check_float(u, op, "u");
    check_float(cos, op, "cos");
    check_float(sin, op, "sin");
    check_float(sign, op, "sign");
    TORCH_CHECK(u.dim() >= 3, op, ": u [..., T, H, hd], got shape ", u.sizes());
    const int64_t d = u.size(-1), heads = u.size(-2), tokens = u.size(-3);
    TORCH_CHECK(cos.sizes() == at::IntArrayRef({tokens, d}) && sin.sizes() == cos.sizes(), op, ": tables of shape ",
                cos.sizes(), " and ", sin.sizes(), " for u of shape ", u.sizes(), " (expected [T, hd])");
    TORCH_CHECK(partner.scalar_type() == at::kInt && partner.numel() == d && sign.numel() == d, op,
                ": partner (int32) and sign tables of ", d, " entries");
    const Rows ur = rows_of(u);
    const at::Tensor cc = cos.contiguous(), sc = sin.contiguous(), pc = partner.contiguous(), gc = sign.contiguous();
    at::Tensor out = at::empty(u.sizes(), u.options().memory_format(at::MemoryFormat::Contiguous));
    const float *ct = cc.const_data_ptr<float>(), *st = sc.const_data_ptr<float>(), *sg = gc.const_data_ptr<float>();
    const int32_t* pt = pc.const_data_ptr<int32_t>();
    for (int64_t c = 0; c < d; c++)
        TORCH_CHECK(pt[c] >= 0 && pt[c] < d && pt[pt[c]] == c, op, ": partner table is not an involution at ", c);
    // The adjoint reads sign[partner[c]]: one table for the call.
    std::vector<float> sign_p(static_cast<size_t>(d));
    for (int64_t c = 0; c < d; c++) sign_p[c] = sg[pt[c]];
    float* o = out.data_ptr<float>();
    at::parallel_for(0, ur.count, grain_rows(d), [&](int64_t begin, int64_t end) {
        std::vector<float> buffer(static_cast<size_t>(2 * d));
        float *rot = buffer.data(), *tmp = rot + d;
        for (int64_t i = begin; i < end; i++) {
            const float* xi = ur.row(i);
            const int64_t t = (i / heads) % tokens;
            const float *ci = ct + t * d, *si = st + t * d;
            float* oi = o + i * d;
            if (!transpose) {  // rot[c] = sign[c] x[partner[c]] (exact), then x cos + rot sin
                for (int64_t j = 0; j < d; j++) rot[j] = sg[j] * xi[pt[j]];
                for (int64_t j = 0; j < d; j += kLanes) {
                    const int64_t n = std::min(kLanes, d - j);
                    (Vec::loadu(xi + j, n) * Vec::loadu(ci + j, n) + Vec::loadu(rot + j, n) * Vec::loadu(si + j, n))
                        .store(oi + j, n);
                }
            } else {  // tmp = x sin, rot[c] = sign[p] tmp[p] (exact), then x cos + rot
                for (int64_t j = 0; j < d; j += kLanes) {
                    const int64_t n = std::min(kLanes, d - j);
                    (Vec::loadu(xi + j, n) * Vec::loadu(si + j, n)).store(tmp + j, n);
                }
                for (int64_t j = 0; j < d; j++) rot[j] = sign_p[j] * tmp[pt[j]];
                for (int64_t j = 0; j < d; j += kLanes) {
                    const int64_t n = std::min(kLanes, d - j);
                    (Vec::loadu(xi + j, n) * Vec::loadu(ci + j, n) + Vec::loadu(rot + j, n)).store(oi + j, n);
                }
            }
        }
    });
    return out;
}

// ---- DFT-matrix convolution primitives ------------------------------------------------------------------

void check_spectra(const char* op, const at::Tensor& a, const at::Tensor& b, const at::Tensor& out) {
    check_float(a, op, "a");
    check_float(b, op, "b");
    check_float(out, op, "out");
    TORCH_CHECK(a.dim() == 4 && a.size(2) == 2 && b.dim() == 4 && out.dim() == 4 && a.is_contiguous() &&
                    b.is_contiguous() && out.is_contiguous(),
                op, " takes contiguous [n, F, 2, R] spectra; got ", a.sizes(), ", ", b.sizes(), ", ", out.sizes());
}

// out = a * b (a * conj(b) with conjugate) on [n, F, 2, R] (re, im) planes; b may have one row. Each
// part is a product then a fused multiply-add, as PyTorch's CPU kernels evaluate the plain path's
// product and addcmul_.
void complex_product_(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out, bool conjugate) {
    const char* op = "vit5::complex_product_";
    check_spectra(op, a, b, out);
    const int64_t n = a.size(0), f = a.size(1), r = a.size(3);
    const bool shared = b.size(0) == 1;
    TORCH_CHECK(out.sizes() == a.sizes() && (shared || b.sizes() == a.sizes()) && b.size(1) == f && b.size(3) == r,
                op, ": shapes ", a.sizes(), ", ", b.sizes(), ", ", out.sizes());
    const float *ap = a.const_data_ptr<float>(), *bp = b.const_data_ptr<float>();
    float* op_ = out.data_ptr<float>();
    at::parallel_for(0, n * f, grain_rows(2 * r), [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; row++) {
            const float *ar = ap + row * 2 * r, *ai = ar + r;
            const float *br = bp + (shared ? row % f : row) * 2 * r, *bi = br + r;
            float *o_re = op_ + row * 2 * r, *o_im = o_re + r;
            for (int64_t j = 0; j < r; j += kLanes) {
                const int64_t m = std::min(kLanes, r - j);
                const Vec xr = Vec::loadu(ar + j, m), xi = Vec::loadu(ai + j, m);
                const Vec yr = Vec::loadu(br + j, m), yi = Vec::loadu(bi + j, m);
                Vec re, im;
                if (conjugate) {
                    re = at::vec::fmadd(xi, yi, xr * yr);
                    im = at::vec::fmadd(xr.neg(), yi, xi * yr);
                } else {
                    re = at::vec::fmadd(xi.neg(), yi, xr * yr);
                    im = at::vec::fmadd(xr, yi, xi * yr);
                }
                re.store(o_re + j, m);
                im.store(o_im + j, m);
            }
        }
    });
}

// acc [1, F, 2, R] += sum_i a[i] * conj(b[i]) over [n, F, 2, R] spectra, in row order.
void complex_product_sum_(const at::Tensor& a, const at::Tensor& b, const at::Tensor& acc) {
    const char* op = "vit5::complex_product_sum_";
    check_spectra(op, a, b, acc);
    const int64_t n = a.size(0), f = a.size(1), r = a.size(3);
    TORCH_CHECK(b.sizes() == a.sizes() && acc.size(0) == 1 && acc.size(1) == f && acc.size(3) == r, op, ": shapes ",
                a.sizes(), ", ", b.sizes(), ", ", acc.sizes());
    const int64_t width = 256, blocks = (r + width - 1) / width;  // a task's sums stay in L1
    const float *ap = a.const_data_ptr<float>(), *bp = b.const_data_ptr<float>();
    float* cp = acc.data_ptr<float>();
    at::parallel_for(0, f * blocks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; task++) {
            const int64_t k = task / blocks, j0 = (task % blocks) * width, j1 = std::min(r, j0 + width);
            float *c_re = cp + k * 2 * r, *c_im = c_re + r;
            for (int64_t i = 0; i < n; i++) {
                const float *ar = ap + (i * f + k) * 2 * r, *ai = ar + r;
                const float *br = bp + (i * f + k) * 2 * r, *bi = br + r;
                for (int64_t j = j0; j < j1; j += kLanes) {
                    const int64_t m = std::min(kLanes, j1 - j);
                    const Vec xr = Vec::loadu(ar + j, m), xi = Vec::loadu(ai + j, m);
                    const Vec yr = Vec::loadu(br + j, m), yi = Vec::loadu(bi + j, m);
                    (Vec::loadu(c_re + j, m) + (xr * yr + xi * yi)).store(c_re + j, m);
                    (Vec::loadu(c_im + j, m) + (xi * yr - xr * yi)).store(c_im + j, m);
                }
            }
        }
    });
}

}  // namespace
}  // namespace vit5

// Every operator's schema (the FFT ones are implemented in fft.cpp).
TORCH_LIBRARY(vit5, m) {
    m.def("rms_norm(Tensor x, Tensor weight, float eps) -> (Tensor, Tensor)");
    m.def("rms_norm_backward(Tensor x, Tensor weight, Tensor r, Tensor grad, bool need_x, bool need_weight) -> "
          "(Tensor, Tensor)");
    m.def("gate(Tensor x, Tensor g, int activation, float? l2_eps) -> (Tensor, Tensor)");
    m.def("gate_backward(Tensor x, Tensor g, Tensor rnorm, Tensor grad, int activation, float? l2_eps, bool need_x, "
          "bool need_g) -> (Tensor, Tensor)");
    m.def("scaled_add(Tensor x, Tensor branch, Tensor scale) -> Tensor");
    m.def("scaled_add_backward(Tensor grad, Tensor branch, Tensor scale, bool need_branch, bool need_scale) -> "
          "(Tensor, Tensor)");
    m.def("scaled_add_into_(Tensor x, Tensor(a!) branch, Tensor gamma) -> ()");
    m.def("rope(Tensor u, Tensor cos, Tensor sin, Tensor partner, Tensor sign, bool transpose) -> Tensor");
    m.def("fft_kernel_spectrum(Tensor taps, int s_h, int s_w, int f_h, int f_w) -> Tensor");
    m.def("fft_conv2d(Tensor x, Tensor spectrum, int f_h, int f_w, Tensor? shortcut) -> Tensor");
    m.def("fft_conv2d_kernel_grad(Tensor x, Tensor grad, int s_h, int s_w, int f_h, int f_w, Tensor kernel) -> "
          "Tensor");
    m.def("complex_product_(Tensor a, Tensor b, Tensor(a!) out, bool conjugate) -> ()");
    m.def("complex_product_sum_(Tensor a, Tensor b, Tensor(a!) acc) -> ()");
}

TORCH_LIBRARY_IMPL(vit5, CPU, m) {
    m.impl("rms_norm", &vit5::rms_norm);
    m.impl("rms_norm_backward", &vit5::rms_norm_backward);
    m.impl("gate", &vit5::gate);
    m.impl("gate_backward", &vit5::gate_backward);
    m.impl("scaled_add", &vit5::scaled_add);
    m.impl("scaled_add_backward", &vit5::scaled_add_backward);
    m.impl("scaled_add_into_", &vit5::scaled_add_into_);
    m.impl("rope", &vit5::rope);
    m.impl("complex_product_", &vit5::complex_product_);
    m.impl("complex_product_sum_", &vit5::complex_product_sum_);
}
