#include "process.h"

#include "bench.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace serpens::bench {

namespace fs = std::filesystem;

double now_s() { return static_cast<double>(now_ns()) / 1e9; }

void sleep_s(double s)
{
    if (s > 0) {
        std::this_thread::sleep_for(std::chrono::duration<double>(s));
    }
}

std::string read_text(const fs::path &path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        // Every file read is one this run wrote: gone means its temporary
        // directory was removed under it.
        throw std::runtime_error("cannot read " + path.string() + ": " + std::strerror(errno));
    }
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string last_lines(const std::string &text, int lines)
{
    std::size_t pos = text.size();
    for (int i = 0; i <= lines && pos != std::string::npos && pos > 0; ++i) {
        pos = text.rfind('\n', pos - 1);
    }
    return pos == std::string::npos ? text : text.substr(pos + 1);
}

// `exe` if it names a file, else its path on PATH; empty when not found.
std::string which(const std::string &exe)
{
    if (exe.find('/') != std::string::npos) {
        return access(exe.c_str(), X_OK) == 0 ? exe : std::string();
    }
    const char *path = std::getenv("PATH");
    std::stringstream dirs(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
    std::string dir;
    while (std::getline(dirs, dir, ':')) {
        const fs::path candidate = fs::path(dir.empty() ? "." : dir) / exe;
        if (access(candidate.c_str(), X_OK) == 0) {
            return candidate.string();
        }
    }
    return {};
}

// CPU time (ns) every thread of `pid` has run so far; -1 when unreadable.
int64_t cpu_ns(pid_t pid)
{
    std::error_code ec;
    int64_t total = 0;
    bool any = false;
    for (const auto &task : fs::directory_iterator(fs::path("/proc") / std::to_string(pid) / "task", ec)) {
        std::ifstream in(task.path() / "schedstat");
        int64_t ns = 0;
        if (in >> ns) {
            total += ns;
            any = true;
        }
    }
    return any ? total : -1;
}

Child::Child(const std::vector<std::string> &argv, const fs::path &log, bool pipe_stdin, ChildCpus cpus) : _log(log)
{
    int in_pipe[2] = {-1, -1};
    if (pipe_stdin && pipe2(in_pipe, O_CLOEXEC) != 0) {
        throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    }
    const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log_fd < 0) {
        throw std::runtime_error("cannot write " + log.string() + ": " + std::strerror(errno));
    }
    std::vector<std::string> args = argv;
    std::vector<char *> cargs;
    for (auto &a : args) {
        cargs.push_back(a.data());
    }
    cargs.push_back(nullptr);
    const pid_t parent = getpid();
    _pid = fork();
    if (_pid == 0) {
        // A bench that dies (a crash, SIGKILL) takes its children along
        // rather than leaving a redis-server or a host holding shared memory.
        // SIGTERM: a host still removes its state on the way out.
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) {
            _exit(127); // the parent died before the request took effect
        }
        if (cpus == ChildCpus::all) {
            // Undo the measuring thread's pinning: DPDK pins its own lcores,
            // its service threads may run anywhere.
            cpu_set_t all;
            CPU_ZERO(&all);
            const long n = sysconf(_SC_NPROCESSORS_CONF);
            for (long c = 0; c < n && c < CPU_SETSIZE; ++c) {
                CPU_SET(static_cast<int>(c), &all);
            }
            sched_setaffinity(0, sizeof all, &all);
        }
        const int null_fd = ::open("/dev/null", O_RDONLY);
        dup2(pipe_stdin ? in_pipe[0] : null_fd, 0);
        dup2(log_fd, 1);
        dup2(log_fd, 2);
        execvp(cargs[0], cargs.data());
        std::fprintf(stderr, "cannot run %s: %s\n", cargs[0], std::strerror(errno));
        _exit(127);
    }
    ::close(log_fd);
    if (pipe_stdin) {
        ::close(in_pipe[0]);
        _stdin = in_pipe[1];
    }
    if (_pid < 0) {
        throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    }
}

Child::~Child()
{
    close_stdin();
    if (running()) {
        kill(_pid, SIGKILL);
        waitpid(_pid, nullptr, 0);
    }
}

bool Child::running()
{
    if (_reaped) {
        return false;
    }
    int status = 0;
    if (waitpid(_pid, &status, WNOHANG) == _pid) {
        _reaped = true;
        _status = status;
        return false;
    }
    return true;
}

void Child::send(const std::string &text)
{
    if (_stdin >= 0 && ::write(_stdin, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
        throw std::runtime_error("cannot write to the child's stdin: " + std::string(std::strerror(errno)));
    }
}

void Child::close_stdin()
{
    if (_stdin >= 0) {
        ::close(_stdin);
        _stdin = -1;
    }
}

int Child::wait_exit(double timeout_s) { return reap(timeout_s, 0); }

int Child::stop(double grace_s)
{
    if (!running()) {
        return reap(0, 0);
    }
    kill(_pid, SIGTERM);
    return reap(grace_s, SIGTERM);
}

int Child::reap(double timeout_s, int sent)
{
    double deadline = now_s() + timeout_s;
    int sig = sent;
    while (running()) {
        if (now_s() > deadline && sig != SIGKILL) {
            sig = sig == 0 ? SIGTERM : SIGKILL;
            kill(_pid, sig);
            deadline = now_s() + 3;
        }
        sleep_s(0.005);
    }
    if (WIFEXITED(_status)) {
        return WEXITSTATUS(_status);
    }
    return WIFSIGNALED(_status) ? -WTERMSIG(_status) : -1;
}

} // namespace serpens::bench
