// Shared by the vit5 CPU operators (ops.cpp, fft.cpp): headers, the vector type, row addressing.
//
// Threads come from ATen (at::parallel_for, PyTorch's intra-op pool: torch.set_num_threads);
// SIMD from ATen's portable Vectorized<float>. Work is split into pieces whose size depends only
// on the shapes, and every reduction adds its pieces in a fixed order, so results do not depend
// on the thread count.
#pragma once

// ATen's vector headers pick their implementation from CPU_CAPABILITY_* macros (PyTorch's own
// kernels are compiled once per capability). Built for the machine that runs it, this library
// takes AVX2's 8-lane registers when the compiler targets AVX2 + FMA (also on AVX-512 machines:
// the FFT packs 8 complex lanes per vector, and the other kernels are bound by memory traffic);
// other targets (NEON, plain C++) get the vector type that ATen defines for them.
#if !defined(CPU_CAPABILITY_AVX2) && !defined(CPU_CAPABILITY_AVX512) && defined(__AVX2__) && \
    defined(__FMA__)
#define CPU_CAPABILITY_AVX2
#define CPU_CAPABILITY AVX2
#endif

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

namespace vit5 {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = Vec::size();

// Rows per parallel piece so that a piece has about 32K elements (ATen's grain).
inline int64_t grain_rows(int64_t d) { return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(d, 1)); }

// Sum of a vector's lanes in lane order (a fixed order: deterministic).
inline float lane_sum(const Vec& v) {
    alignas(64) float lanes[kLanes];
    v.store(lanes);
    float s = 0.f;
    for (int64_t l = 0; l < kLanes; l++) s += lanes[l];
    return s;
}

// Rows of a [..., D] fp32 tensor with contiguous channels addressed in two levels: row i at
// (i / inner) * outer + (i % inner) * step floats from data (e.g. the per-head q of a packed
// projection [B, T, 3, H, hd]: inner = H, step = hd, outer = 3 H hd). A tensor whose rows cannot
// be addressed so is copied to a contiguous one first (hold `owner` while `data` is read).
struct Rows {
    at::Tensor owner;
    const float* data;
    int64_t inner, outer, step, count, d;
    const float* row(int64_t i) const { return data + (i / inner) * outer + (i % inner) * step; }
};

inline Rows rows_of(const at::Tensor& t) {
    const int64_t d = t.dim() == 0 ? 1 : t.size(-1);
    const int64_t count = d == 0 ? 0 : t.numel() / d;
    if (t.dim() >= 1 && (d <= 1 || t.stride(-1) == 1)) {
        if (t.dim() == 1) return {t, t.const_data_ptr<float>(), 1, d, d, count, d};
        const int64_t shape[3] = {count / std::max<int64_t>(t.size(-2), 1), t.size(-2), d};
        const auto strides = at::detail::computeStride(t.sizes(), t.strides(), at::IntArrayRef(shape, 3));
        if (strides.has_value() && (d <= 1 || (*strides)[2] == 1))
            return {t, t.const_data_ptr<float>(), t.size(-2), (*strides)[0], (*strides)[1], count, d};
    }
    at::Tensor c = t.contiguous();
    return {c, c.const_data_ptr<float>(), std::max<int64_t>(count, 1), count * d, d, count, d};
}

inline void check_float(const at::Tensor& t, const char* op, const char* name) {
    TORCH_CHECK(t.scalar_type() == at::kFloat, op, " takes float32 tensors; ", name, " is ", t.scalar_type());
    TORCH_CHECK(t.device().is_cpu(), op, " runs on the CPU; ", name, " is on ", t.device());
}

}  // namespace vit5
