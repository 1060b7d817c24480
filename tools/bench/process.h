#pragma once
// Child processes of serpens-bench (serpens-host, dpdk-testpmd,
// serpens-pktgen, redis-server): finding their executables, starting them
// with their output in a log file, talking to their stdin, waiting for a
// line in their log, stopping them, and the CPU time they got.

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace serpens::bench {

// `exe` if it names a file, else its path on PATH; empty when not found.
std::string which(const std::string &exe);

// CPU time (ns) every thread of `pid` has run so far; -1 when unreadable.
int64_t cpu_ns(pid_t pid);

// The whole of a (log) file; empty when unreadable.
std::string read_text(const std::filesystem::path &path);
// The last `lines` lines of `text` (for error messages quoting a log).
std::string last_lines(const std::string &text, int lines);

// Seconds on CLOCK_MONOTONIC, and a sleep in seconds (none when s <= 0).
double now_s();
void sleep_s(double s);

// Where a child may run: every CPU (programs that pin their own threads,
// like DPDK's lcores), or the CPUs of the thread that starts it (a helper
// that belongs to a one-core experiment, like its redis-server).
enum class ChildCpus { all, inherit };

// A child process: stdout and stderr go to a log file, stdin is a pipe (when
// asked) or /dev/null.  Killed and reaped on destruction if still running.
// Not thread-safe: one thread owns a Child.
class Child {
public:
    // Starts argv[0] (searched on PATH).  Throws std::runtime_error when the
    // log, the pipe or fork fails.
    Child(const std::vector<std::string> &argv, const std::filesystem::path &log, bool pipe_stdin,
          ChildCpus cpus = ChildCpus::all);
    Child(const Child &) = delete;
    Child &operator=(const Child &) = delete;
    ~Child();

    pid_t pid() const noexcept { return _pid; }
    std::string log() const { return read_text(_log); }

    // False once the child has exited (and been reaped).
    bool running();

    // Writes to the child's stdin (nothing without a pipe); throws on a short write.
    void send(const std::string &text);
    void close_stdin();

    // Polls the log until `ready(log)` holds; false on timeout or exit.
    template<class Pred>
    bool wait_log(Pred &&ready, double timeout_s)
    {
        const double deadline = now_s() + timeout_s;
        for (;;) {
            if (ready(log())) {
                return true;
            }
            if (!running() || now_s() > deadline) {
                return false;
            }
            sleep_s(0.002);
        }
    }

    // Waits for exit; SIGTERM after timeout_s, SIGKILL 3 s later.  Returns
    // the exit code, or -signal when killed by one.
    int wait_exit(double timeout_s);
    // SIGTERM now, SIGKILL after grace_s; returns as wait_exit.
    int stop(double grace_s);

private:
    // Waits for exit; `timeout_s` after `sent` (0: nothing sent yet) it
    // sends the next of SIGTERM, SIGKILL, each 3 s apart.
    int reap(double timeout_s, int sent);

    pid_t _pid = -1;
    int _stdin = -1;
    bool _reaped = false;
    int _status = 0;
    std::filesystem::path _log;
};

} // namespace serpens::bench
