// Paste-back (DITTO_SPEC §5.14): a rendered face goes back into its full frame under a feathered
// mask, in one pass over the frame window the crop lands on:
//
//   mask_w = clip(warpAffine(mask, M), 0, 1),  face_w = warpAffine(render, M),
//   out    = uint8(clip(mask_w·face_w + (1 − mask_w)·frame, 0, 255))   (truncating)
//
// Both warps are OpenCV 4.x's bilinear warpAffine with a constant-0 border, reproduced bit for
// bit: the inverse matrix in double with OpenCV's operation order, source positions in 10-bit
// fixed point rounded to 1/32 px, tabulated float weights and float sums in OpenCV's order. The
// blend is float32 in the reference's order. The file is built without floating-point
// contraction (CMakeLists.txt): a fused multiply-add would change the last bit of the sums.
//
// Per call, before any frame row (shared among the threads): the inverse matrix, the footprint
// window, the per-column parts of the source positions (OpenCV's adelta/bdelta), the channel-
// first render converted to HWC, and a map of the mask's opaque blocks (all four taps exactly
// 1). Per frame row, since positions move monotonically along a row, exact column intervals by
// binary search: columns whose block misses the source are skipped (the frame shows through);
// columns whose block lies inside it are sampled without bounds checks, the colour channels of a
// tap as one SSE2 vector; where the block is opaque the mask samples to exactly 1 (the weights
// are multiples of 1/1024 summing to 1), so the output is the clamped face and the blend and the
// frame read are skipped. On CPUs with AVX2 (checked at run time) two pixels share a 256-bit
// vector, the same float operations per lane. Pixels are stored straight into the output, and out
// of place only the pixels the paste does not write are copied from the frame: each output byte
// is written once. The kernel keeps no state between calls: the mask may change.
#pragma once

#include <array>
#include <cstdint>

namespace ditto {

// Row-major 2x3 affine matrix [a b c; d e f]: (x, y) -> (a·x + b·y + c, d·x + e·y + f).
using Affine2x3 = std::array<double, 6>;

// How the render is laid out in memory.
enum class RenderLayout {
    // height x width x 3, values in [0, 255]: the reference's converted render.
    kHwc255,
    // 3 x height x width, values in [0, 1]: the decoder's output as it comes. It is clipped to
    // [0, 1] and scaled by 255 in float32 into a per-call HWC copy (the threads share the
    // work), exactly the reference's conversion, so the result is the same.
    kChwUnit,
};

// The crop-space inputs: an RGB render and its mask, both height x width, C-contiguous.
struct PasteSource {
    const float* render = nullptr;
    const float* mask = nullptr;  // height x width, 1 = the render only, 0 = the frame only
    int height = 0;
    int width = 0;
    RenderLayout layout = RenderLayout::kHwc255;
};

// A rectangle of the frame: columns [x0, x1), rows [y0, y1).
struct FrameWindow {
    int x0 = 0;
    int y0 = 0;
    int x1 = 0;
    int y1 = 0;
    bool empty() const { return x1 <= x0 || y1 <= y0; }
};

// The window of a frame_height x frame_width frame outside which warping a
// crop_height x crop_width image through crop_to_frame gives exactly 0 (clipped to the frame).
FrameWindow crop_footprint(const Affine2x3& crop_to_frame, int crop_height, int crop_width,
                           int frame_height, int frame_width);

// Pastes `source` through `crop_to_frame` into a height x width x 3 uint8 frame. `out` may be
// `frame` itself (in place: only the footprint window is written) or a separate buffer of the
// same shape that must not overlap it (every pixel is written: the frame's outside the window).
// Rows are shared among `threads` threads, the calling one and workers of the process's shared
// pool (thread_pool.hpp); 0, or more than the cores this process may use, means one per such
// core. The result does not depend on the thread count. Safe to call from several threads at
// once. crop_to_frame must be finite.
void paste_back(const std::uint8_t* frame, std::uint8_t* out, int height, int width,
                const PasteSource& source, const Affine2x3& crop_to_frame, unsigned threads = 0);

}  // namespace ditto
