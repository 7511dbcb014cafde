// 2-D zero-padded FFT convolution of channels-last fp32 data (see vit5/ops/fftnative.py).
//
// Work item = one sample and one group of 16 channels. The group is packed as 8 complex lanes,
// z = x[c0 + l] + i x[c0 + 8 + l] (l < 8), into a work buffer of f_h x f_w elements (one element =
// 8 real parts then 8 imaginary parts), so every butterfly is vector arithmetic on 8 channels with
// a scalar twiddle. Forward: radix-2 decimation in frequency along the width (only the f_h / 2
// rows that hold data), then along the height (all columns at once, row pairs), the stages after
// the first two at a time (radix-2^2 quads: the same butterflies, half the loads and stores); the
// spectrum comes out in bit-reversed order on both axes. Each output spectrum element
// W[k] = Z[k] A[k] + conj(Z[-k]) B[k] separates and convolves both halves of the packing at once
// (A = (Sc + Sd) / 2, B = (Sc - Sd) / 2 for the kernel spectra Sc, Sd of the two channels, crop
// shift and 1 / (f_h f_w) included; k and -k are handled together through the bit-reversed partner
// tables, and as the taps are real, A[-k] = conj A[k] and B[-k] = conj B[k], so the kernel spectrum
// holds one frequency of each pair, in the order they are visited). Inverse: decimation in time
// along the height, then the width, each keeping only the first n_h (n_w) outputs in its last
// stage; the real parts are channels c0.., the imaginary parts channels c0 + 8... The input needs
// n_h <= f_h / 2 and n_w <= f_w / 2 (the first forward stage reads only the first half).
#include "common.h"

#include <cmath>
#include <cstring>
#include <vector>

namespace vit5 {
namespace {

// 8 fp32 lanes as ATen vectors (one AVX2 register; two NEON registers).
static_assert(8 % kLanes == 0, "the FFT kernels pack 8 lanes into whole vectors");
constexpr int kParts = static_cast<int>(8 / kLanes);

struct V8 {
    Vec p[kParts];
    static V8 load(const float* a) {
        V8 v;
        for (int i = 0; i < kParts; i++) v.p[i] = Vec::loadu(a + i * kLanes);
        return v;
    }
    static V8 fill(float s) {
        V8 v;
        for (int i = 0; i < kParts; i++) v.p[i] = Vec(s);
        return v;
    }
    void store(float* a) const {
        for (int i = 0; i < kParts; i++) p[i].store(a + i * kLanes);
    }
};
inline V8 operator+(const V8& a, const V8& b) {
    V8 v;
    for (int i = 0; i < kParts; i++) v.p[i] = a.p[i] + b.p[i];
    return v;
}
inline V8 operator-(const V8& a, const V8& b) {
    V8 v;
    for (int i = 0; i < kParts; i++) v.p[i] = a.p[i] - b.p[i];
    return v;
}
inline V8 operator*(const V8& a, const V8& b) {
    V8 v;
    for (int i = 0; i < kParts; i++) v.p[i] = a.p[i] * b.p[i];
    return v;
}
inline V8 operator-(const V8& a) {
    V8 v;
    for (int i = 0; i < kParts; i++) v.p[i] = a.p[i].neg();
    return v;
}

constexpr int64_t EL = 16;        // floats per work-buffer element
constexpr int64_t kMaxFFT = 1024;  // largest transform per axis (vit5/ops/fftnative.py: MAX_SIZE)

// One butterfly on values in registers: decimation in frequency (a, b) -> (a + b, (a - b) w), and
// decimation in time with the conjugate twiddle (a, b) -> (a + b w*, a - b w*).
inline void dif(V8& ar, V8& ai, V8& br, V8& bi, const V8& wr, const V8& wi) {
    const V8 dr = ar - br, di = ai - bi;
    ar = ar + br;
    ai = ai + bi;
    br = dr * wr - di * wi;
    bi = dr * wi + di * wr;
}

inline void dit(V8& ar, V8& ai, V8& br, V8& bi, const V8& wr, const V8& wi) {
    const V8 tr = br * wr + bi * wi, ti = bi * wr - br * wi;
    br = ar - tr;
    bi = ai - ti;
    ar = ar + tr;
    ai = ai + ti;
}

// Butterflies of one stage over `cols` elements side by side (a row pair on the height axis,
// cols = 1 along the width).
template <bool DIT>
inline void pair(float* a, float* b, int64_t cols, float wr, float wi) {
    const V8 vr = V8::fill(wr), vi = V8::fill(wi);
    for (int64_t c = 0; c < cols; c++, a += EL, b += EL) {
        V8 ar = V8::load(a), ai = V8::load(a + 8), br = V8::load(b), bi = V8::load(b + 8);
        if (DIT)
            dit(ar, ai, br, bi, vr, vi);
        else
            dif(ar, ai, br, bi, vr, vi);
        ar.store(a), ai.store(a + 8), br.store(b), bi.store(b + 8);
    }
}

// Two stages at once on a quad of points (a, b, c, d) over `cols` elements, the intermediate values
// kept in registers. Decimation in frequency, points (j, j + h, j + m, j + m + h) of a block of 2m
// (h = m / 2): span m on (a, c) with w1 and (b, d) with w2, then span h on (a, b) and (c, d) with
// w3. Decimation in time, points (j, j + m, j + 2m, j + 3m) of a block of 4m: span m on (a, b) and
// (c, d) with w1*, then span 2m on (a, c) with w2* and (b, d) with w3*. w: w1, w2, w3 as (re, im).
template <bool DIT>
inline void quad(float* a, float* b, float* c, float* d, int64_t cols, const float* w) {
    const V8 w1r = V8::fill(w[0]), w1i = V8::fill(w[1]), w2r = V8::fill(w[2]), w2i = V8::fill(w[3]);
    const V8 w3r = V8::fill(w[4]), w3i = V8::fill(w[5]);
    for (int64_t k = 0; k < cols; k++, a += EL, b += EL, c += EL, d += EL) {
        V8 ar = V8::load(a), ai = V8::load(a + 8), br = V8::load(b), bi = V8::load(b + 8);
        V8 cr = V8::load(c), ci = V8::load(c + 8), dr = V8::load(d), di = V8::load(d + 8);
        if (DIT) {
            dit(ar, ai, br, bi, w1r, w1i);
            dit(cr, ci, dr, di, w1r, w1i);
            dit(ar, ai, cr, ci, w2r, w2i);
            dit(br, bi, dr, di, w3r, w3i);
        } else {
            dif(ar, ai, cr, ci, w1r, w1i);
            dif(br, bi, dr, di, w2r, w2i);
            dif(ar, ai, br, bi, w3r, w3i);
            dif(cr, ci, dr, di, w3r, w3i);
        }
        ar.store(a), ai.store(a + 8), br.store(b), bi.store(b + 8);
        cr.store(c), ci.store(c + 8), dr.store(d), di.store(d + 8);
    }
}

// Forward transform of n points spaced `st` floats apart, `cols` side by side; unless `full`,
// points n/2.. are zero on entry (not read). tw: cos, sin of -2 pi j / n for j < n / 2.
void fft_forward(float* p, int64_t n, int64_t st, int64_t cols, bool full, const float* twr, const float* twi) {
    int64_t m = n / 2;
    if (full) {
        for (int64_t j = 0; j < m; j++) pair<false>(p + j * st, p + (j + m) * st, cols, twr[j], twi[j]);
    } else {
        for (int64_t j = 0; j < m; j++) {  // first stage: b = 0, so (a, b) -> (a, a w)
            const V8 vr = V8::fill(twr[j]), vi = V8::fill(twi[j]);
            float *a = p + j * st, *b = p + (j + m) * st;
            for (int64_t c = 0; c < cols; c++, a += EL, b += EL) {
                const V8 ar = V8::load(a), ai = V8::load(a + 8);
                (ar * vr - ai * vi).store(b);
                (ar * vi + ai * vr).store(b + 8);
            }
        }
    }
    for (m = n / 4; m >= 2; m /= 4) {  // the other stages two at a time: spans m and m / 2
        const int64_t step = n / (2 * m), h = m / 2;
        for (int64_t s = 0; s < n; s += 2 * m)
            for (int64_t j = 0; j < h; j++) {
                const float w[6] = {twr[j * step], twi[j * step], twr[(j + h) * step], twi[(j + h) * step],
                                    twr[2 * j * step], twi[2 * j * step]};
                quad<false>(p + (s + j) * st, p + (s + j + h) * st, p + (s + j + m) * st, p + (s + j + m + h) * st,
                            cols, w);
            }
    }
    if (m == 1)  // an odd stage left: span 1
        for (int64_t s = 0; s < n; s += 2) pair<false>(p + s * st, p + (s + 1) * st, cols, twr[0], twi[0]);
}

// Inverse (unscaled) transform from bit-reversed order; only points < keep are final (all of them
// when keep > n / 2).
void fft_inverse(float* p, int64_t n, int64_t st, int64_t cols, int64_t keep, const float* twr, const float* twi) {
    int64_t m = 1;
    for (; 2 * m < n / 2; m *= 4) {  // all but the last stage two at a time: spans m and 2m
        const int64_t step = n / (4 * m);
        for (int64_t s = 0; s < n; s += 4 * m)
            for (int64_t j = 0; j < m; j++) {
                const float w[6] = {twr[2 * j * step], twi[2 * j * step], twr[j * step], twi[j * step],
                                    twr[(j + m) * step], twi[(j + m) * step]};
                quad<true>(p + (s + j) * st, p + (s + j + m) * st, p + (s + j + 2 * m) * st, p + (s + j + 3 * m) * st,
                           cols, w);
            }
    }
    if (m < n / 2) {  // an odd stage left before the last
        const int64_t step = n / (2 * m);
        for (int64_t s = 0; s < n; s += 2 * m)
            for (int64_t j = 0; j < m; j++)
                pair<true>(p + (s + j) * st, p + (s + j + m) * st, cols, twr[j * step], twi[j * step]);
    }
    m = n / 2;
    if (keep > m) {  // every output: the full last stage
        for (int64_t j = 0; j < m; j++) pair<true>(p + j * st, p + (j + m) * st, cols, twr[j], twi[j]);
        return;
    }
    for (int64_t j = 0; j < keep; j++) {  // last stage: only a + b w*
        const V8 vr = V8::fill(twr[j]), vi = V8::fill(twi[j]);
        float *a = p + j * st, *b = p + (j + m) * st;
        for (int64_t c = 0; c < cols; c++, a += EL, b += EL) {
            const V8 br = V8::load(b), bi = V8::load(b + 8);
            (V8::load(a) + (br * vr + bi * vi)).store(a);
            (V8::load(a + 8) + (bi * vr - br * vi)).store(a + 8);
        }
    }
}

void twiddles(int64_t n, float* re, float* im) {
    for (int64_t j = 0; j < n / 2; j++) {
        const double angle = -2.0 * M_PI * static_cast<double>(j) / static_cast<double>(n);
        re[j] = static_cast<float>(std::cos(angle));
        im[j] = static_cast<float>(std::sin(angle));
    }
}

// v with its log2(n) low bits reversed (n a power of two): a frequency's bit-reversed position and back.
int64_t bit_reverse(int64_t v, int64_t n) {
    int64_t r = 0;
    for (int64_t m = n >> 1; m > 0; m >>= 1, v >>= 1) r = (r << 1) | (v & 1);
    return r;
}

// Twiddles and partner tables (bit-reversed position of the partner frequency -k) of f_h x f_w
// transforms, shared by the threads.
struct Tables {
    float twhr[kMaxFFT / 2], twhi[kMaxFFT / 2], twwr[kMaxFFT / 2], twwi[kMaxFFT / 2];
    int32_t parth[kMaxFFT], partw[kMaxFFT];
    int64_t fh, fw;

    static bool takes(int64_t fh, int64_t fw) {
        return fh >= 4 && fw >= 4 && !(fh & (fh - 1)) && !(fw & (fw - 1)) && fh <= kMaxFFT && fw <= kMaxFFT;
    }
    Tables(int64_t fh_, int64_t fw_) : fh(fh_), fw(fw_) {
        twiddles(fh, twhr, twhi);
        twiddles(fw, twwr, twwi);
        for (int64_t p = 0; p < fh; p++) parth[p] = static_cast<int32_t>(bit_reverse((fh - bit_reverse(p, fh)) % fh, fh));
        for (int64_t p = 0; p < fw; p++) partw[p] = static_cast<int32_t>(bit_reverse((fw - bit_reverse(p, fw)) % fw, fw));
    }
    int64_t partner(int64_t ph, int64_t pw) const { return static_cast<int64_t>(parth[ph]) * fw + partw[pw]; }
};

// Frequencies per group the spectrum stores: one of each pair (k, -k), the four that are their own
// partner once.
inline int64_t spectrum_entries(int64_t fh, int64_t fw) { return fh * fw / 2 + 2; }

// exp(-2 pi i s k / n) at the bit-reversed position of every frequency k.
void shift_ramp(int64_t n, int64_t s, float* re, float* im) {
    for (int64_t p = 0; p < n; p++) {
        const int64_t k = bit_reverse(p, n);
        const double angle = -2.0 * M_PI * static_cast<double>((s * k) % n) / static_cast<double>(n);
        re[p] = static_cast<float>(std::cos(angle));
        im[p] = static_cast<float>(std::sin(angle));
    }
}

// Packs 16 channels of one sample (xs: its first channel, rows sxh and columns sxw apart, `lanes`
// of them real) as 8 complex lanes into buf and transforms it (bit-reversed spectrum).
void load_forward(const float* xs, int64_t sxh, int64_t sxw, int64_t lanes, int64_t nh, int64_t nw,
                  const Tables& t, float* buf) {
    const int64_t fh = t.fh, fw = t.fw, row = fw * EL;
    for (int64_t h = 0; h < nh; h++) {  // rows < nh, columns < nw; zeros up to fw / 2
        float* e = buf + h * row;
        const float* xr = xs + h * sxh;
        if (lanes == 16) {
            for (int64_t w = 0; w < nw; w++, e += EL) std::memcpy(e, xr + w * sxw, 16 * sizeof(float));
        } else {
            for (int64_t w = 0; w < nw; w++, e += EL)
                for (int l = 0; l < 16; l++) e[l] = l < lanes ? xr[w * sxw + l] : 0.f;
        }
        std::memset(buf + h * row + nw * EL, 0, static_cast<size_t>(fw / 2 - nw) * EL * sizeof(float));
        fft_forward(buf + h * row, fw, EL, 1, false, t.twwr, t.twwi);
    }
    std::memset(buf + nh * row, 0, static_cast<size_t>(fh / 2 - nh) * row * sizeof(float));
    fft_forward(buf, fh, row, fw, false, t.twhr, t.twhi);
}

// Per-thread work buffers come from one allocation per piece of a parallel_for.
struct Work {
    std::vector<float> data;
    explicit Work(int64_t floats) : data(static_cast<size_t>(floats)) {}
    float* get() { return data.data(); }
};

void check_sizes(const char* op, int64_t fh, int64_t fw) {
    TORCH_CHECK(Tables::takes(fh, fw), op, " takes FFT sizes that are powers of two in [4, ", kMaxFFT, "]; got (", fh,
                ", ", fw, ")");
}

// The kernel spectrum fft_conv2d reads: taps [C, kh, kw] (any strides) -> [ceil(C / 16), fh fw / 2 + 2,
// 4, 8]. Per group, the taps a = (k_c + k_d) s and b = (k_c - k_d) s (s = 1 / (2 fh fw); c = c0 + l,
// d = c0 + 8 + l) are shifted back by the crop start (sh, sw), zero padded to fh x fw and
// transformed together as a + i b; A and B are separated from the packed spectrum through the
// partner tables and stored for one frequency of each pair (k, -k), in the order fft_conv2d reads them.
at::Tensor fft_kernel_spectrum(const at::Tensor& taps, int64_t sh, int64_t sw, int64_t fh, int64_t fw) {
    const char* op = "vit5::fft_kernel_spectrum";
    check_float(taps, op, "taps");
    TORCH_CHECK(taps.dim() == 3, op, ": taps [C, K_h, K_w], got shape ", taps.sizes());
    check_sizes(op, fh, fw);
    const int64_t channels = taps.size(0), kh = taps.size(1), kw = taps.size(2);
    TORCH_CHECK(kh <= fh && kw <= fw && sh >= 0 && sw >= 0 && sh < fh && sw < fw, op, " does not take FFT sizes (", fh,
                ", ", fw, ") with crop starts (", sh, ", ", sw, ") for taps ", taps.sizes().slice(1));
    const int64_t groups = (channels + 15) / 16, row = fw * EL, entries = spectrum_entries(fh, fw);
    at::Tensor out = at::empty({groups, entries, 4, 8}, taps.options().memory_format(at::MemoryFormat::Contiguous));
    const Tables tab(fh, fw);
    const float* k = taps.const_data_ptr<float>();
    const int64_t skc = taps.stride(0), skh = taps.stride(1), skw = taps.stride(2);
    const float scale = 0.5f / static_cast<float>(fh * fw);
    float* spec = out.data_ptr<float>();
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
        Work work(fh * row);
        float* buf = work.get();
        for (int64_t g = begin; g < end; g++) {
            const int64_t c0 = g * 16, lanes = std::min<int64_t>(channels - c0, 16);
            std::memset(buf, 0, static_cast<size_t>(fh * row) * sizeof(float));
            for (int64_t i = 0; i < fh; i++) {
                const int64_t ti = (i + sh) % fh;
                if (ti >= kh) continue;
                for (int64_t j = 0; j < fw; j++) {
                    const int64_t tj = (j + sw) % fw;
                    if (tj >= kw) continue;
                    float* e = buf + i * row + j * EL;
                    const float* t = k + ti * skh + tj * skw + c0 * skc;
                    for (int l = 0; l < 8; l++) {
                        const float kc = l < lanes ? t[l * skc] : 0.f, kd = l + 8 < lanes ? t[(l + 8) * skc] : 0.f;
                        e[l] = (kc + kd) * scale;
                        e[l + 8] = (kc - kd) * scale;
                    }
                }
            }
            for (int64_t i = 0; i < fh; i++) fft_forward(buf + i * row, fw, EL, 1, true, tab.twwr, tab.twwi);
            fft_forward(buf, fh, row, fw, true, tab.twhr, tab.twhi);
            float* o = spec + g * entries * 32;
            const V8 half = V8::fill(0.5f);
            for (int64_t ph = 0; ph < fh; ph++)
                for (int64_t pw = 0; pw < fw; pw++) {
                    const int64_t p = ph * fw + pw, q = tab.partner(ph, pw);
                    if (q < p) continue;
                    const float *zp = buf + p * EL, *zq = buf + q * EL;
                    const V8 zr = V8::load(zp), zi = V8::load(zp + 8), qr = V8::load(zq), qi = V8::load(zq + 8);
                    ((zr + qr) * half).store(o);  // A = (Z[p] + conj Z[q]) / 2
                    ((zi - qi) * half).store(o + 8);
                    ((zi + qi) * half).store(o + 16);  // B = (Z[p] - conj Z[q]) / 2i
                    ((qr - zr) * half).store(o + 24);
                    o += 32;
                }
        }
    });
    return out;
}

// K * x (+ shortcut * x: two roundings, as PyTorch's shortcut * x + y) for channels-last x [B, H, W, C]
// (contiguous channels, any other strides) and a fft_kernel_spectrum: contiguous [B, H, W, C].
at::Tensor fft_conv2d(const at::Tensor& x_in, const at::Tensor& spectrum, int64_t fh, int64_t fw,
                      const std::optional<at::Tensor>& shortcut_in) {
    const char* op = "vit5::fft_conv2d";
    check_float(x_in, op, "x");
    check_float(spectrum, op, "spectrum");
    TORCH_CHECK(x_in.dim() == 4, op, ": x [B, H, W, C], got shape ", x_in.sizes());
    check_sizes(op, fh, fw);
    const at::Tensor x = x_in.size(3) <= 1 || x_in.stride(3) == 1 ? x_in : x_in.contiguous();
    const int64_t batch = x.size(0), nh = x.size(1), nw = x.size(2), channels = x.size(3);
    TORCH_CHECK(2 * nh <= fh && 2 * nw <= fw && nh >= 1 && nw >= 1, op, " does not take FFT sizes (", fh, ", ", fw,
                ") for a (", nh, ", ", nw, ") signal");
    const int64_t groups = (channels + 15) / 16, entries = spectrum_entries(fh, fw), row = fw * EL;
    TORCH_CHECK(spectrum.dim() == 4 && spectrum.size(0) == groups && spectrum.size(1) == entries &&
                    spectrum.size(2) == 4 && spectrum.size(3) == 8,
                op, ": a spectrum of shape ", spectrum.sizes(), " for ", channels, " channels and FFT sizes (", fh, ", ",
                fw, ")");
    at::Tensor shortcut;
    if (shortcut_in.has_value()) {
        check_float(*shortcut_in, op, "shortcut");
        TORCH_CHECK(shortcut_in->numel() == channels, op, ": a shortcut of ", shortcut_in->numel(), " entries for ",
                    channels, " channels");
        shortcut = shortcut_in->contiguous();
    }
    const at::Tensor spec_c = spectrum.contiguous();
    at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
    const Tables tab(fh, fw);
    const float *xp = x.const_data_ptr<float>(), *spec = spec_c.const_data_ptr<float>();
    const float* sc = shortcut.defined() ? shortcut.const_data_ptr<float>() : nullptr;
    float* op_ = out.data_ptr<float>();
    const int64_t sxb = x.stride(0), sxh = x.stride(1), sxw = x.stride(2);
    const int64_t sob = out.stride(0), soh = out.stride(1), sow = out.stride(2);
    at::parallel_for(0, groups * batch, 1, [&](int64_t begin, int64_t end) {
        Work work(fh * row);
        float* buf = work.get();
        for (int64_t item = begin; item < end; item++) {
            const int64_t g = item / batch, b = item % batch, c0 = g * 16;
            const int64_t lanes = std::min<int64_t>(channels - c0, 16);
            const float* xs = xp + b * sxb + c0;
            load_forward(xs, sxh, sxw, lanes, nh, nw, tab, buf);
            const float* sp = spec + g * entries * 32;  // read in order
            for (int64_t ph = 0; ph < fh; ph++) {
                for (int64_t pw = 0; pw < fw; pw++) {
                    const int64_t p = ph * fw + pw, q = tab.partner(ph, pw);
                    if (q < p) continue;
                    float *zp = buf + p * EL, *zq = buf + q * EL;
                    const V8 pr = V8::load(zp), pi = V8::load(zp + 8), qr = V8::load(zq), qi = V8::load(zq + 8);
                    const V8 apr = V8::load(sp), api = V8::load(sp + 8), bpr = V8::load(sp + 16), bpi = V8::load(sp + 24);
                    // W[p] = Z[p] A[p] + conj(Z[q]) B[p]
                    ((pr * apr - pi * api) + (qr * bpr + qi * bpi)).store(zp);
                    ((pr * api + pi * apr) + (qr * bpi - qi * bpr)).store(zp + 8);
                    if (q != p) {  // A and B are Hermitian: A[q] = conj A[p]
                        const V8 aqi = -api, bqi = -bpi;
                        ((qr * apr - qi * aqi) + (pr * bpr + pi * bqi)).store(zq);
                        ((qr * aqi + qi * apr) + (pr * bqi - pi * bpr)).store(zq + 8);
                    }
                    sp += 32;
                }
            }
            fft_inverse(buf, fh, row, fw, nh, tab.twhr, tab.twhi);
            float* os = op_ + b * sob + c0;
            for (int64_t h = 0; h < nh; h++) {
                float* e = buf + h * row;
                fft_inverse(e, fw, EL, 1, nw, tab.twwr, tab.twwi);
                float* orow = os + h * soh;
                const float* xr = xs + h * sxh;
                for (int64_t w = 0; w < nw; w++, e += EL) {
                    if (lanes == 16) {
                        V8 lo = V8::load(e), hi = V8::load(e + 8);
                        if (sc) {
                            lo = V8::load(sc + c0) * V8::load(xr + w * sxw) + lo;
                            hi = V8::load(sc + c0 + 8) * V8::load(xr + w * sxw + 8) + hi;
                        }
                        lo.store(orow + w * sow);
                        hi.store(orow + w * sow + 8);
                    } else {
                        for (int l = 0; l < lanes; l++)
                            orow[w * sow + l] = sc ? sc[c0 + l] * xr[w * sxw + l] + e[l] : e[l];
                    }
                }
            }
        }
    });
    return out;
}

// Gradient of fft_conv2d's convolution with respect to a [1, C, K_h, K_w] kernel (whose shape and
// strides the result has), summed over the batch: dk[c, t] = sum_b sum_i g[b, i, c] x[b, i + s - t, c]
// for crop start s = (sh, sw). Per group of 16 channels both signals are transformed packed (as
// fft_conv2d does), the two halves separated per frequency pair, conj(X) G summed over the batch
// in order (packed again as Pc + i Pd), shifted by the crop start and transformed back in full.
at::Tensor fft_conv2d_kernel_grad(const at::Tensor& x_in, const at::Tensor& g_in, int64_t sh, int64_t sw, int64_t fh,
                                  int64_t fw, const at::Tensor& kernel) {
    const char* op = "vit5::fft_conv2d_kernel_grad";
    check_float(x_in, op, "x");
    check_float(g_in, op, "grad");
    TORCH_CHECK(x_in.dim() == 4 && g_in.sizes() == x_in.sizes() && kernel.dim() == 4 && kernel.size(0) == 1 &&
                    kernel.size(1) == x_in.size(3),
                op, ": x and grad [B, H, W, C] and a kernel [1, C, K_h, K_w]; got ", x_in.sizes(), ", ", g_in.sizes(),
                ", ", kernel.sizes());
    check_sizes(op, fh, fw);
    const at::Tensor x = x_in.size(3) <= 1 || x_in.stride(3) == 1 ? x_in : x_in.contiguous();
    const at::Tensor g = g_in.size(3) <= 1 || g_in.stride(3) == 1 ? g_in : g_in.contiguous();
    const int64_t batch = x.size(0), nh = x.size(1), nw = x.size(2), channels = x.size(3);
    const int64_t kh = kernel.size(2), kw = kernel.size(3);
    TORCH_CHECK(2 * nh <= fh && 2 * nw <= fw && nh >= 1 && nw >= 1 && kh <= fh && kw <= fw && kh >= 1 && kw >= 1, op,
                " does not take FFT sizes (", fh, ", ", fw, ") for a (", nh, ", ", nw, ") signal and (", kh, ", ", kw,
                ") taps");
    at::Tensor out = at::empty_like(kernel, kernel.options().dtype(at::kFloat));
    const at::Tensor taps = out.select(0, 0);
    const int64_t skc = taps.stride(0), skh = taps.stride(1), skw = taps.stride(2);
    float* dk = taps.data_ptr<float>();
    const Tables tab(fh, fw);
    std::vector<float> rhr(fh), rhi(fh), rwr(fw), rwi(fw);
    shift_ramp(fh, sh, rhr.data(), rhi.data());
    shift_ramp(fw, sw, rwr.data(), rwi.data());
    const int64_t groups = (channels + 15) / 16, row = fw * EL, plane = fh * row;
    const float *xp = x.const_data_ptr<float>(), *gp = g.const_data_ptr<float>();
    const int64_t sxb = x.stride(0), sxh = x.stride(1), sxw = x.stride(2);
    const int64_t sgb = g.stride(0), sgh = g.stride(1), sgw = g.stride(2);
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
        Work work(3 * plane);
        float *bx = work.get(), *bg = bx + plane, *acc = bg + plane;
        const V8 half = V8::fill(0.5f);
        for (int64_t grp = begin; grp < end; grp++) {
            const int64_t c0 = grp * 16, lanes = std::min<int64_t>(channels - c0, 16);
            std::memset(acc, 0, static_cast<size_t>(plane) * sizeof(float));
            for (int64_t b = 0; b < batch; b++) {
                load_forward(xp + b * sxb + c0, sxh, sxw, lanes, nh, nw, tab, bx);
                load_forward(gp + b * sgb + c0, sgh, sgw, lanes, nh, nw, tab, bg);
                for (int64_t ph = 0; ph < fh; ph++)
                    for (int64_t pw = 0; pw < fw; pw++) {
                        const int64_t p = ph * fw + pw, q = tab.partner(ph, pw);
                        if (q < p) continue;
                        const float *xp_ = bx + p * EL, *xq = bx + q * EL, *gp_ = bg + p * EL, *gq = bg + q * EL;
                        const V8 xpr = V8::load(xp_), xpi = V8::load(xp_ + 8), xqr = V8::load(xq), xqi = V8::load(xq + 8);
                        const V8 gpr = V8::load(gp_), gpi = V8::load(gp_ + 8), gqr = V8::load(gq), gqi = V8::load(gq + 8);
                        // halves at p: C = (Z[p] + conj Z[q]) / 2, D = (Z[p] - conj Z[q]) / 2i
                        const V8 xcr = (xpr + xqr) * half, xci = (xpi - xqi) * half;
                        const V8 xdr = (xpi + xqi) * half, xdi = (xqr - xpr) * half;
                        const V8 gcr = (gpr + gqr) * half, gci = (gpi - gqi) * half;
                        const V8 gdr = (gpi + gqi) * half, gdi = (gqr - gpr) * half;
                        // Pc = conj(Xc) Gc, Pd = conj(Xd) Gd at p; at q their conjugates
                        const V8 pcr = xcr * gcr + xci * gci, pci = xcr * gci - xci * gcr;
                        const V8 pdr = xdr * gdr + xdi * gdi, pdi = xdr * gdi - xdi * gdr;
                        float *ap = acc + p * EL, *aq = acc + q * EL;
                        (V8::load(ap) + (pcr - pdi)).store(ap);  // Pc + i Pd
                        (V8::load(ap + 8) + (pci + pdr)).store(ap + 8);
                        if (q != p) {
                            (V8::load(aq) + (pcr + pdi)).store(aq);  // conj(Pc) + i conj(Pd)
                            (V8::load(aq + 8) + (pdr - pci)).store(aq + 8);
                        }
                    }
            }
            // shift by the crop start (output gradient placed at s) and scale, then invert in full
            const float scale = 1.0f / static_cast<float>(fh * fw);
            for (int64_t ph = 0; ph < fh; ph++)
                for (int64_t pw = 0; pw < fw; pw++) {
                    const float rr = rhr[ph] * rwr[pw] - rhi[ph] * rwi[pw], ri = rhr[ph] * rwi[pw] + rhi[ph] * rwr[pw];
                    const V8 vr = V8::fill(rr * scale), vi = V8::fill(ri * scale);
                    float* a = acc + (ph * fw + pw) * EL;
                    const V8 ar = V8::load(a), ai = V8::load(a + 8);
                    (ar * vr - ai * vi).store(a);
                    (ar * vi + ai * vr).store(a + 8);
                }
            fft_inverse(acc, fh, row, fw, kh, tab.twhr, tab.twhi);
            for (int64_t t = 0; t < kh; t++) {
                float* e = acc + t * row;
                fft_inverse(e, fw, EL, 1, kw, tab.twwr, tab.twwi);
                for (int64_t u = 0; u < kw; u++, e += EL)
                    for (int l = 0; l < lanes; l++) dk[(c0 + l) * skc + t * skh + u * skw] = e[l];
            }
        }
    });
    return out;
}

}  // namespace
}  // namespace vit5

TORCH_LIBRARY_IMPL(vit5, CPU, m) {
    m.impl("fft_kernel_spectrum", &vit5::fft_kernel_spectrum);
    m.impl("fft_conv2d", &vit5::fft_conv2d);
    m.impl("fft_conv2d_kernel_grad", &vit5::fft_conv2d_kernel_grad);
}
