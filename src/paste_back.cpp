#include "paste_back.hpp"

#include "thread_pool.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
// A second build of the row sampler for CPUs with AVX2, chosen at run time (the library itself
// targets baseline x86-64). GCC and Clang only: they compile one function for another target.
#if defined(__SSE2__) && (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define DITTO_PASTE_AVX2 1
#include <immintrin.h>
#endif

namespace ditto {

namespace {

// OpenCV 4.x warpAffine: positions in AB_BITS fixed point, rounded to 1/2^INTER_BITS px.
constexpr int kAbBits = 10;
constexpr int kInterBits = 5;
constexpr int kInterTabSize = 1 << kInterBits;
constexpr double kAbScale = 1 << kAbBits;
// Half a 1/32 px step in AB units: the rounding of the position to its 1/32 px cell.
constexpr std::int64_t kRoundDelta = (1 << kAbBits) / kInterTabSize / 2;
// Positions [p·2^AB, (p + 1)·2^AB) in AB units (round delta included) sample the block whose
// top-left tap is source pixel p.
constexpr std::int64_t kAbPerPixel = 1 << kAbBits;

// Frame rows per unit of work: small enough that two threads finish together even when the
// window's rows cost different amounts (a rotated crop covers more of some rows than others).
constexpr int kRowsPerTask = 8;
// Source rows per unit of the per-call preparation (render conversion, opaque-block map).
constexpr int kSourceRowsPerTask = 32;

// One 1/32 px offset's bilinear weights (top-left, top-right, bottom-left, bottom-right), each
// repeated over four lanes so that a colour vector multiplies by a weight loaded as is.
// 64-byte aligned: one cache line, and lanes[0..1] / lanes[2..3] load as one aligned 256-bit vector.
struct alignas(64) Weights {
    float lanes[4][4];
    float operator[](int tap) const { return lanes[tap][0]; }
};

// The weights of every offset as OpenCV tabulates them: float products of (1 − f/32, f/32), all
// exact multiples of 1/1024 that sum to exactly 1.
struct WeightTable {
    std::array<Weights, kInterTabSize * kInterTabSize> w{};
    WeightTable() {
        for (int fy = 0; fy < kInterTabSize; ++fy) {
            const float wy1 = static_cast<float>(fy) / kInterTabSize, wy0 = 1.0f - wy1;
            for (int fx = 0; fx < kInterTabSize; ++fx) {
                const float wx1 = static_cast<float>(fx) / kInterTabSize, wx0 = 1.0f - wx1;
                const float taps[4] = {wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1};
                for (int tap = 0; tap < 4; ++tap)
                    std::fill_n(w[fy * kInterTabSize + fx].lanes[tap], 4, taps[tap]);
            }
        }
    }
};

const WeightTable& weight_table() {
    static const WeightTable table;
    return table;
}

// Red, green, blue and a spare lane. Every lane goes through exactly the float operations of the
// per-channel formula (no fused multiply-adds), so the bytes are the same as channel by channel.
#if defined(__SSE2__)
struct Rgbx {
    __m128 v;

    static Rgbx load(const float* p) { return {_mm_loadu_ps(p)}; }  // reads 4 floats
    static Rgbx from_bytes(const std::uint8_t* p) {
        const int bits = p[0] | p[1] << 8 | p[2] << 16;
        const __m128i zero = _mm_setzero_si128();
        const __m128i bytes = _mm_cvtsi32_si128(bits);
        return {_mm_cvtepi32_ps(_mm_unpacklo_epi16(_mm_unpacklo_epi8(bytes, zero), zero))};
    }
    Rgbx operator*(float s) const { return {_mm_mul_ps(v, _mm_set1_ps(s))}; }
    Rgbx operator*(Rgbx o) const { return {_mm_mul_ps(v, o.v)}; }
    Rgbx operator+(Rgbx o) const { return {_mm_add_ps(v, o.v)}; }
    // Clamped to [0, 255], then truncated toward zero as NumPy's astype(uint8) does: R, G, B
    // and a fourth byte of junk, which costs less than writing three bytes alone. Only the top
    // is clamped in float: anything below 0 truncates to a negative integer or 0x80000000 (NaN
    // too, which gives 0 as the scalar cast does on x86), and the saturating packs make that 0.
    void store4(std::uint8_t* p) const {
        __m128i ints = _mm_cvttps_epi32(_mm_min_ps(_mm_set1_ps(255.0f), v));
        ints = _mm_packus_epi16(_mm_packs_epi32(ints, ints), ints);
        const int bytes = _mm_cvtsi128_si32(ints);
        std::memcpy(p, &bytes, 4);  // x86 is little-endian: R, G, B first
    }
    void store3(std::uint8_t* p) const {
        std::uint8_t bytes[4];
        store4(bytes);
        std::memcpy(p, bytes, 3);
    }
};
#else
struct Rgbx {
    std::array<float, 4> v;

    static Rgbx load(const float* p) { return {{p[0], p[1], p[2], p[3]}}; }
    static Rgbx from_bytes(const std::uint8_t* p) {
        return {{static_cast<float>(p[0]), static_cast<float>(p[1]), static_cast<float>(p[2]), 0.0f}};
    }
    Rgbx operator*(float s) const { return {{v[0] * s, v[1] * s, v[2] * s, v[3] * s}}; }
    Rgbx operator*(Rgbx o) const { return {{v[0] * o.v[0], v[1] * o.v[1], v[2] * o.v[2], v[3] * o.v[3]}}; }
    Rgbx operator+(Rgbx o) const { return {{v[0] + o.v[0], v[1] + o.v[1], v[2] + o.v[2], v[3] + o.v[3]}}; }
    void store4(std::uint8_t* p) const {
        store3(p);
        p[3] = 0;
    }
    void store3(std::uint8_t* p) const {
        for (int c = 0; c < 3; ++c) p[c] = static_cast<std::uint8_t>(std::min(std::max(v[c], 0.0f), 255.0f));
    }
};
#endif

// A bilinear sample from its four taps, summed left to right as OpenCV's remap sums them.
float bilinear(float top_left, float top_right, float bottom_left, float bottom_right, const Weights& w) {
    return top_left * w[0] + top_right * w[1] + bottom_left * w[2] + bottom_right * w[3];
}

// The same, for every channel at once.
Rgbx bilinear(Rgbx top_left, Rgbx top_right, Rgbx bottom_left, Rgbx bottom_right, const Weights& w) {
    return top_left * Rgbx::load(w.lanes[0]) + top_right * Rgbx::load(w.lanes[1]) +
           bottom_left * Rgbx::load(w.lanes[2]) + bottom_right * Rgbx::load(w.lanes[3]);
}

// The mask clipped to [0, 1]: the face's share of the output pixel.
float face_share(float mask) { return std::min(std::max(mask, 0.0f), 1.0f); }

// alpha·face + (1 − alpha)·frame, in the reference's order.
Rgbx blend(float alpha, Rgbx face, const std::uint8_t* frame_pixel) {
    const float keep = 1.0f - alpha;
    return face * alpha + Rgbx::from_bytes(frame_pixel) * keep;
}

// OpenCV's invertAffineTransform, with its operation order: frame position -> crop position.
Affine2x3 invert(const Affine2x3& m) {
    const double det = m[0] * m[4] - m[1] * m[3];
    const double inv_det = det != 0 ? 1.0 / det : 0.0;
    const double a11 = m[4] * inv_det, a12 = -m[1] * inv_det;
    const double a21 = -m[3] * inv_det, a22 = m[0] * inv_det;
    return {a11, a12, -a11 * m[2] - a12 * m[5], a21, a22, -a21 * m[2] - a22 * m[5]};
}

// Half-open index interval [begin, end); empty when end <= begin.
struct Span {
    int begin = 0;
    int end = 0;
};

Span intersect(Span a, Span b) { return {std::max(a.begin, b.begin), std::min(a.end, b.end)}; }

// The first i in [0, n) with pred(i), n if none; pred must be false, then true.
template <class Pred>
int first_where(int n, Pred pred) {
    int lo = 0, hi = n;
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        if (pred(mid))
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

// OpenCV splits each position into a per-row and a per-column part and rounds each to an integer
// in AB units (half to even, like its saturate_cast) before adding them. The per-column parts of
// the window's columns, index x − window.x0 (OpenCV's adelta and bdelta).
struct ColumnParts {
    std::vector<std::int64_t> x, y;
    std::vector<std::uint32_t> x32, y32;  // the same modulo 2^32
    // Whether each part moves one way along the row, so that any range of source pixels is read
    // by one interval of columns. Always, unless llrint saturates on an absurd matrix.
    bool monotonic = true;
    bool x_rising = true, y_rising = true;

    ColumnParts(const Affine2x3& inv, const FrameWindow& window) {
        for (auto* part : {&x, &y}) part->reserve(window.x1 - window.x0);
        for (auto* part : {&x32, &y32}) part->reserve(window.x1 - window.x0);
        for (int col = window.x0; col < window.x1; ++col) {
            x.push_back(std::llrint(inv[0] * col * kAbScale));
            y.push_back(std::llrint(inv[3] * col * kAbScale));
            x32.push_back(static_cast<std::uint32_t>(x.back()));
            y32.push_back(static_cast<std::uint32_t>(y.back()));
        }
        if (x.empty()) return;
        x_rising = x.back() >= x.front();
        y_rising = y.back() >= y.front();
        for (std::size_t i = 1; i < x.size(); ++i) {
            monotonic = monotonic && (x_rising ? x[i] >= x[i - 1] : x[i] <= x[i - 1]) &&
                        (y_rising ? y[i] >= y[i - 1] : y[i] <= y[i - 1]);
        }
    }

    // The columns (window-relative) whose blocks' top-left taps lie in source columns
    // [first_x, last_x] and rows [first_y, last_y], for a row whose per-row parts are row_x, row_y.
    Span reading(std::int64_t row_x, std::int64_t row_y, std::int64_t first_x, std::int64_t last_x,
                 std::int64_t first_y, std::int64_t last_y) const {
        return intersect(between(x, x_rising, row_x, first_x, last_x),
                         between(y, y_rising, row_y, first_y, last_y));
    }

  private:
    // The i with first <= (base + part[i]) / 2^AB (rounded down) <= last; an interval since
    // `part` is monotonic.
    static Span between(const std::vector<std::int64_t>& part, bool rising, std::int64_t base,
                        std::int64_t first, std::int64_t last) {
        const std::int64_t lo = first * kAbPerPixel, hi = last * kAbPerPixel + (kAbPerPixel - 1);
        const int n = static_cast<int>(part.size());
        const auto below = [&](int i) { return base + part[i] < lo; };
        const auto above = [&](int i) { return base + part[i] > hi; };
        if (rising)
            return {first_where(n, [&](int i) { return !below(i); }), first_where(n, above)};
        return {first_where(n, [&](int i) { return !above(i); }), first_where(n, below)};
    }
};

// One row of the opaque-block map: for each block whose top-left tap is in mask row `top`
// (`width` floats, the next row below it), whether all four of its taps are exactly 1.
void mark_opaque_blocks(const float* top, int width, std::uint8_t* opaque) {
    const float* bottom = top + width;
    for (int x = 0; x + 1 < width; ++x) {
        opaque[x] = (top[x] == 1.0f) & (top[x + 1] == 1.0f) & (bottom[x] == 1.0f) & (bottom[x + 1] == 1.0f);
    }
    opaque[width - 1] = 0;  // no block: there is no tap to its right
}

// Pixels [first, last) of a (3, h, w) render in [0, 1], plane = h·w, into (h, w, 3) × 255 as the
// reference converts: clip to [0, 1] (NaN stays NaN, as in np.clip), then × 255 in float32.
void convert_chw_unit(const float* chw, std::size_t plane, std::size_t first, std::size_t last, float* hwc) {
    std::size_t i = first;
#if defined(__SSE2__)
    // Four pixels at a time. max(0, v) and min(1, v) in this operand order are exactly the
    // scalar std::max(v, 0) and std::min(v, 1), NaN and −0 included.
    const __m128 zero = _mm_setzero_ps(), one = _mm_set1_ps(1.0f), scale = _mm_set1_ps(255.0f);
    const auto channel = [&](std::size_t c) {
        return _mm_mul_ps(_mm_min_ps(one, _mm_max_ps(zero, _mm_loadu_ps(chw + c * plane + i))), scale);
    };
    for (; i + 4 <= last; i += 4) {
        const __m128 r = channel(0), g = channel(1), b = channel(2);
        float* out = hwc + i * 3;
        // Interleaved: r0 g0 b0 r1 | g1 b1 r2 g2 | b2 r3 g3 b3.
        _mm_storeu_ps(out, _mm_shuffle_ps(_mm_unpacklo_ps(r, g), _mm_shuffle_ps(b, r, _MM_SHUFFLE(1, 1, 0, 0)),
                                          _MM_SHUFFLE(2, 0, 1, 0)));
        _mm_storeu_ps(out + 4, _mm_shuffle_ps(_mm_unpacklo_ps(g, b), _mm_unpackhi_ps(r, g), _MM_SHUFFLE(1, 0, 3, 2)));
        _mm_storeu_ps(out + 8, _mm_shuffle_ps(_mm_shuffle_ps(b, r, _MM_SHUFFLE(3, 3, 2, 2)), _mm_unpackhi_ps(g, b),
                                              _MM_SHUFFLE(3, 2, 2, 0)));
    }
#endif
    for (; i < last; ++i) {
        for (std::size_t c = 0; c < 3; ++c)
            hwc[i * 3 + c] = std::min(std::max(chw[c * plane + i], 0.0f), 1.0f) * 255.0f;
    }
}

// Whether positions inside a height x width source, and block indices into it, fit in 32 bits,
// which the sampling of blocks inside the source relies on. Always, short of gigapixel sources.
bool fits_32_bits(int height, int width) {
    constexpr std::int64_t kLimit = std::numeric_limits<std::int32_t>::max();
    return (std::int64_t{width} + 1) * kAbPerPixel <= kLimit && (std::int64_t{height} + 1) * kAbPerPixel <= kLimit &&
           std::int64_t{height} * width <= kLimit;
}

// What the sampling of one row's blocks inside the source reads and writes, as plain pointers.
// The row functions take it by value: a byte store may alias any memory the compiler cannot see
// is private, so members read through a reference would be reloaded after every pixel.
struct InsideRow {
    const std::uint32_t* block;   // per column: source index of its block's top-left tap
    const std::uint32_t* weight;  // per column: weight table index
    const Weights* weights;
    const float* render;  // (h, w, 3) in [0, 255]
    const float* mask;
    const std::uint8_t* opaque;
    std::size_t stride;  // floats per render row
    std::size_t w;       // floats per mask row
    const std::uint8_t* frame_row;  // the frame's and out's pixel of window column 0
    std::uint8_t* out_row;
};

// The output pixel of a column whose block lies inside the source, given its face sample: the
// clamped face where the block is opaque (all four mask taps are 1 and the weights sum to exactly
// 1, so the mask samples to 1 and 1·face + 0·frame is the face, whatever the frame), the frame
// where the mask samples to 0 (face finite), else the blend. The frame pixel goes through the
// same float conversion and store as a blended one, which gives its bytes back unchanged.
inline Rgbx finish_inside(const InsideRow& r, int i, std::size_t at, const Weights& wt, Rgbx face) {
    if (r.opaque[at]) return face;
    const float* m = r.mask + at;
    const float alpha = face_share(bilinear(m[0], m[1], m[r.w], m[r.w + 1], wt));
    if (alpha == 0.0f) return Rgbx::from_bytes(r.frame_row + i * 3);
    return blend(alpha, face, r.frame_row + i * 3);
}

inline Rgbx sample_inside(const InsideRow& r, int i) {
    const std::size_t at = r.block[i];
    const Weights& wt = r.weights[r.weight[i]];
    const float* tap = r.render + at * 3;
    const Rgbx face = bilinear(Rgbx::load(tap), Rgbx::load(tap + 3), Rgbx::load(tap + r.stride),
                               Rgbx::load(tap + r.stride + 3), wt);
    return finish_inside(r, i, at, wt, face);
}

// Columns [begin, end) of a row, in groups of four pixels that are all computed before any is
// stored: a store of four bytes then never clobbers a frame byte that a later pixel of the group
// still reads (in place, out is the frame), and the group's pixels are stored in order, each
// fourth byte of junk overwritten by the next pixel, the last one stored as three bytes.
inline void sample_inside_row(const InsideRow r, int begin, int end) {
    int i = begin;
    for (; i + 4 <= end; i += 4) {
        const Rgbx p0 = sample_inside(r, i), p1 = sample_inside(r, i + 1), p2 = sample_inside(r, i + 2),
                   p3 = sample_inside(r, i + 3);
        std::uint8_t* o = r.out_row + i * 3;
        p0.store4(o);
        p1.store4(o + 3);
        p2.store4(o + 6);
        p3.store3(o + 9);
    }
    for (; i < end; ++i) sample_inside(r, i).store3(r.out_row + i * 3);
}

#if defined(DITTO_PASTE_AVX2)
#define DITTO_AVX2 __attribute__((target("avx2")))

// A block row's two taps [left, ·, right, ·] from the 8 floats at p (a lambda would not inherit
// the target).
DITTO_AVX2 inline __m256 tap_pair(const float* p) {
    return _mm256_permutevar8x32_ps(_mm256_loadu_ps(p), _mm256_setr_epi32(0, 1, 2, 3, 3, 4, 5, 6));
}

// The face samples of columns i and i + 1, one per 128-bit half, with exactly the per-lane float
// operations of the SSE version: ((tl·w0 + tr·w1) + bl·w2) + br·w3, products rounded separately
// (target avx2 does not enable FMA, and the file is built with -ffp-contract=off). A row's two
// taps are one 8-float load [tl, tr, 2 floats of the next pixel] spread to [tl · | tr ·], which
// multiplies by the weights' lanes[0..1] (or [2..3]) as one 256-bit load. The two floats past tr
// stay within the render: inside blocks have a row below the bottom taps (paste_row).
DITTO_AVX2 inline __m256 face_pair(const InsideRow& r, const float* tap0, const float* tap1, const Weights& w0,
                                   const Weights& w1) {
    const __m256 top0 = _mm256_mul_ps(tap_pair(tap0), _mm256_load_ps(w0.lanes[0]));
    const __m256 top1 = _mm256_mul_ps(tap_pair(tap1), _mm256_load_ps(w1.lanes[0]));
    const __m256 bottom0 = _mm256_mul_ps(tap_pair(tap0 + r.stride), _mm256_load_ps(w0.lanes[2]));
    const __m256 bottom1 = _mm256_mul_ps(tap_pair(tap1 + r.stride), _mm256_load_ps(w1.lanes[2]));
    // [tl·w0 of pixel 0 | of pixel 1] + [tr·w1 ...], then + bl·w2, then + br·w3.
    __m256 sum = _mm256_add_ps(_mm256_permute2f128_ps(top0, top1, 0x20), _mm256_permute2f128_ps(top0, top1, 0x31));
    sum = _mm256_add_ps(sum, _mm256_permute2f128_ps(bottom0, bottom1, 0x20));
    return _mm256_add_ps(sum, _mm256_permute2f128_ps(bottom0, bottom1, 0x31));
}

// Output pixels i and i + 1 as floats, one per half (finish_inside's cases).
DITTO_AVX2 inline __m256 sample_inside_pair(const InsideRow& r, int i) {
    const std::size_t at0 = r.block[i], at1 = r.block[i + 1];
    const Weights& w0 = r.weights[r.weight[i]];
    const Weights& w1 = r.weights[r.weight[i + 1]];
    const __m256 face = face_pair(r, r.render + at0 * 3, r.render + at1 * 3, w0, w1);
    if (r.opaque[at0] & r.opaque[at1]) return face;  // the common case inside the feather
    const Rgbx p0 = finish_inside(r, i, at0, w0, {_mm256_castps256_ps128(face)});
    const Rgbx p1 = finish_inside(r, i + 1, at1, w1, {_mm256_extractf128_ps(face, 1)});
    return _mm256_set_m128(p1.v, p0.v);
}

// Four output pixels (0, 1 in `p01`, 2, 3 in `p23`) stored as 12 bytes, converted as store4 does.
DITTO_AVX2 inline void store_four(std::uint8_t* o, __m256 p01, __m256 p23) {
    const __m256 top = _mm256_set1_ps(255.0f);
    const __m256i i01 = _mm256_cvttps_epi32(_mm256_min_ps(top, p01));
    const __m256i i23 = _mm256_cvttps_epi32(_mm256_min_ps(top, p23));
    // The packs work per 128-bit lane: bytes [p0 p2 p0 p2 | p1 p3 p1 p3], 4 per pixel.
    const __m256i words = _mm256_packs_epi32(i01, i23);
    const __m256i bytes = _mm256_packus_epi16(words, words);
    const __m128i pixels = _mm_unpacklo_epi32(_mm256_castsi256_si128(bytes), _mm256_extracti128_si256(bytes, 1));
    // R, G, B of each, junk bytes dropped.
    const __m128i rgb = _mm_shuffle_epi8(pixels, _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(o), rgb);
    const int last = _mm_cvtsi128_si32(_mm_srli_si128(rgb, 8));
    std::memcpy(o + 8, &last, 4);
}

// sample_inside_row, two pixels per 256-bit vector.
DITTO_AVX2 void sample_inside_row_avx2(const InsideRow r, int begin, int end) {
    int i = begin;
    for (; i + 4 <= end; i += 4) {
        const __m256 p01 = sample_inside_pair(r, i), p23 = sample_inside_pair(r, i + 2);
        store_four(r.out_row + i * 3, p01, p23);
    }
    for (; i < end; ++i) sample_inside(r, i).store3(r.out_row + i * 3);
}

bool has_avx2() {
    static const bool yes = __builtin_cpu_supports("avx2");
    return yes;
}
#endif

// What one thread reuses from row to row, window-relative columns.
struct RowScratch {
    std::vector<std::uint32_t> block;   // source index of each column's block's top-left tap
    std::vector<std::uint32_t> weight;  // weight table index of each column

    explicit RowScratch(int columns) : block(columns), weight(columns) {}
};

// One call: its inputs, what is prepared once per call, and the work shared among the threads.
class PasteCall {
  public:
    PasteCall(const std::uint8_t* frame, std::uint8_t* out, int height, int width, const PasteSource& source,
              const Affine2x3& crop_to_frame)
        : frame_(frame),
          out_(out),
          width_(width),
          source_(source),
          frame_to_crop_(invert(crop_to_frame)),
          window_(crop_footprint(crop_to_frame, source.height, source.width, height, width)),
          columns_(frame_to_crop_, window_),
          sample_inside_(columns_.monotonic && fits_32_bits(source.height, source.width)) {
        const bool in_place = out == frame;
        begin_row_ = in_place ? window_.y0 : 0;
        end_row_ = in_place ? window_.y1 : height;
        next_row_ = begin_row_;
        if (window_.empty()) return;  // nothing to sample: nothing to prepare
        const std::size_t pixels = static_cast<std::size_t>(source.height) * source.width;
        prepare_tasks_ = (source.height + kSourceRowsPerTask - 1) / kSourceRowsPerTask;
        // Neither is value-initialised: the preparation writes every element that is read.
        opaque_.reset(new std::uint8_t[pixels]);
        if (source.layout == RenderLayout::kChwUnit) {
            converted_.reset(new float[pixels * 3]);
            render_ = converted_.get();
        } else {
            render_ = source.render;
        }
    }

    // Units of work for this many threads at most: more would find nothing to do.
    int tasks() const {
        return std::max((end_row_ - begin_row_ + kRowsPerTask - 1) / kRowsPerTask, prepare_tasks_);
    }

    // Columns of the footprint window: the size of a thread's RowScratch.
    int window_columns() const { return window_.x1 - window_.x0; }

    // What every thread runs: a share of the preparation, then, once all of it is done, a share
    // of the frame's rows.
    void run(RowScratch& scratch) {
        for (int task; (task = next_prepare_.fetch_add(1, std::memory_order_relaxed)) < prepare_tasks_;) {
            prepare(task);
            prepared_.fetch_add(1, std::memory_order_release);
        }
        while (prepared_.load(std::memory_order_acquire) < prepare_tasks_) std::this_thread::yield();

        const std::size_t row_bytes = static_cast<std::size_t>(width_) * 3;
        for (;;) {
            const int begin = next_row_.fetch_add(kRowsPerTask, std::memory_order_relaxed);
            if (begin >= end_row_) return;
            for (int y = begin; y < std::min(begin + kRowsPerTask, end_row_); ++y) {
                // In place only the window's rows are visited. Out of place every byte of `out` is
                // written once: rows outside the window are the frame's, and paste_row copies the
                // frame only where it does not paste. (Sampling a task's rows by column tiles, for
                // locality in the source, measured no faster.)
                if (y >= window_.y0 && y < window_.y1)
                    paste_row(y, scratch);
                else
                    std::memcpy(out_ + y * row_bytes, frame_ + y * row_bytes, row_bytes);
            }
        }
    }

  private:
    // Source rows [first, last) of the preparation: the channel-first render converted to
    // (h, w, 3) × 255 and the opaque-block map of the block rows starting there.
    void prepare(int task) {
        const int first = task * kSourceRowsPerTask;
        const int last = std::min(first + kSourceRowsPerTask, source_.height);
        const std::size_t w = source_.width;
        if (source_.layout == RenderLayout::kChwUnit)
            convert_chw_unit(source_.render, source_.height * w, first * w, last * w, converted_.get());
        for (int y = first; y < std::min(last, source_.height - 1); ++y)
            mark_opaque_blocks(source_.mask + y * w, source_.width, opaque_.get() + y * w);
    }

    void paste_row(int y, RowScratch& scratch) const {
        const Affine2x3& inv = frame_to_crop_;
        // Shifts of negative positions round toward −∞ (arithmetic shift: GCC, Clang and MSVC;
        // C++20 on).
        const std::int64_t row_x = std::llrint((inv[1] * y + inv[2]) * kAbScale) + kRoundDelta;
        const std::int64_t row_y = std::llrint((inv[4] * y + inv[5]) * kAbScale) + kRoundDelta;
        if (!columns_.monotonic) {
            copy_frame_outside(y, {0, window_.x1 - window_.x0});
            paste_border(y, row_x, row_y, {0, window_.x1 - window_.x0});
            return;
        }
        const int h = source_.height, w = source_.width;
        // Columns whose block touches the source at all; outside them the mask warps to 0 and the
        // frame shows through.
        Span touching = columns_.reading(row_x, row_y, -1, w - 1, -1, h - 1);
        if (touching.end <= touching.begin) touching = {0, 0};
        copy_frame_outside(y, touching);
        // Columns whose block lies inside the source, with a row below it: its taps need no
        // bounds checks, and loading a tap's colour as four (AVX2: a row's two taps as eight)
        // floats stays within the render.
        Span inside = intersect(touching, columns_.reading(row_x, row_y, 0, w - 2, 0, h - 3));
        if (!sample_inside_ || inside.end <= inside.begin) inside = {touching.end, touching.end};
        paste_border(y, row_x, row_y, {touching.begin, inside.begin});
        paste_inside(y, row_x, row_y, inside, scratch);
        paste_border(y, row_x, row_y, {inside.end, touching.end});
    }

    // Window-relative columns `cols` of row y, taps outside the source reading 0 (the constant border).
    // Out of place, the frame's pixels of row y outside window-relative columns `pasted`: the
    // columns left of the window and right of it, and those of the window outside `pasted`.
    void copy_frame_outside(int y, Span pasted) const {
        if (out_ == frame_) return;
        const std::size_t row_offset = static_cast<std::size_t>(y) * width_ * 3;
        const std::size_t left = static_cast<std::size_t>(window_.x0 + pasted.begin) * 3;
        const std::size_t right = static_cast<std::size_t>(window_.x0 + pasted.end) * 3;
        std::memcpy(out_ + row_offset, frame_ + row_offset, left);
        std::memcpy(out_ + row_offset + right, frame_ + row_offset + right, std::size_t(width_) * 3 - right);
    }

    void paste_border(int y, std::int64_t row_x, std::int64_t row_y, Span cols) const {
        const auto& weights = weight_table().w;
        const int h = source_.height, w = source_.width;
        const std::size_t row_offset = static_cast<std::size_t>(y) * width_ * 3;
        const bool in_place = out_ == frame_;
        // Where the mask warps to 0 the output is the frame (face finite): already there in place.
        const auto keep_frame = [&](std::size_t pixel) {
            if (!in_place) std::memcpy(out_ + pixel, frame_ + pixel, 3);
        };
        for (int i = cols.begin; i < cols.end; ++i) {
            const std::size_t pixel = row_offset + static_cast<std::size_t>(window_.x0 + i) * 3;
            const std::int64_t px = (row_x + columns_.x[i]) >> (kAbBits - kInterBits);
            const std::int64_t py = (row_y + columns_.y[i]) >> (kAbBits - kInterBits);
            const std::int64_t sx = px >> kInterBits, sy = py >> kInterBits;
            if (sx < -1 || sx >= w || sy < -1 || sy >= h) {
                keep_frame(pixel);
                continue;
            }
            const Weights& wt = weights[(py & (kInterTabSize - 1)) * kInterTabSize + (px & (kInterTabSize - 1))];
            float mask[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            alignas(16) float face[4][4] = {};
            for (int k = 0; k < 4; ++k) {
                const std::int64_t tx = sx + (k & 1), ty = sy + (k >> 1);
                if (tx < 0 || tx >= w || ty < 0 || ty >= h) continue;
                const std::size_t at = static_cast<std::size_t>(ty) * w + tx;
                mask[k] = source_.mask[at];
                std::copy(render_ + at * 3, render_ + at * 3 + 3, face[k]);
            }
            const float alpha = face_share(bilinear(mask[0], mask[1], mask[2], mask[3], wt));
            if (alpha == 0.0f) {
                keep_frame(pixel);  // 0·face + 1·frame is the frame (face finite)
                continue;
            }
            const Rgbx sample = bilinear(Rgbx::load(face[0]), Rgbx::load(face[1]), Rgbx::load(face[2]),
                                         Rgbx::load(face[3]), wt);
            blend(alpha, sample, frame_ + pixel).store3(out_ + pixel);
        }
    }

    // Window-relative columns `cols` of row y whose blocks lie inside the source (paste_row).
    void paste_inside(int y, std::int64_t row_x, std::int64_t row_y, Span cols, RowScratch& scratch) const {
        if (cols.end <= cols.begin) return;
        // First where each column samples, in a loop the compiler vectorises. Inside the source a
        // position is a small non-negative number (fits_32_bits): the sums modulo 2^32 are exact.
        const std::uint32_t base_x = static_cast<std::uint32_t>(row_x), base_y = static_cast<std::uint32_t>(row_y);
        const std::uint32_t* col_x = columns_.x32.data();
        const std::uint32_t* col_y = columns_.y32.data();
        const std::uint32_t w = source_.width;
        std::uint32_t* block = scratch.block.data();
        std::uint32_t* weight = scratch.weight.data();
        for (int i = cols.begin; i < cols.end; ++i) {
            const std::uint32_t pos_x = base_x + col_x[i], pos_y = base_y + col_y[i];
            block[i] = (pos_y >> kAbBits) * w + (pos_x >> kAbBits);
            weight[i] = (pos_y & ((kInterTabSize - 1) << (kAbBits - kInterBits))) |
                        ((pos_x >> (kAbBits - kInterBits)) & (kInterTabSize - 1));
        }
        // Then the samples, straight into `out` (both builds give the same bytes).
        const std::size_t row_offset = static_cast<std::size_t>(y) * width_ * 3 + window_.x0 * std::size_t{3};
        const InsideRow r{block, weight, weight_table().w.data(), render_, source_.mask, opaque_.get(),
                          std::size_t{w} * 3, w, frame_ + row_offset, out_ + row_offset};
#if defined(DITTO_PASTE_AVX2)
        if (has_avx2()) {
            sample_inside_row_avx2(r, cols.begin, cols.end);
            return;
        }
#endif
        sample_inside_row(r, cols.begin, cols.end);
    }

    const std::uint8_t* frame_;
    std::uint8_t* out_;
    int width_;
    PasteSource source_;
    Affine2x3 frame_to_crop_;
    FrameWindow window_;
    ColumnParts columns_;
    bool sample_inside_;  // whether paste_inside may take the blocks inside the source
    int begin_row_ = 0, end_row_ = 0;
    int prepare_tasks_ = 0;
    std::unique_ptr<float[]> converted_;   // the render as (h, w, 3) × 255 when given channel-first
    const float* render_ = nullptr;        // (h, w, 3) in [0, 255]: the given render or converted_
    std::unique_ptr<std::uint8_t[]> opaque_;  // per block (top-left tap's index): all four mask taps are 1
    std::atomic<int> next_prepare_{0}, prepared_{0}, next_row_{0};
};

}  // namespace

FrameWindow crop_footprint(const Affine2x3& m, int crop_height, int crop_width, int frame_height,
                           int frame_width) {
    // A frame pixel reads the 2x2 source block at its back-projected position, so it can be
    // non-zero only if that position lies within one pixel of the crop: map the crop grown by
    // one pixel. One more pixel of margin covers the 1/32 px rounding of the position.
    double lo_x = INFINITY, lo_y = INFINITY, hi_x = -INFINITY, hi_y = -INFINITY;
    for (const double cx : {-1.0, static_cast<double>(crop_width)}) {
        for (const double cy : {-1.0, static_cast<double>(crop_height)}) {
            const double fx = m[0] * cx + m[1] * cy + m[2], fy = m[3] * cx + m[4] * cy + m[5];
            lo_x = std::min(lo_x, fx), hi_x = std::max(hi_x, fx);
            lo_y = std::min(lo_y, fy), hi_y = std::max(hi_y, fy);
        }
    }
    // Clamped in double first: a crop far outside the frame must not overflow the int casts.
    const auto clamp_to = [](double v, int limit) {
        return static_cast<int>(std::clamp(v, 0.0, static_cast<double>(limit)));
    };
    FrameWindow window;
    window.x0 = clamp_to(std::floor(lo_x) - 1, frame_width);
    window.y0 = clamp_to(std::floor(lo_y) - 1, frame_height);
    window.x1 = std::max(window.x0, clamp_to(std::ceil(hi_x) + 2, frame_width));
    window.y1 = std::max(window.y0, clamp_to(std::ceil(hi_y) + 2, frame_height));
    return window;
}

void paste_back(const std::uint8_t* frame, std::uint8_t* out, int height, int width,
                const PasteSource& source, const Affine2x3& crop_to_frame, unsigned threads) {
    PasteCall call(frame, out, height, width, source, crop_to_frame);
    const int tasks = call.tasks();
    if (tasks == 0) return;  // in place, and the crop lands outside the frame
    // Capped at the cores: more threads cannot speed up this CPU-bound work, and the shared
    // pool keeps every worker it starts.
    const unsigned cores = available_cores();
    const unsigned shares = std::min({threads == 0 ? cores : threads, cores, static_cast<unsigned>(tasks)});
    // One per share, allocated before any runs: a share's rows reuse it.
    std::vector<RowScratch> scratch(shares, RowScratch(call.window_columns()));
    // One pool for every thread count: it grows to the most threads any call has asked for (at
    // most the cores, less the calling thread, which takes a share itself), and a call asking
    // for fewer has only that many shares to hand out.
    ThreadPool& pool = shared_thread_pool();
    pool.reserve(shares - 1);
    pool.run(shares, [&call, &scratch](unsigned share) { call.run(scratch[share]); });
}

}  // namespace ditto
