#include "core/fault.h"

#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <unistd.h>

namespace serpens::fault {

thread_local const char *current_site = nullptr;

namespace {

const char *program_name = "serpens";

// A fixed buffer filled with async-signal-safe appends only.
struct Line {
    char text[1024];
    std::size_t len = 0;

    void add(const char *s) noexcept
    {
        while (*s != '\0' && len < sizeof text - 1) {
            text[len++] = *s++;
        }
    }
    void add_hex(uintptr_t value) noexcept
    {
        char digits[2 * sizeof value];
        std::size_t n = 0;
        do {
            digits[n++] = "0123456789abcdef"[value & 0xf];
            value >>= 4;
        } while (value != 0);
        add("0x");
        while (n > 0 && len < sizeof text - 1) {
            text[len++] = digits[--n];
        }
    }
};

const char *signal_name(int sig) noexcept
{
    switch (sig) {
    case SIGSEGV:
        return "SIGSEGV";
    case SIGBUS:
        return "SIGBUS";
    case SIGILL:
        return "SIGILL";
    case SIGFPE:
        return "SIGFPE";
    case SIGABRT:
        return "SIGABRT";
    default:
        return "signal";
    }
}

void on_fault(int sig, siginfo_t *info, void *)
{
    Line line;
    line.add(program_name);
    line.add(": fatal ");
    line.add(signal_name(sig));
    if (sig != SIGABRT && info != nullptr) {
        line.add(" (address ");
        line.add_hex(reinterpret_cast<uintptr_t>(info->si_addr));
        line.add(")");
    }
    const char *site = current_site;
    line.add(site != nullptr ? " in " : " outside plugin code");
    if (site != nullptr) {
        line.add(site);
    }
    line.add("\n");
    ssize_t ignored = ::write(STDERR_FILENO, line.text, line.len);
    (void)ignored;
    // Die as the process would have without this handler (core dump, exit
    // status by signal): the default action, raised again on return.
    std::signal(sig, SIG_DFL);
    std::raise(sig);
}

} // namespace

void install_fault_handlers(const char *program)
{
    program_name = program;
    struct sigaction action {};
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT}) {
        sigaction(sig, &action, nullptr);
    }
    use_alternate_signal_stack();
}

void use_alternate_signal_stack()
{
    // Owned by the thread: freed when it exits (after which no signal runs on it).
    thread_local std::unique_ptr<char[]> stack;
    if (stack != nullptr) {
        return;
    }
    const std::size_t size = 64 * 1024;
    stack = std::make_unique<char[]>(size);
    stack_t ss{};
    ss.ss_sp = stack.get();
    ss.ss_size = size;
    if (sigaltstack(&ss, nullptr) != 0) {
        stack.reset();
    }
}

} // namespace serpens::fault
