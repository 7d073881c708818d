// ThreadPool (src/thread_pool.hpp): every share runs once, concurrent callers complete, a task's
// exception reaches its caller, and a pool without workers still finishes the work. Built with
// -DDITTO_FAST_CPP_TESTS=ON; most useful under -DDITTO_FAST_SANITIZE=thread.
#include "check.hpp"
#include "thread_pool.hpp"

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

using ditto::ThreadPool;

void every_share_runs_once(ThreadPool& pool, unsigned shares) {
    std::vector<std::atomic<int>> runs(shares);
    pool.run(shares, [&runs](unsigned share) { runs[share].fetch_add(1); });
    for (const auto& count : runs) CHECK(count.load() == 1);
}

void concurrent_callers_all_complete(ThreadPool& pool) {
    constexpr int kCallers = 8, kCalls = 200;
    std::atomic<long> total{0};
    std::vector<std::thread> callers;
    for (int c = 0; c < kCallers; ++c) {
        callers.emplace_back([&pool, &total, c] {
            for (int i = 0; i < kCalls; ++i) {
                const unsigned shares = 1 + (c + i) % 5;
                // Plain ints: TSan reports a race if run() returns before the shares' writes are visible.
                std::vector<int> done(shares, 0);
                pool.run(shares, [&done](unsigned share) { done[share] += 1; });
                for (const int d : done) total += d;
            }
        });
    }
    for (std::thread& t : callers) t.join();
    long expected = 0;
    for (int c = 0; c < kCallers; ++c)
        for (int i = 0; i < kCalls; ++i) expected += 1 + (c + i) % 5;
    CHECK(total.load() == expected);
}

void exception_reaches_the_caller(ThreadPool& pool) {
    for (unsigned thrower = 0; thrower < 4; ++thrower) {
        bool caught = false;
        try {
            pool.run(4, [thrower](unsigned share) {
                if (share == thrower) throw std::runtime_error("share failed");
            });
        } catch (const std::runtime_error&) {
            caught = true;
        }
        CHECK(caught);
    }
    every_share_runs_once(pool, 4);  // the pool still works afterwards
}

}  // namespace

int main() {
    {
        ThreadPool idle;  // no workers: the caller runs every share
        every_share_runs_once(idle, 5);
    }
    ThreadPool pool;
    CHECK(pool.reserve(3) == 3);
    CHECK(pool.reserve(2) == 3);  // never shrinks
    for (unsigned shares : {0u, 1u, 3u, 4u, 17u}) every_share_runs_once(pool, shares);
    concurrent_callers_all_complete(pool);
    exception_reaches_the_caller(pool);
    CHECK(&ditto::shared_thread_pool() == &ditto::shared_thread_pool());
    CHECK(ditto::available_cores() >= 1);
    return 0;
}
