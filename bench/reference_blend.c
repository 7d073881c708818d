/* The blend step of the reference's put-back, written for the benchmarks (not the reference's code):
 * per pixel out = m * face + (1 - m) * orig for the three channels, with m the single-channel warped
 * mask, clamped to [0, 255] and truncated to uint8. The same math as the reference's compiled blend,
 * built with the same flags (-O3 -std=c99 -march=native -ffast-math), one thread. */
#include <stddef.h>
#include <stdint.h>

void reference_blend(const float *mask, const float *face, const uint8_t *orig, uint8_t *out,
                     int height, int width) {
    for (int y = 0; y < height; ++y) {
        const ptrdiff_t row = (ptrdiff_t)y * width;
        for (int x = 0; x < width; ++x) {
            const ptrdiff_t p = row + x;
            const float m = mask[p];
            const float keep = 1.0f - m;
            for (int c = 0; c < 3; ++c) {
                float v = m * face[3 * p + c] + keep * (float)orig[3 * p + c];
                v = v < 0.0f ? 0.0f : v;
                v = v > 255.0f ? 255.0f : v;
                out[3 * p + c] = (uint8_t)v;
            }
        }
    }
}
