#pragma once
// Names the plugin code a thread is running, so that a crash inside an NF
// leaves one line saying which chain, NF and plugin it was in before the
// process dies.
//
// The runtime marks each call into plugin code with a FaultSite (a
// pre-formatted, NUL-terminated description); the handlers installed by
// install_fault_handlers() read the faulting thread's current site and write
// it to stderr with async-signal-safe calls only, then let the signal kill
// the process as it would have without them.

namespace serpens::fault {

// The site of the plugin call this thread is inside, or nullptr.  Static TLS
// (initial-exec) so that the signal handler reads it without calling into the
// dynamic linker, and a store costs one instruction on the hot path.
extern thread_local const char *current_site __attribute__((tls_model("initial-exec")));

// Marks the plugin call in the enclosing scope; restores the previous mark.
class SiteScope {
public:
    explicit SiteScope(const char *site) noexcept : _previous(current_site) { current_site = site; }
    ~SiteScope() { current_site = _previous; }
    SiteScope(const SiteScope &) = delete;
    SiteScope &operator=(const SiteScope &) = delete;

private:
    const char *_previous;
};

// Installs the SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT handlers for the
// process (idempotent).  Each writes
//   "<program>: fatal SIGSEGV (address 0x...) in <site>"
// and re-raises the signal with its default action.  `program` must outlive
// the process (a string literal).
void install_fault_handlers(const char *program);

// Gives the calling thread an alternate signal stack, so a stack overflow in
// plugin code is still named.  Idempotent per thread; the stack lives as long
// as the thread.
void use_alternate_signal_stack();

} // namespace serpens::fault
