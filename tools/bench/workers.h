#pragma once
// The NF launch models of paper Table II, each running the same Job:
// fork per batch, kernel thread per batch, kernel-thread pool, user-level
// thread pool.  (The fifth model, Serpens' function call, is just calling
// the job.)  Every launcher waits for the job to finish: the cost measured is
// a whole hand-off and completion, as a packet fetcher would see it.

#include <pthread.h>
#include <sched.h>
#include <ucontext.h>

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

namespace serpens::bench {

// Work for one batch: fn(arg, worker) where worker is the index of the
// worker running it (so each worker can own its single-threaded state).
struct Job {
    void (*fn)(void *arg, unsigned worker);
    void *arg;
};

// Forks a child that runs the job and exits; waits for it (SAND-like).
// The child runs on the parent's copy-on-write memory as worker 0.
// Throws Error when fork fails or the child does not exit 0.
void run_in_child(const Job &job);

// Creates a kernel thread with the given affinity for the job, joins it.
void run_in_new_thread(const Job &job, const cpu_set_t &affinity);

// A kernel-thread pool: a mutex + condition-variable queue, workers parked
// on the condition variable, completion signalled back on a second one —
// the textbook pool a serverless runtime keeps warm.
class KThreadPool {
public:
    KThreadPool(unsigned workers, const cpu_set_t &affinity);
    ~KThreadPool(); // stops and joins every worker
    KThreadPool(const KThreadPool &) = delete;
    KThreadPool &operator=(const KThreadPool &) = delete;

    // Hands the job to an idle worker and waits until it has run.
    void run(const Job &job);

private:
    struct Task {
        const Job *job;
        bool done;
    };
    static void *worker_main(void *self);
    void loop(unsigned index);

    std::mutex _mu;
    std::condition_variable _work;
    std::condition_variable _done;
    std::deque<Task *> _queue;
    bool _stop = false;
    unsigned _started = 0;
    std::vector<pthread_t> _threads;
};

// A user-level thread pool on ucontext: each uthread has its own stack and
// parks in swapcontext; launching a job switches into the next uthread
// (round robin), which runs it and switches back.  All on the caller's
// kernel thread.  glibc's swapcontext saves/restores the signal mask with a
// system call, part of what this model pays.
class UThreadPool {
public:
    UThreadPool(unsigned uthreads, std::size_t stack_size);
    UThreadPool(const UThreadPool &) = delete;
    UThreadPool &operator=(const UThreadPool &) = delete;

    void run(const Job &job);

private:
    struct UThread {
        ucontext_t ctx;
        std::unique_ptr<char[]> stack;
        UThreadPool *pool;
        unsigned index;
        const Job *job;
    };
    static void entry(unsigned hi, unsigned lo);

    ucontext_t _scheduler{};
    std::vector<std::unique_ptr<UThread>> _threads;
    unsigned _next = 0;
};

} // namespace serpens::bench
