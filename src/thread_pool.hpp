// Worker threads started once, when first needed, and reused until the pool is destroyed, for
// kernels that split one call into a few shares of work (paste_back): starting and joining
// threads on every call costs tens of microseconds per thread (about 20 on a 2-core EPYC), and
// more on a busy machine, a visible share of a millisecond-long kernel.
//
// Thread safety: run() and reserve() may be called from any number of threads at once. Each
// run() call keeps its own completion state; the workers serve the calls' shares in the order
// the calls came. The calling thread takes shares of its own call too, so a call always
// completes, even when every worker is busy with other calls' shares (or there are none): calls
// never wait for each other's work, only share the workers. Destroying the pool while a run()
// is in progress is the owner's error.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ditto {

class ThreadPool {
  public:
    // Starts no worker: reserve() starts them when a call first needs them.
    ThreadPool() = default;
    // Lets the workers finish any share they have taken, then joins them.
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    // Starts workers until there are `workers`; never stops any. Returns how many there are,
    // fewer than asked when the system refuses more threads (run() still completes: the caller
    // takes the shares no worker does).
    unsigned reserve(unsigned workers);

    // Calls task(share) once for each share in [0, shares), on the calling thread and on up to
    // shares − 1 workers, and returns once every call has returned. `shares` bounds how many
    // threads work on this call at once. The first exception a task throws is rethrown here,
    // after every share already started has returned; shares not started by then are skipped.
    void run(unsigned shares, const std::function<void(unsigned)>& task);

  private:
    struct Call;

    void work();
    // The next share of `call`, taken by the thread holding `lock`; the call leaves the queue
    // with its last share.
    unsigned take(Call& call);
    // Runs one share with the lock released; records its exception, if any, in the call.
    void execute(Call& call, unsigned share, std::unique_lock<std::mutex>& lock);
    void drop_from_queue(const Call& call);

    std::mutex mutex_;               // guards everything below and every queued Call
    std::condition_variable wake_;   // a call was queued, or the pool is stopping
    std::deque<Call*> queue_;        // calls with shares no thread has taken yet
    std::vector<std::thread> workers_;
    bool stopping_ = false;
};

// The cores this process may run on (its CPU affinity), at least 1.
unsigned available_cores();

// The process's pool, shared by every kernel. It is never destroyed: a call still running on a
// thread that outlives the interpreter (a daemon thread at exit) must not find it gone. A
// forked child gets a new, empty pool, since the parent's workers do not exist in the child and
// their mutex may have been copied locked.
ThreadPool& shared_thread_pool();

}  // namespace ditto
