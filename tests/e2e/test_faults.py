"""Signals, plugin faults and --check: SIGHUP reloads and leaves the host running; a crash
in process() and an init that hangs are named (chain, NF, plugin); --check
catches what a start would refuse; one lcore runs the chain in place."""
import re
import resource
import signal
import subprocess
import time

from harness import CTL, HOST, Host, check, fail

RULE = '\n[[gateway.rule]]\nchain = "c"\n'
NULL_PORT = '[[port]]\nname = "null0"\ndevice = "net_null0"\n'  # receives without end


def faulty_chain(host, config):
    host.chain("c", f'name = "c"\negress = "null0"\n[[nf]]\nname = "f"\nplugin = "faulty"\n[nf.config]\n{config}\n')


def no_core():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def start(host, log_level="warn"):
    return subprocess.Popen([HOST, "-c", host.path("host.toml"), "--log-level", log_level], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=no_core)


def rx(host):
    out = subprocess.run([CTL, "--socket", host.path("ctl.sock"), "stats", "--json"], capture_output=True, text=True,
                         timeout=10)
    m = re.search(r'"rx": (\d+)', out.stdout)
    return int(m.group(1)) if m else None


def wait_rx(host, proc):
    for _ in range(100):
        if proc.poll() is not None:
            fail(f"host exited {proc.returncode}: {proc.communicate()[1]}")
        value = rx(host)
        if value:
            return value
        time.sleep(0.1)
    fail("host never forwarded")


# SIGHUP: a reload (nothing changed, so the chain is kept); the host keeps
# forwarding and stops cleanly after.
host = Host(plugins=("faulty",))
faulty_chain(host, "")
host.config(NULL_PORT + RULE)
proc = start(host, "info")
try:
    before = wait_rx(host, proc)
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    check(proc.poll() is None, f"SIGHUP stopped the host (exit {proc.returncode})")
    after = rx(host)
    check(after is not None and after > before, f"no forwarding after SIGHUP ({before} -> {after})")
finally:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
check(proc.returncode == 0, f"host exited {proc.returncode} after SIGTERM: {err}")
check("SIGHUP: reloading" in err and "swapped none; 1 unchanged" in err, f"SIGHUP's reload not logged: {err!r}")
print("ok [sighup]: a reload, the host kept forwarding, exit 0 on SIGTERM")
host.cleanup()

# A crash in process(): one line names the chain, NF and plugin; the process
# still dies of the signal.
host = Host(plugins=("faulty",))
faulty_chain(host, "crash_after = 5000")
host.config(NULL_PORT + RULE)
proc = start(host)
_, err = proc.communicate(timeout=60)
check(proc.returncode == -signal.SIGSEGV, f"expected death by SIGSEGV, got exit {proc.returncode}: {err}")
check(re.search(r"fatal SIGSEGV \(address 0x0\) in process\(\) of NF 'f' \(plugin faulty, .*serpens_nf_faulty\.so\) "
                r"of chain 'c' instance 0", err), f"crash line does not name the NF: {err!r}")
print("ok [segfault]: " + [line for line in err.splitlines() if "fatal" in line][0])
host.cleanup()

# An init that does not return is named while it runs (here under --check,
# which runs every init).
host = Host(plugins=("faulty",))
faulty_chain(host, "init_sleep_ms = 1500")
host.config(NULL_PORT + RULE + "\n[instances]\ninit_warn_ms = 300\n")
proc = host.run("--check", expect_rc=0)
log = proc.stdout + proc.stderr
check(re.search(r"init\(\) of NF 'f' \(plugin faulty, .*\) of chain 'c' instance 0 has not returned after 0\.3 s",
                log), f"slow init not named: {log!r}")
print("ok [slow init]: named")

# --check refuses what a start would refuse: an NF whose init fails, an lcore
# the EAL args do not give, a prefix that is no prefix.
cases = [
    ("init fails", "init_fail = true", RULE, r"NF 'f' \(plugin faulty\) refused to start"),
    ("lcore outside -l", "", RULE + '\n[[instance]]\nchain = "c"\nlcores = [5]\n',
     r"host\.toml:\d+: \[\[instance\]\] of chain 'c': lcore 5 is not enabled"),
    ("prefix /99", "", '\n[[gateway.rule]]\nchain = "c"\ndst = "10.0.0.0/99"\n', r"host\.toml:\d+.*10\.0\.0\.0/99"),
]
for name, nf_config, body, pattern in cases:
    faulty_chain(host, nf_config)
    host.config(NULL_PORT + body)
    proc = host.run("--check", expect_rc=2)
    check(re.search(pattern, proc.stderr), f"[{name}] --check said: {proc.stderr!r}")
    print(f"ok [check: {name}]: {proc.stderr.strip().splitlines()[-1]}")
host.cleanup()

# One lcore and no placement: the chain runs in place on the main lcore.
host = Host(plugins=("noop",))
host.pktgen("--packets", "2000", "--flows", "50", "--malformed-ratio", "0", "--seed", "5")
host.chain("c", 'name = "c"\negress = "pcap0"\n[[nf]]\nname = "n"\nplugin = "noop"\n')
host.config(host.pcap_port() + RULE, eal=host.eal(lcores="0"))
host.run("--idle-exit", "1", timeout=30)
stats = host.stats()
check([i["lcore"] for i in stats["instances"] if i["state"] == "active"] == [0], f"placement: {stats['instances']}")
check(len(host.output()) == 2000, f"{len(host.output())} of 2000 packets out")
print("ok [one lcore]: chain ran in place on lcore 0")
host.cleanup()
