#include "paste_back.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <system_error>
#include <thread>
#include <vector>

namespace ditto {

namespace {

// OpenCV 4.x warpAffine: positions in AB_BITS fixed point, rounded to 1/2^INTER_BITS px.
constexpr int kAbBits = 10;
constexpr int kInterBits = 5;
constexpr int kInterTabSize = 1 << kInterBits;
constexpr double kAbScale = 1 << kAbBits;
// Half a 1/32 px step in AB units: the rounding of the position to its 1/32 px cell.
constexpr std::int64_t kRoundDelta = (1 << kAbBits) / kInterTabSize / 2;

// Rows per unit of work: small enough that two threads finish together even when the window's
// rows cost different amounts (a rotated crop covers more of some rows than others).
constexpr int kRowsPerTask = 8;

// Bilinear weights (top-left, top-right, bottom-left, bottom-right) for every 1/32 px offset,
// as OpenCV tabulates them: float products of (1 − f/32, f/32), all exact.
struct WeightTable {
    std::array<std::array<float, 4>, kInterTabSize * kInterTabSize> w{};
    WeightTable() {
        for (int fy = 0; fy < kInterTabSize; ++fy) {
            const float wy1 = static_cast<float>(fy) / kInterTabSize, wy0 = 1.0f - wy1;
            for (int fx = 0; fx < kInterTabSize; ++fx) {
                const float wx1 = static_cast<float>(fx) / kInterTabSize, wx0 = 1.0f - wx1;
                w[fy * kInterTabSize + fx] = {wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1};
            }
        }
    }
};

const WeightTable& weight_table() {
    static const WeightTable table;
    return table;
}

// OpenCV's invertAffineTransform, with its operation order: frame position -> crop position.
Affine2x3 invert(const Affine2x3& m) {
    const double det = m[0] * m[4] - m[1] * m[3];
    const double inv_det = det != 0 ? 1.0 / det : 0.0;
    const double a11 = m[4] * inv_det, a12 = -m[1] * inv_det;
    const double a21 = -m[3] * inv_det, a22 = m[0] * inv_det;
    return {a11, a12, -a11 * m[2] - a12 * m[5], a21, a22, -a21 * m[2] - a22 * m[5]};
}

// Everything one call's rows share.
struct PasteJob {
    const std::uint8_t* frame;
    std::uint8_t* out;
    int height, width;
    PasteSource source;
    Affine2x3 frame_to_crop;
    FrameWindow window;
};

// The four taps of a 2x2 block whose top-left is (sx, sy); taps outside the source read 0, the
// constant border. The image is C-contiguous with `Channels` floats per pixel.
template <int Channels>
struct Taps {
    std::array<float, Channels> v[4];

    Taps(const float* image, int height, int width, std::int64_t sx, std::int64_t sy) {
        const std::ptrdiff_t stride = static_cast<std::ptrdiff_t>(width) * Channels;
        if (sx >= 0 && sx + 1 < width && sy >= 0 && sy + 1 < height) {
            const float* p = image + sy * stride + sx * Channels;
            load(0, p);
            load(1, p + Channels);
            load(2, p + stride);
            load(3, p + stride + Channels);
            return;
        }
        for (int k = 0; k < 4; ++k) {
            const std::int64_t x = sx + (k & 1), y = sy + (k >> 1);
            if (x >= 0 && x < width && y >= 0 && y < height)
                load(k, image + y * stride + x * Channels);
            else
                v[k].fill(0.0f);
        }
    }

    void load(int k, const float* p) { std::copy(p, p + Channels, v[k].begin()); }

    // Left to right, as OpenCV's remap sums them; the zero taps of the border add nothing.
    float sample(int c, const std::array<float, 4>& w) const {
        return v[0][c] * w[0] + v[1][c] * w[1] + v[2][c] * w[2] + v[3][c] * w[3];
    }
};

void paste_row(const PasteJob& job, int y) {
    const Affine2x3& inv = job.frame_to_crop;
    const PasteSource& src = job.source;
    const auto& weights = weight_table().w;
    // OpenCV splits each position into a per-row and a per-column part and rounds each to an
    // integer in AB units (half to even, like its saturate_cast) before adding them. Shifts of
    // negative positions round toward −∞ (arithmetic shift: GCC, Clang and MSVC; C++20 on).
    const std::int64_t row_x = std::llrint((inv[1] * y + inv[2]) * kAbScale) + kRoundDelta;
    const std::int64_t row_y = std::llrint((inv[4] * y + inv[5]) * kAbScale) + kRoundDelta;
    const std::size_t row_offset = static_cast<std::size_t>(y) * job.width * 3;
    const std::uint8_t* frame_row = job.frame + row_offset;
    std::uint8_t* out_row = job.out + row_offset;

    for (int x = job.window.x0; x < job.window.x1; ++x) {
        const std::int64_t px = (row_x + std::llrint(inv[0] * x * kAbScale)) >> (kAbBits - kInterBits);
        const std::int64_t py = (row_y + std::llrint(inv[3] * x * kAbScale)) >> (kAbBits - kInterBits);
        const std::int64_t sx = px >> kInterBits, sy = py >> kInterBits;
        // A block wholly outside the source warps to 0 in the mask: the frame shows through.
        if (sx < -1 || sx >= src.width || sy < -1 || sy >= src.height) continue;
        const auto& w = weights[(py & (kInterTabSize - 1)) * kInterTabSize + (px & (kInterTabSize - 1))];

        const float mask = Taps<1>(src.mask, src.height, src.width, sx, sy).sample(0, w);
        const float alpha = std::min(std::max(mask, 0.0f), 1.0f);
        if (alpha == 0.0f) continue;  // 0·face + 1·frame is the frame (face finite), already in place
        const float keep = 1.0f - alpha;
        const Taps<3> face(src.render, src.height, src.width, sx, sy);
        const std::size_t pixel = static_cast<std::size_t>(x) * 3;
        for (int c = 0; c < 3; ++c) {
            const float mixed = alpha * face.sample(c, w) + keep * static_cast<float>(frame_row[pixel + c]);
            // Clamp, then truncate toward zero as NumPy's astype(uint8) does.
            out_row[pixel + c] = static_cast<std::uint8_t>(std::min(std::max(mixed, 0.0f), 255.0f));
        }
    }
}

// Out of place, every row of `out` starts as the frame's; in place only the window's rows change.
void run_rows(const PasteJob& job, std::atomic<int>& next_row, int end_row) {
    const bool in_place = job.out == job.frame;
    const std::size_t row_bytes = static_cast<std::size_t>(job.width) * 3;
    for (;;) {
        const int begin = next_row.fetch_add(kRowsPerTask, std::memory_order_relaxed);
        if (begin >= end_row) return;
        for (int y = begin; y < std::min(begin + kRowsPerTask, end_row); ++y) {
            if (!in_place)
                std::memcpy(job.out + y * row_bytes, job.frame + y * row_bytes, row_bytes);
            if (y >= job.window.y0 && y < job.window.y1) paste_row(job, y);
        }
    }
}

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
    const FrameWindow window = crop_footprint(crop_to_frame, source.height, source.width, height, width);
    const PasteJob job{frame, out, height, width, source, invert(crop_to_frame), window};
    const bool in_place = out == frame;
    if (in_place && window.empty()) return;
    const int begin_row = in_place ? window.y0 : 0, end_row = in_place ? window.y1 : height;
    std::atomic<int> next_row{begin_row};

    const int tasks = (end_row - begin_row + kRowsPerTask - 1) / kRowsPerTask;
    if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
    const unsigned helpers = std::min<unsigned>(threads, std::max(tasks, 1)) - 1;
    std::vector<std::thread> pool;
    pool.reserve(helpers);
    for (unsigned i = 0; i < helpers; ++i) {
        try {
            pool.emplace_back(run_rows, std::cref(job), std::ref(next_row), end_row);
        } catch (const std::system_error&) {
            break;  // no more threads to be had: the rows left go to the threads already running
        }
    }
    run_rows(job, next_row, end_row);
    for (std::thread& t : pool) t.join();
}

}  // namespace ditto
