// paste_back (src/paste_back.hpp) called from many threads at once, at several thread counts,
// gives the bytes of one single-threaded call: the shared pool's calls do not interfere.
// Built with -DDITTO_FAST_CPP_TESTS=ON; most useful under -DDITTO_FAST_SANITIZE=thread or address.
#include "check.hpp"
#include "paste_back.hpp"

#include <cmath>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

namespace {

constexpr int kFrameHeight = 300, kFrameWidth = 400, kSource = 128;

struct Inputs {
    std::vector<std::uint8_t> frame;
    std::vector<float> render, mask;
    ditto::PasteSource source;
    ditto::Affine2x3 crop_to_frame;
};

// Values past [0, 255] and [0, 1], as in tests/test_paste_native.py, so the clamps run too.
Inputs make_inputs() {
    Inputs in;
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> byte(0, 255);
    std::uniform_real_distribution<float> colour(-20.0f, 280.0f), share(-0.3f, 1.3f);
    in.frame.resize(std::size_t{kFrameHeight} * kFrameWidth * 3);
    for (auto& v : in.frame) v = static_cast<std::uint8_t>(byte(rng));
    in.render.resize(std::size_t{kSource} * kSource * 3);
    for (auto& v : in.render) v = colour(rng);
    in.mask.resize(std::size_t{kSource} * kSource);
    for (auto& v : in.mask) v = share(rng);
    in.source = {in.render.data(), in.mask.data(), kSource, kSource, ditto::RenderLayout::kHwc255};
    const double a = 0.3, scale = 1.7;  // rotated, partly over the frame's right edge
    in.crop_to_frame = {scale * std::cos(a), -scale * std::sin(a), 250.5, scale * std::sin(a), scale * std::cos(a), 40.25};
    return in;
}

std::vector<std::uint8_t> paste(const Inputs& in, unsigned threads) {
    std::vector<std::uint8_t> out(in.frame.size());
    ditto::paste_back(in.frame.data(), out.data(), kFrameHeight, kFrameWidth, in.source, in.crop_to_frame, threads);
    return out;
}

}  // namespace

int main() {
    const Inputs in = make_inputs();
    const std::vector<std::uint8_t> expected = paste(in, 1);
    CHECK(expected != in.frame);  // the face landed
    constexpr int kCallers = 6, kCalls = 30;
    std::vector<int> mismatches(kCallers, 0);
    std::vector<std::thread> callers;
    for (int c = 0; c < kCallers; ++c) {
        callers.emplace_back([&, c] {
            for (int i = 0; i < kCalls; ++i) mismatches[c] += paste(in, (c + i) % 5) != expected;
        });
    }
    for (std::thread& t : callers) t.join();
    for (const int m : mismatches) CHECK(m == 0);
    return 0;
}
