"""`meson install` into a scratch DESTDIR gives a working installation:
the layout README.md's Installing section describes, the README's hello
plugin built out of tree with `pkg-config --cflags serpens-nf`, the installed
serpens-host running it on net_pcap, the installed host.toml passing
--check and kept by a reinstall, the systemd unit verified, and every
program's --version.

usage: test_install.py MESON (the rest comes from the environment, see
tests/install/meson.build)
"""
import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile

MESON = sys.argv[1]
BUILD = os.environ["SERPENS_BUILD_ROOT"]
VERSION = os.environ["SERPENS_VERSION"]
BINDIR = os.environ["SERPENS_BINDIR"]
PLUGIN_DIR = os.environ["SERPENS_PLUGIN_DIR"]
SYSCONFDIR = os.environ["SERPENS_SYSCONFDIR"]
UNITDIR = os.environ["SERPENS_UNITDIR"]
MANDIR = os.environ["SERPENS_MANDIR"]  # empty: built without help2man

destdir = tempfile.mkdtemp(prefix="serpens-install-")
atexit.register(shutil.rmtree, destdir, True)


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def staged(path):
    """Where an installed path is in the DESTDIR."""
    return destdir + path


def install():
    """meson install into the DESTDIR, of what the build already holds."""
    proc = subprocess.run([MESON, "install", "-C", BUILD, "--destdir", destdir, "--no-rebuild", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        fail(f"meson install exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")


install()

# The harness runs what it finds in SERPENS_HOST and SERPENS_PKTGEN: the
# installed programs.
os.environ["SERPENS_HOST"] = staged(os.path.join(BINDIR, "serpens-host"))
os.environ["SERPENS_PKTGEN"] = staged(os.path.join(BINDIR, "serpens-pktgen"))
from harness import Host, check, free_hugepages  # noqa: E402  (needs the environment above)

TOOLS = ["serpens-host", "serpensctl", "serpens-state", "serpens-pktgen", "serpens-bench"]
expected = [os.path.join(BINDIR, t) for t in TOOLS]
expected += [os.path.join(os.environ["SERPENS_INCLUDEDIR"], "serpens", h) for h in ("nf.h", "nf_util.h")]
expected += [os.path.join(PLUGIN_DIR, f"serpens_nf_{nf}.so") for nf in ("noop", "fw", "mon", "nat", "ids", "vpn", "lb")]
expected += [os.path.join(os.environ["SERPENS_PKGCONFIGDIR"], "serpens-nf.pc"),
             os.path.join(SYSCONFDIR, "host.toml"), os.path.join(UNITDIR, "serpens-host@.service"),
             os.path.join(UNITDIR, "dev-shm-serpens.mount")]
if MANDIR:
    expected += [os.path.join(MANDIR, "man8", "serpens-host.8"), os.path.join(MANDIR, "man1", "serpens-bench.1")]
missing = [p for p in expected if not os.path.isfile(staged(p))]
check(not missing, f"not installed: {missing}")
check(os.path.isdir(staged(os.path.join(SYSCONFDIR, "chains"))), "no chains/ beside the installed host.toml")
print(f"ok [layout]: {len(expected)} files where meson's options say")

# --version of every installed program: "<tool> <project version>".
for tool in TOOLS:
    out = subprocess.run([staged(os.path.join(BINDIR, tool)), "--version"], capture_output=True, text=True,
                         timeout=30)
    check(out.returncode == 0 and out.stdout.strip() == f"{tool} {VERSION}",
          f"{tool} --version: exit {out.returncode}, {out.stdout!r}{out.stderr!r}")
print(f"ok [--version]: {VERSION}")

# The installed serpens-bench defaults to the installed plugins and programs,
# not to the build tree it was built in.
out = "".join(subprocess.run([staged(os.path.join(BINDIR, "serpens-bench"))] + args, capture_output=True, text=True,
                             timeout=30).stdout for args in (["--help"], ["throughput", "--help"]))
for default in (PLUGIN_DIR, os.path.join(BINDIR, "serpens-host"), os.path.join(BINDIR, "serpens-pktgen")):
    # CLI11 shows a default as TEXT=<value> (2.1) or TEXT [<value>] (later)
    check(re.search(r"[=\[]" + re.escape(default) + r"[\]\s]", out) is not None,
          f"serpens-bench's defaults do not name {default}:\n{out}")
check(BUILD not in out, f"installed serpens-bench still defaults to the build tree:\n{out}")
print("ok [serpens-bench]: defaults to the installed plugins and programs")

# The README's hello plugin and build command, from outside the source tree.
readme = open(os.environ["SERPENS_README"]).read()
section = readme[readme.index("## Writing a plugin"):]
source = re.search(r"```c\n(.*?)```", section, re.S).group(1)
command = re.search(r"^cc .*$", section, re.M).group(0)
check("pkg-config --cflags serpens-nf" in command, f"README's build command does not use serpens-nf.pc: {command}")
work = tempfile.mkdtemp(prefix="serpens-hello-")
atexit.register(shutil.rmtree, work, True)
with open(os.path.join(work, "hello.c"), "w") as f:
    f.write(source)
env = dict(os.environ, PKG_CONFIG_PATH=staged(os.environ["SERPENS_PKGCONFIGDIR"]), PKG_CONFIG_SYSROOT_DIR=destdir)
cflags = subprocess.run(["pkg-config", "--cflags", "serpens-nf"], env=env, capture_output=True, text=True).stdout
check(destdir in cflags, f"pkg-config --cflags serpens-nf does not point into the DESTDIR: {cflags!r}")
proc = subprocess.run(["sh", "-c", command + " -Werror"], cwd=work, env=env, capture_output=True, text=True)
check(proc.returncode == 0, f"{command}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
print(f"ok [hello plugin]: built out of tree with {cflags.strip()}")

# The installed host runs it: frames over the limit dropped, the rest out.
host = Host(plugins=())
hello = host.path("plugins/serpens_nf_hello.so")
shutil.copy(os.path.join(work, "serpens_nf_hello.so"), hello)
os.chmod(hello, 0o755)
host.chain("hello", 'name = "hello"\negress = "pcap0"\n[[nf]]\nname = "h"\nplugin = "hello"\n'
           '[nf.config]\nlimit = 500\n')
host.pktgen("-n", "400", "--size-min", "64", "--size-max", "1000", "--malformed-ratio", "0")
host.config(host.pcap_port() + '\n[[gateway.rule]]\nchain = "hello"\n', eal=host.eal(lcores="0"))
host.run("--idle-exit", "1")
frames = host.input()
small = [f for f in frames if len(f) <= 500]
check(0 < len(small) < len(frames), f"the capture needs frames on both sides of 500 B: {len(small)}/{len(frames)}")
out_frames = host.output()
check(sorted(out_frames) == sorted(small),
      f"hello passed {len(out_frames)} frames, expected the {len(small)} of at most 500 B")
print(f"ok [installed host]: hello passed {len(small)} of {len(frames)} frames, dropped the rest")

# Without [host] plugin_dir the installed host looks in the installed plugin
# directory (which this machine may lack: then --check names it).
with open(host.path("host.toml")) as f:
    text = f.read()
with open(host.path("default.toml"), "w") as f:
    f.write(text.replace('plugin_dir = "plugins"\n', ""))
proc = subprocess.run([os.environ["SERPENS_HOST"], "-c", host.path("default.toml"), "--check"], capture_output=True,
                      text=True, timeout=60)
log = proc.stdout + proc.stderr
if os.path.isdir(PLUGIN_DIR):
    check(f"plugin directory {PLUGIN_DIR} does not exist" not in log, log)
else:
    check(proc.returncode != 0 and f"plugin directory {PLUGIN_DIR} does not exist" in log,
          f"the installed host's default plugin_dir is not {PLUGIN_DIR}: {log}")
print(f"ok [default plugin_dir]: {PLUGIN_DIR}")
host.cleanup()

# The installed host.toml, its paths moved into the DESTDIR, passes --check.
config_dir = staged(SYSCONFDIR)
with open(os.path.join(config_dir, "host.toml")) as f:
    text = f.read()
check(f'plugin_dir = "{PLUGIN_DIR}"' in text, f"installed host.toml does not use {PLUGIN_DIR}")
# --check creates state_dir's parent: keep it in the scratch directory.
text = text.replace(f'"{PLUGIN_DIR}"', f'"{staged(PLUGIN_DIR)}"\nstate_dir = "{work}/state/host"')
with open(os.path.join(config_dir, "host.toml"), "w") as f:
    f.write(text)


def check_config(path):
    return subprocess.run([os.environ["SERPENS_HOST"], "-c", path, "--check"], capture_output=True, text=True,
                          timeout=60)


# It asks for hugepages: on a machine with none free (as CI's) --check says
# so, and passes once its args take the advice.
proc = check_config(os.path.join(config_dir, "host.toml"))
if free_hugepages() == 0:
    check(proc.returncode == 2 and "no free hugepages" in proc.stderr,
          f"installed host.toml passes --check without hugepages: exit {proc.returncode}\n{proc.stderr}")
    print("ok [installed host.toml]: --check names the hugepages this machine lacks")
    advised = os.path.join(work, "host-no-huge.toml")
    with open(advised, "w") as f:
        f.write(text.replace('args = ["-l", "0-1",', 'args = ["-l", "0-1", "--no-huge", "-m", "512",')
                .replace('chains_dir = "', f'chains_dir = "{config_dir}/'))
    proc = check_config(advised)
check(proc.returncode == 0, f"installed host.toml fails --check: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
print("ok [installed host.toml]: --check passes")

# Installing again keeps the host.toml edited above.
install()
with open(os.path.join(config_dir, "host.toml")) as f:
    check(staged(PLUGIN_DIR) in f.read(), "a second meson install overwrote the edited host.toml")
print("ok [reinstall]: the edited host.toml stays")

# The unit, its paths moved into the DESTDIR, as one instance of the template.
analyze = shutil.which("systemd-analyze")
if analyze is None:
    print("skip [systemd unit]: no systemd-analyze")
else:
    with open(staged(os.path.join(UNITDIR, "serpens-host@.service"))) as f:
        unit = f.read()
    check(f"ExecStart={BINDIR}/serpens-host -c {SYSCONFDIR}/%i.toml" in unit, f"unexpected ExecStart:\n{unit}")
    # The default state_dir's tmpfs with 2 MB pages, which the host wants.
    check("Wants=dev-shm-serpens.mount" in unit, f"the unit does not want the state's tmpfs:\n{unit}")
    mount_unit = os.path.join(work, "dev-shm-serpens.mount")
    shutil.copy(staged(os.path.join(UNITDIR, "dev-shm-serpens.mount")), mount_unit)
    with open(mount_unit) as f:
        check("Options=mode=0755,huge=advise" in f.read(), "the state's tmpfs is not mounted huge=advise")
    instance = os.path.join(work, "serpens-host@host.service")
    with open(instance, "w") as f:
        f.write(unit.replace(f"ExecStart={BINDIR}", f"ExecStart={staged(BINDIR)}"))
    # --man=no: the man page it names is in the DESTDIR, not where man looks.
    proc = subprocess.run([analyze, "verify", "--man=no", instance, mount_unit], capture_output=True, text=True,
                          timeout=60)
    check(proc.returncode == 0 and "serpens-host@" not in proc.stderr and "dev-shm-serpens" not in proc.stderr,
          f"systemd-analyze verify: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
    print("ok [systemd units]: systemd-analyze verify is silent on the host's and its state's")

print("ok [install]: every check passed")
