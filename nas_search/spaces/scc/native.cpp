// Native CPU forward kernel of the sliding-channel convolution (see scc.py for the definition).
//
// Compiled once per machine by nas_search/spaces/scc_native.py with the system C++ compiler
// (-O3 -march=native -fopenmp) and called through ctypes. Plain C ABI, no PyTorch headers, so
// it builds in about a second. The OpenMP runtime it links (libgomp.so.1) is the one PyTorch
// has already loaded, so both share one thread pool.
//
// What it computes, for float32, contiguous NCHW input flattened to (N, Cin, P):
//
//     out[n, c, p] = sum_k weight[c, k] * x[n, window[class(c), k], p]
//
// where output channel c belongs to window class c mod T and window[class] lists the L input
// channels of that class's window (wrapping past the last channel). Every multiply-add is a
// real one: no masked zeros, so the FLOPs are exactly Cout * L * P per image.
//
// Schedule: the work is cut into tasks of (image, block of pixels, range of row blocks). A row
// block is up to MR output channels of one class (they read the same window). For each row
// block the micro-kernel keeps MR x NV vector accumulators in registers, streams the L window
// rows of the pixel block once, and writes the MR output rows straight into canonical order.
// Pixel blocks are short (NV vectors), so the window rows of one block stay in L1/L2 while all
// classes run over them.

#include <algorithm>
#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
namespace simd {
constexpr int width = 16;
constexpr int max_vectors = 4;
using vector = __m512;
using mask = __mmask16;
inline mask tail_mask(int count) { return static_cast<mask>((1u << count) - 1u); }
inline vector zero() { return _mm512_setzero_ps(); }
inline vector broadcast(float value) { return _mm512_set1_ps(value); }
inline vector load(const float* source) { return _mm512_loadu_ps(source); }
inline vector load(const float* source, mask m, int) { return _mm512_maskz_loadu_ps(m, source); }
inline void store(float* target, vector value) { _mm512_storeu_ps(target, value); }
inline void store(float* target, vector value, mask m, int) { _mm512_mask_storeu_ps(target, m, value); }
inline vector fma(vector a, vector b, vector c) { return _mm512_fmadd_ps(a, b, c); }
}  // namespace simd
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
namespace simd {
constexpr int width = 8;
constexpr int max_vectors = 2;  // 16 ymm registers: 4 x 2 accumulators, 2 loads, 1 broadcast
using vector = __m256;
using mask = __m256i;
inline mask tail_mask(int count) {
    alignas(32) int32_t lanes[8];
    for (int lane = 0; lane < 8; ++lane) lanes[lane] = lane < count ? -1 : 0;
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes));
}
inline vector zero() { return _mm256_setzero_ps(); }
inline vector broadcast(float value) { return _mm256_set1_ps(value); }
inline vector load(const float* source) { return _mm256_loadu_ps(source); }
inline vector load(const float* source, mask m, int) { return _mm256_maskload_ps(source, m); }
inline void store(float* target, vector value) { _mm256_storeu_ps(target, value); }
inline void store(float* target, vector value, mask m, int) { _mm256_maskstore_ps(target, m, value); }
inline vector fma(vector a, vector b, vector c) { return _mm256_fmadd_ps(a, b, c); }
}  // namespace simd
#else
namespace simd {
// Portable fallback: short fixed-size arrays that the compiler can vectorize.
constexpr int width = 8;
constexpr int max_vectors = 2;
struct vector {
    float lane[8];
};
using mask = int;
inline mask tail_mask(int count) { return count; }
inline vector zero() { return vector{}; }
inline vector broadcast(float value) {
    vector result;
    for (float& lane : result.lane) lane = value;
    return result;
}
inline vector load(const float* source) {
    vector result;
    for (int lane = 0; lane < 8; ++lane) result.lane[lane] = source[lane];
    return result;
}
inline vector load(const float* source, mask, int count) {
    vector result{};
    for (int lane = 0; lane < count; ++lane) result.lane[lane] = source[lane];
    return result;
}
inline void store(float* target, vector value) {
    for (int lane = 0; lane < 8; ++lane) target[lane] = value.lane[lane];
}
inline void store(float* target, vector value, mask, int count) {
    for (int lane = 0; lane < count; ++lane) target[lane] = value.lane[lane];
}
inline vector fma(vector a, vector b, vector c) {
    for (int lane = 0; lane < 8; ++lane) c.lane[lane] += a.lane[lane] * b.lane[lane];
    return c;
}
}  // namespace simd
#endif

namespace {

constexpr int max_rows = 4;          // output channels per row block (MR)
constexpr int64_t max_length = 4096;  // window length L; scc_native.py checks it

// MR output rows x NV vectors of pixels; the last vector holds `tail` pixels (1..width).
template <int MR, int NV>
inline void micro_kernel(const float* const* weight_rows, const float* input, const int64_t* row_offsets,
                         int64_t length, float* const* output_rows, simd::mask last, int tail) {
    simd::vector accumulator[MR][NV];
    for (int row = 0; row < MR; ++row)
        for (int vector = 0; vector < NV; ++vector) accumulator[row][vector] = simd::zero();
    for (int64_t k = 0; k < length; ++k) {
        const float* source = input + row_offsets[k];
        simd::vector pixels[NV];
        for (int vector = 0; vector < NV - 1; ++vector) pixels[vector] = simd::load(source + simd::width * vector);
        pixels[NV - 1] = simd::load(source + simd::width * (NV - 1), last, tail);
        for (int row = 0; row < MR; ++row) {
            const simd::vector coefficient = simd::broadcast(weight_rows[row][k]);
            for (int vector = 0; vector < NV; ++vector)
                accumulator[row][vector] = simd::fma(coefficient, pixels[vector], accumulator[row][vector]);
        }
    }
    for (int row = 0; row < MR; ++row) {
        for (int vector = 0; vector < NV - 1; ++vector)
            simd::store(output_rows[row] + simd::width * vector, accumulator[row][vector]);
        simd::store(output_rows[row] + simd::width * (NV - 1), accumulator[row][NV - 1], last, tail);
    }
}

template <int MR>
inline void with_vectors(int vectors, const float* const* weight_rows, const float* input, const int64_t* offsets,
                         int64_t length, float* const* output_rows, simd::mask last, int tail) {
    switch (vectors) {
        case 1: micro_kernel<MR, 1>(weight_rows, input, offsets, length, output_rows, last, tail); break;
        case 2: micro_kernel<MR, 2>(weight_rows, input, offsets, length, output_rows, last, tail); break;
#if defined(__AVX512F__)
        case 3: micro_kernel<MR, 3>(weight_rows, input, offsets, length, output_rows, last, tail); break;
        default: micro_kernel<MR, 4>(weight_rows, input, offsets, length, output_rows, last, tail); break;
#else
        default: micro_kernel<MR, 2>(weight_rows, input, offsets, length, output_rows, last, tail); break;
#endif
    }
}

inline void run_block(int rows, int vectors, const float* const* weight_rows, const float* input,
                      const int64_t* offsets, int64_t length, float* const* output_rows, simd::mask last, int tail) {
    switch (rows) {
        case 1: with_vectors<1>(vectors, weight_rows, input, offsets, length, output_rows, last, tail); break;
        case 2: with_vectors<2>(vectors, weight_rows, input, offsets, length, output_rows, last, tail); break;
        case 3: with_vectors<3>(vectors, weight_rows, input, offsets, length, output_rows, last, tail); break;
        default: with_vectors<4>(vectors, weight_rows, input, offsets, length, output_rows, last, tail); break;
    }
}

}  // namespace

extern "C" {

// Version of the C ABI below; scc_native.py refuses a library with another one.
int32_t nas_search_scc_abi_version() { return 1; }

// x: (N, in_channels, pixels); weight: (out_channels, length); out: (N, out_channels, pixels).
// order: output channels grouped by class; blocks: (first index into order, rows <= 4, class)
// per row block, classes contiguous; window: (classes, length) input channel of each entry.
// Returns 0, or -1 for arguments out of range (nothing written).
int32_t nas_search_scc_forward_f32(const float* x, const float* weight, float* out, int64_t batch,
                                   int64_t in_channels, int64_t out_channels, int64_t pixels, int64_t length,
                                   const int32_t* order, const int32_t* blocks, int64_t block_count,
                                   const int32_t* window, int64_t threads) {
    if (length < 1 || length > max_length || batch < 0 || pixels < 0 || block_count < 1 || threads < 1) return -1;
    if (batch == 0 || pixels == 0) return 0;
    const int64_t block_width = static_cast<int64_t>(simd::width) * simd::max_vectors;
    const int64_t pixel_blocks = (pixels + block_width - 1) / block_width;
    const int64_t base_tasks = batch * pixel_blocks;
    // Enough tasks for every thread when there are few images and pixels (batch 1 at 7x7).
    const int64_t wanted = (4 * threads + base_tasks - 1) / base_tasks;
    const int64_t groups = std::max<int64_t>(1, std::min<int64_t>(block_count, wanted));
    const int64_t tasks = base_tasks * groups;
    const bool parallel = threads > 1 && tasks > 1 && batch * out_channels * pixels * length >= 32768;
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(threads)) if (parallel)
    for (int64_t task = 0; task < tasks; ++task) {
        const int64_t group = task % groups;
        const int64_t rest = task / groups;
        const int64_t pixel_block = rest % pixel_blocks;
        const int64_t image = rest / pixel_blocks;
        const int64_t first_pixel = pixel_block * block_width;
        const int64_t count = std::min(block_width, pixels - first_pixel);
        const int vectors = static_cast<int>((count + simd::width - 1) / simd::width);
        const int tail = static_cast<int>(count - static_cast<int64_t>(simd::width) * (vectors - 1));
        const simd::mask last = simd::tail_mask(tail);
        const float* input = x + image * in_channels * pixels + first_pixel;
        int64_t offsets[max_length];
        int32_t offsets_class = -1;
        const int64_t first_block = block_count * group / groups;
        const int64_t end_block = block_count * (group + 1) / groups;
        for (int64_t block = first_block; block < end_block; ++block) {
            const int32_t first = blocks[3 * block];
            const int32_t rows = blocks[3 * block + 1];
            const int32_t window_class = blocks[3 * block + 2];
            if (window_class != offsets_class) {
                const int32_t* channels = window + static_cast<int64_t>(window_class) * length;
                for (int64_t k = 0; k < length; ++k) offsets[k] = static_cast<int64_t>(channels[k]) * pixels;
                offsets_class = window_class;
            }
            // Eight slots, not max_rows: with exactly four, GCC 12 keeps the pointers in
            // registers and then spills the micro-kernel's pixel vectors to the stack
            // (measured: twice as slow).
            const float* weight_rows[2 * max_rows];
            float* output_rows[2 * max_rows];
            for (int32_t row = 0; row < rows; ++row) {
                const int64_t channel = order[first + row];
                weight_rows[row] = weight + channel * length;
                output_rows[row] = out + (image * out_channels + channel) * pixels + first_pixel;
            }
            run_block(rows, vectors, weight_rows, input, offsets, length, output_rows, last, tail);
        }
    }
    return 0;
}

}  // extern "C"
