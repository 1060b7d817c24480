"""A bad host.toml exits non-zero with file:line and what was expected, one case per class."""
import os
import re
import shutil
import subprocess

from harness import HOST, Host, check, free_hugepages

host = Host()
host.chain("c", 'name = "c"\n[[nf]]\nname = "t"\nplugin = "trace"\n')
rule = '\n[[gateway.rule]]\nchain = "c"\n'
cases = [
    # (name, host.toml body after [eal], expected message regex)
    ("syntax", host.pcap_port() + "[gateway\n", r"host\.toml:\d+:\d+: TOML syntax error"),
    ("unknown key", host.pcap_port() + rule + "[instances]\nburts = 32\n",
     r"host\.toml:\d+:\d+: \[instances\]: unknown key 'burts' \(expected one of: .*burst"),
    ("wrong type", host.pcap_port() + rule + "[instances]\nburst = \"many\"\n",
     r"host\.toml:\d+:\d+: 'burst' must be an integer, not a string"),
    ("unknown chain", host.pcap_port() + '\n[[gateway.rule]]\nname = "r"\nchain = "nope"\n',
     r"host\.toml:\d+: \[\[gateway.rule\]\] 'r': unknown chain 'nope'"),
    ("unknown port", host.pcap_port() + rule + '[gateway]\ndefault = "eth9"\n',
     r"host\.toml:\d+:\d+: \[gateway\]: unknown port 'eth9'|host\.toml:\d+:\d+: unknown port 'eth9'"),
]
for name, body, pattern in cases:
    host.config(body)
    proc = host.run(expect_rc=2)
    check(re.search(pattern, proc.stderr), f"[{name}] message not as expected: {proc.stderr!r}")
    print(f"ok [{name}]: {proc.stderr.strip()}")

# An egress that is no port of the host: the chain file's line of it.
host.chain("c", 'name = "c"\negress = "eth9"\n[[nf]]\nname = "t"\nplugin = "trace"\n')
host.config(host.pcap_port() + rule)
proc = host.run("--check", expect_rc=2)
check(re.search(r"chains/c\.toml:2:10: chain 'c': egress port 'eth9' is not a port of", proc.stderr),
      f"[unknown egress] {proc.stderr!r}")
print(f"ok [unknown egress]: {proc.stderr.strip()}")
host.chain("c", 'name = "c"\n[[nf]]\nname = "t"\nplugin = "trace"\n')

# Missing plugin directory: the key's own line is named.
host.config(host.pcap_port() + rule)
text = open(host.path("host.toml")).read().replace('plugin_dir = "plugins"', 'plugin_dir = "no-such-dir"')
open(host.path("host.toml"), "w").write(text)
proc = host.run(expect_rc=2)
check(re.search(r"host\.toml:3:\d+: plugin directory .*no-such-dir does not exist", proc.stderr),
      f"[missing plugin dir] {proc.stderr!r}")
print(f"ok [missing plugin dir]: {proc.stderr.strip()}")
host.cleanup()

# A key the NF never reads, in the chain file or in host.toml's [nf_defaults]:
# refused at file:line:col by a start and by --check alike.
host = Host()
host.pktgen("--packets", "10")
host.chain("c", 'name = "c"\n[[nf]]\nname = "t"\nplugin = "trace"\n[nf.config]\ntag = 1\nbogus = 2\n')
host.config(host.pcap_port() + rule)
for extra in ([], ["--check"]):
    proc = host.run(*extra, expect_rc=2)
    check(re.search(r"chains/c\.toml:7:1: unknown key 'bogus' in the config of NF 't' \(plugin trace\); it reads: ",
                    proc.stderr), f"[unknown NF key {extra}] {proc.stderr!r}")
print(f"ok [unknown NF key]: {proc.stderr.strip()}")
host.chain("c", 'name = "c"\n[[nf]]\nname = "t"\nplugin = "trace"\n')
host.config(host.pcap_port() + rule + "\n[nf_defaults.trace]\ntag = 3\ncolour = 1\n")
proc = host.run("--check", expect_rc=2)
check(re.search(r"host\.toml:\d+:1: unknown key 'colour' in \[nf_defaults\.trace\], read by NF 't' \(plugin trace\)",
                proc.stderr), f"[unknown default key] {proc.stderr!r}")
print(f"ok [unknown default key]: {proc.stderr.strip()}")
host.cleanup()

# A state directory another local user could tamper with (core/private_dir.h):
# below a directory that user made in /dev/shm before the host first ran, as
# /dev/shm/serpens may be.  A start and --check both refuse, naming it, and
# leave nothing below it.
if os.geteuid() == 0:
    host = Host()
    host.chain("c", 'name = "c"\n[[nf]]\nname = "t"\nplugin = "trace"\n')
    host.config(host.pcap_port() + rule)
    planted = host.state  # the harness removes it at the end
    os.mkdir(planted, 0o755)
    os.chown(planted, 65534, 65534)
    text = open(host.path("host.toml")).read().replace(f'state_dir = "{planted}"', f'state_dir = "{planted}/state"')
    open(host.path("host.toml"), "w").write(text)
    for extra in ([], ["--check"]):
        proc = host.run(*extra, expect_rc=2)
        check(f"[host] state_dir {planted}/state is not the host's alone: {planted} is a directory owned by uid 65534"
              in proc.stderr, f"[state dir of another user {extra}] {proc.stderr!r}")
        check(os.listdir(planted) == [], f"[state dir of another user {extra}] made {os.listdir(planted)}")
    print(f"ok [state dir of another user]: {proc.stderr.strip()}")
    host.cleanup()

# A state_dir on hugetlbfs, where the host could keep its tables but not the
# usage ledger beside them (hugetlbfs takes no write(2); the first version
# exited at its first bill row): a start and --check refuse at the key's
# line and name the tmpfs that gives 2 MB pages.  The mount lives in a mount
# namespace of the host's own, so nothing is left mounted.
if os.geteuid() == 0 and shutil.which("unshare"):
    host = Host()
    host.chain("c", 'name = "c"\n[[nf]]\nname = "t"\nplugin = "trace"\n')
    host.config(host.pcap_port() + rule)
    huge = host.path("huge")
    os.mkdir(huge, 0o755)
    text = open(host.path("host.toml")).read().replace(f'state_dir = "{host.state}"', f'state_dir = "{huge}/state"')
    open(host.path("host.toml"), "w").write(text)
    for extra in ([], ["--check"]):
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               'mount -t hugetlbfs none "$0" && exec "$@"', huge,
                               HOST, "-c", host.path("host.toml"), "--log-level", "warn"] + extra,
                              capture_output=True, text=True, timeout=60)
        check(proc.returncode == 2 and re.search(
            rf"host\.toml:\d+:\d+: state_dir {re.escape(huge)}/state is on hugetlbfs, which cannot hold the usage "
            r"ledger.*huge=advise", proc.stderr), f"[hugetlbfs state_dir {extra}] rc {proc.returncode} {proc.stderr!r}")
    check(os.listdir(huge) == [], f"[hugetlbfs state_dir] made {os.listdir(huge)}")
    print(f"ok [hugetlbfs state_dir]: {proc.stderr.strip()}")
    host.cleanup()

# Configs every local user could change (core/private_dir.h): a host.toml or
# a chain file anyone may write to, a chains directory anyone may add a chain
# to, a host.toml in a directory anyone may replace it in.  A start and
# --check both refuse, naming the file or directory and the fix; the same
# files with group write (the operator's choice) start.
host = Host()
host.chain("c", 'name = "c"\n[[nf]]\nname = "t"\nplugin = "trace"\n')
host.config(host.pcap_port() + rule)
cases = [
    ("host.toml", host.path("host.toml"), 0o646, 0o664,
     rf"{re.escape(host.path('host.toml'))}: every local user may write to it \(mode 646\).*chmod o-w"),
    ("chain file", host.path("chains/c.toml"), 0o666, 0o664,
     rf"{re.escape(host.path('chains/c.toml'))}: every local user may write to it \(mode 666\)"),
    ("chains dir", host.path("chains"), 0o1777, 0o775,
     rf"chains directory .*chains: .*chains is writable by every local user \(mode 1777\), who could add files"),
    ("host.toml's dir", host.dir, 0o777, 0o775,
     rf"host\.toml: others could replace it: {re.escape(host.dir)} is writable by every local user and not sticky"),
]
for name, path, bad, fine, pattern in cases:
    os.chmod(path, bad)
    for extra in ([], ["--check"]):
        proc = host.run(*extra, expect_rc=2)
        check(re.search(pattern, proc.stderr), f"[{name} others may change {extra}] {proc.stderr!r}")
    print(f"ok [{name} others may change]: {proc.stderr.strip()}")
    os.chmod(path, fine)
    proc = host.run("--check", expect_rc=0)
host.cleanup()

# EAL arguments DPDK would refuse: --check and a start both say so in one
# line, in DPDK's words (not in the EAL's usage text), and leave no EAL
# runtime directory behind.
host = Host()
host.chain("c", 'name = "c"\n[[nf]]\nname = "t"\nplugin = "trace"\n')
for name, eal_arg, pattern in (
        ("unknown option", "--no-hugepages", r"unrecognized option '--no-hugepages'"),
        ("bad value", "--iova-mode=fast", r"iova-mode")):
    host.config(host.pcap_port() + rule, eal=host.eal().replace('"--no-pci"', f'"--no-pci", "{eal_arg}"'))
    for extra in (["--check"], []):
        proc = host.run(*extra, expect_rc=2)
        check(re.search(r"host\.toml: \[eal\] args \(with a --vdev or --allow for each \[\[port\]\]\): .*" +
                        pattern, proc.stderr) and proc.stderr.count(eal_arg.split("=")[0]) == 1 and
              "Usage:" not in proc.stdout + proc.stderr, f"[EAL {name} {extra}] {proc.stdout!r} {proc.stderr!r}")
        check(not os.path.exists(host.eal_runtime_dir()), f"[EAL {name} {extra}] left {host.eal_runtime_dir()}")
    print(f"ok [EAL {name}]: {proc.stderr.strip()}")
host.config(host.pcap_port() + rule)
host.run("--check", expect_rc=0)
# Without --no-huge on a machine with no free hugepages (as CI's), --check
# and a start say so in one line, instead of passing, then failing as if
# the user lacked the rights.
if free_hugepages() == 0:
    # "--no-hu" is --no-huge to DPDK's getopt: not asking for hugepages.
    host.config(host.pcap_port() + rule, eal=host.eal().replace('"--no-huge"', '"--no-hu"'))
    host.run("--check", expect_rc=0)
    host.config(host.pcap_port() + rule, eal=host.eal().replace('"--no-huge", "-m", "256", ', ''))
    for extra in (["--check"], []):
        proc = host.run(*extra, expect_rc=2)
        check(re.search(r"host\.toml: \[eal\] args .*: no free hugepages on this machine .*--no-huge", proc.stderr)
              and "Permission denied" not in proc.stderr, f"[no hugepages {extra}] {proc.stderr!r}")
        check(not os.path.exists(host.eal_runtime_dir()), f"[no hugepages {extra}] left {host.eal_runtime_dir()}")
    print(f"ok [no hugepages]: {proc.stderr.strip()}")
else:
    print("skipped [no hugepages]: this machine has free hugepages")
host.cleanup()

# Command-line values that mean nothing are refused, not taken as "off"; a
# --stats-json that names a directory and a plugin_dir that is a symbolic-link
# loop are errors with a message, not a silent success or a crash.
host = Host()
host.chain("c", 'name = "c"\n[[nf]]\nname = "t"\nplugin = "trace"\n')
host.config(host.pcap_port() + rule)
for args, pattern in ((["--log-level", "bogus"], r"--log-level: bogus not in"),
                      (["--duration", "nan"], r"--duration: expected a number of seconds of at least 0.001"),
                      (["--idle-exit", "-5"], r"--idle-exit: expected a number of seconds of at least 0.001")):
    proc = host.run("--check", *args, expect_rc=None)
    check(proc.returncode != 0 and re.search(pattern, proc.stderr), f"[{args}] rc {proc.returncode} {proc.stderr!r}")
    print(f"ok [{' '.join(args)}]: {proc.stderr.strip().splitlines()[0]}")
os.mkdir(host.path("out"))
proc = subprocess.run([HOST, "-c", host.path("host.toml"), "--stats-json", host.path("out"), "--idle-exit", "1"],
                      capture_output=True, text=True, timeout=60)
check(proc.returncode == 2 and re.search(r"--stats-json .*out: it is a directory", proc.stderr),
      f"[stats-json directory] rc {proc.returncode} {proc.stderr!r}")
print(f"ok [stats-json directory]: {proc.stderr.strip()}")
os.symlink("loop", host.path("loop"))
text = open(host.path("host.toml")).read().replace('plugin_dir = "plugins"', 'plugin_dir = "loop"')
open(host.path("host.toml"), "w").write(text)
proc = host.run("--check", expect_rc=2)
check(re.search(r"host\.toml:3:\d+: plugin directory .*loop cannot be opened: Too many levels of symbolic links", proc.stderr),
      f"[plugin dir loop] {proc.stderr!r}")
print(f"ok [plugin dir loop]: {proc.stderr.strip()}")
host.cleanup()
