#include "thread_pool.hpp"

#include <algorithm>
#include <exception>
#include <system_error>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace ditto {

// One run() call: lives on the caller's stack, guarded by the pool's mutex. The caller returns
// only once `running` is 0 with every share taken, and the last thread to finish a share
// signals `finished` while still holding the mutex, so no thread touches a Call after its
// caller has returned.
struct ThreadPool::Call {
    Call(const std::function<void(unsigned)>& task, unsigned shares) : task(task), shares(shares) {}

    const std::function<void(unsigned)>& task;
    unsigned shares;
    unsigned taken = 0;    // shares handed to a thread so far
    unsigned running = 0;  // shares handed out that have not returned yet
    std::exception_ptr error;
    std::condition_variable finished;
};

ThreadPool::~ThreadPool() {
    {
        const std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& worker : workers_) worker.join();
}

unsigned ThreadPool::reserve(unsigned workers) {
    const std::lock_guard<std::mutex> lock(mutex_);
    while (workers_.size() < workers && !stopping_) {
        try {
            workers_.emplace_back(&ThreadPool::work, this);
        } catch (const std::system_error&) {
            break;  // no more threads to be had: callers take the shares left over
        }
    }
    return static_cast<unsigned>(workers_.size());
}

void ThreadPool::run(unsigned shares, const std::function<void(unsigned)>& task) {
    if (shares == 0) return;
    Call call(task, shares);
    std::unique_lock<std::mutex> lock(mutex_);
    const auto helpers = static_cast<unsigned>(std::min<std::size_t>(shares - 1, workers_.size()));
    if (helpers > 0) {
        queue_.push_back(&call);
        for (unsigned i = 0; i < helpers; ++i) wake_.notify_one();
    }
    while (call.taken < call.shares) execute(call, take(call), lock);
    call.finished.wait(lock, [&call] { return call.running == 0; });
    if (call.error) std::rethrow_exception(call.error);
}

void ThreadPool::work() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and no call left to help
        Call& call = *queue_.front();
        execute(call, take(call), lock);
    }
}

unsigned ThreadPool::take(Call& call) {
    const unsigned share = call.taken++;
    ++call.running;
    if (call.taken == call.shares) drop_from_queue(call);
    return share;
}

void ThreadPool::execute(Call& call, unsigned share, std::unique_lock<std::mutex>& lock) {
    lock.unlock();
    std::exception_ptr error;
    try {
        call.task(share);
    } catch (...) {
        error = std::current_exception();
    }
    lock.lock();
    if (error) {
        if (!call.error) call.error = error;
        call.taken = call.shares;  // the shares not started are skipped
        drop_from_queue(call);
    }
    if (--call.running == 0 && call.taken == call.shares) call.finished.notify_all();
}

void ThreadPool::drop_from_queue(const Call& call) {
    const auto queued = std::find(queue_.begin(), queue_.end(), &call);
    if (queued != queue_.end()) queue_.erase(queued);
}

unsigned available_cores() {
#if defined(__linux__)
    cpu_set_t cores;
    if (sched_getaffinity(0, sizeof cores, &cores) == 0) return std::max(1, CPU_COUNT(&cores));
#endif
    return std::max(1u, std::thread::hardware_concurrency());
}

namespace {

ThreadPool* process_pool = nullptr;

// Runs in a forked child while it has one thread. The parent's pool is left as it is (leaked):
// its mutex may be held and its workers are not there to join.
void renew_pool_in_child() { process_pool = new ThreadPool; }

}  // namespace

ThreadPool& shared_thread_pool() {
    static const bool created = [] {
        process_pool = new ThreadPool;
#if defined(__unix__) || defined(__APPLE__)
        pthread_atfork(nullptr, nullptr, renew_pool_in_child);
#endif
        return true;
    }();
    static_cast<void>(created);
    return *process_pool;
}

}  // namespace ditto
