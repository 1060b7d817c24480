#include "workers.h"

#include "core/error.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

namespace serpens::bench {

void run_in_child(const Job &job)
{
    const pid_t pid = fork();
    if (pid < 0) {
        throw Error(std::string("fork: ") + std::strerror(errno));
    }
    if (pid == 0) {
        job.fn(job.arg, 0);
        _exit(0); // no atexit handlers, no stdio flush of the parent's buffers
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            throw Error(std::string("waitpid: ") + std::strerror(errno));
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        throw Error("forked batch worker failed");
    }
}

namespace {

struct ThreadStart {
    const Job *job;
};

void *thread_job(void *arg)
{
    const Job *job = static_cast<ThreadStart *>(arg)->job;
    job->fn(job->arg, 0);
    return nullptr;
}

// pthread_create with the affinity set in the attributes, so the thread
// starts where it belongs without a second system call.
pthread_t spawn(void *(*fn)(void *), void *arg, const cpu_set_t &affinity)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setaffinity_np(&attr, sizeof affinity, &affinity);
    pthread_t tid{};
    const int rc = pthread_create(&tid, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        throw Error(std::string("pthread_create: ") + std::strerror(rc));
    }
    return tid;
}

} // namespace

void run_in_new_thread(const Job &job, const cpu_set_t &affinity)
{
    ThreadStart start{&job};
    pthread_join(spawn(thread_job, &start, affinity), nullptr);
}

KThreadPool::KThreadPool(unsigned workers, const cpu_set_t &affinity)
{
    for (unsigned i = 0; i < workers; ++i) {
        _threads.push_back(spawn(worker_main, this, affinity));
    }
}

KThreadPool::~KThreadPool()
{
    {
        std::lock_guard lock(_mu);
        _stop = true;
    }
    _work.notify_all();
    for (pthread_t t : _threads) {
        pthread_join(t, nullptr);
    }
}

void *KThreadPool::worker_main(void *self)
{
    auto *pool = static_cast<KThreadPool *>(self);
    unsigned index = 0;
    {
        std::lock_guard lock(pool->_mu);
        index = pool->_started++;
    }
    pool->loop(index);
    return nullptr;
}

void KThreadPool::loop(unsigned index)
{
    std::unique_lock lock(_mu);
    for (;;) {
        _work.wait(lock, [this] { return _stop || !_queue.empty(); });
        if (_queue.empty()) {
            return; // stopping, nothing left
        }
        Task *task = _queue.front();
        _queue.pop_front();
        lock.unlock();
        task->job->fn(task->job->arg, index);
        lock.lock();
        task->done = true;
        _done.notify_all(); // several submitters may wait on _done
    }
}

void KThreadPool::run(const Job &job)
{
    Task task{&job, false};
    std::unique_lock lock(_mu);
    _queue.push_back(&task);
    _work.notify_one();
    _done.wait(lock, [&] { return task.done; });
}

namespace {

// getcontext returns twice in principle; kept out of line so no caller's
// locals are live across it (we never resume this context: makecontext
// replaces it).
[[gnu::noinline]] void capture_context(ucontext_t *ctx)
{
    if (getcontext(ctx) != 0) {
        throw Error(std::string("getcontext: ") + std::strerror(errno));
    }
}

} // namespace

UThreadPool::UThreadPool(unsigned uthreads, std::size_t stack_size)
{
    for (unsigned i = 0; i < uthreads; ++i) {
        auto t = std::make_unique<UThread>();
        t->stack = std::make_unique<char[]>(stack_size);
        t->pool = this;
        t->index = i;
        t->job = nullptr;
        capture_context(&t->ctx);
        t->ctx.uc_stack.ss_sp = t->stack.get();
        t->ctx.uc_stack.ss_size = stack_size;
        t->ctx.uc_link = nullptr; // entry never returns
        // makecontext passes only ints: split the pointer in two.
        const auto bits = reinterpret_cast<uintptr_t>(t.get());
        makecontext(&t->ctx, reinterpret_cast<void (*)()>(entry), 2, static_cast<unsigned>(bits >> 32),
                    static_cast<unsigned>(bits & 0xffffffffu));
        _threads.push_back(std::move(t));
    }
}

void UThreadPool::entry(unsigned hi, unsigned lo)
{
    auto *self = reinterpret_cast<UThread *>((static_cast<uintptr_t>(hi) << 32) | lo);
    for (;;) {
        self->job->fn(self->job->arg, self->index);
        swapcontext(&self->ctx, &self->pool->_scheduler); // park until the next job
    }
}

void UThreadPool::run(const Job &job)
{
    UThread &t = *_threads[_next];
    _next = _next + 1 == _threads.size() ? 0 : _next + 1;
    t.job = &job;
    swapcontext(&_scheduler, &t.ctx);
}

} // namespace serpens::bench
