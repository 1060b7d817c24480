"""End-to-end harness: runs the real serpens-host on DPDK net_pcap vdevs.

Independent of the C++ code on purpose: captures are read and decoded here,
with Python's standard library only, so a bug in the host's parser cannot
hide itself in the checks.
"""
import atexit
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict

HOST = os.environ["SERPENS_HOST"]
CTL = os.environ.get("SERPENSCTL", "")
PKTGEN = os.environ["SERPENS_PKTGEN"]
TEST_PLUGINS = os.environ["SERPENS_TEST_PLUGINS"]
# The build tree the host comes from: its NF plugins and tools.
BUILD = os.path.dirname(os.path.dirname(HOST))
STATE_TOOL = os.path.join(BUILD, "tools", "serpens-state", "serpens-state")

_prefix_counter = 0

# The host refuses configs every local user may write to: the tests' own are
# not, whatever umask the suite was started with.
os.umask(os.umask(0o022) | 0o022)

# meson ends a test that overran its timeout with SIGTERM: exit through
# SystemExit, so the atexit cleanups still kill the hosts and remove the
# scratch and state directories and the namespaces.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def free_hugepages():
    """Hugepages free on this machine, of every size."""
    total = 0
    for size in os.listdir("/sys/kernel/mm/hugepages"):
        with open(os.path.join("/sys/kernel/mm/hugepages", size, "free_hugepages")) as f:
            total += int(f.read())
    return total


def thread_report(pid):
    """Each thread of process pid: its name, scheduler state, the kernel
    function it sleeps in and (for root) its kernel stack, then its user
    stacks when gdb is at hand: where a process that hangs is stuck."""
    def read(path):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return "?"

    lines = []
    try:
        tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError as e:
        return f"  (no threads to show: {e})"
    for tid in tids:
        task = f"/proc/{pid}/task/{tid}"
        state = read(f"{task}/stat").rpartition(")")[2].split()[:1] or ["?"]
        kernel = [frame.split()[-1].split("+")[0] for frame in read(f"{task}/stack").splitlines()[:8]
                  if frame.strip()]
        lines.append(f"  {tid} {read(task + '/comm')} state {state[0]} in {read(task + '/wchan') or '-'}"
                     f" kernel: {' < '.join(kernel) or '-'}")
    gdb = shutil.which("gdb")
    if gdb:
        try:
            out = subprocess.run([gdb, "-batch", "-p", str(pid), "-ex", "thread apply all bt 12"],
                                 capture_output=True, text=True, timeout=30).stdout
            for line in out.splitlines():
                frame = re.match(r"#(\d+)\s+(?:0x\w+ in )?(\S+) \(.*\)(?: at (\S+))?", line)
                if line.startswith("Thread"):
                    lines.append("  " + line)
                elif frame:
                    lines.append(f"    #{frame[1]} {frame[2]}" + (f" at {os.path.basename(frame[3])}" if frame[3] else ""))
        except subprocess.TimeoutExpired:
            lines.append("  (gdb did not answer within 30 s)")
    return "\n".join(lines)


def read_pcap(path):
    """Returns the frames of a classic pcap file as a list of bytes."""
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a pcap file")
    frames, offset = [], 24
    while offset + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(endian + "IIII", data[offset:offset + 16])
        offset += 16
        frames.append(data[offset:offset + caplen])
        offset += caplen
    return frames


def write_pcap(path, frames):
    """Writes frames as a classic little-endian pcap, 1 ms apart."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", 1700000000 + i // 1000, (i % 1000) * 1000, len(fr), len(fr)))
            f.write(fr)


def pcap_stream(frames):
    """A pcap file's header, then one record per frame: what a FIFO feeds net_pcap."""
    yield struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for i, fr in enumerate(frames):
        yield struct.pack("<IIII", 1700000000 + i // 1000000, i % 1000000, len(fr), len(fr)) + fr


class Feeder(threading.Thread):
    """Writes a trace into a FIFO that net_pcap reads (rx_pcap=<fifo>), counting
    the frames written: the host reads it as it goes, so a test can act while
    packets are in flight.  `per_ms`: at most that many frames per millisecond
    (None: as fast as the host reads).  `hold`: (frames, threading.Event): the
    writer waits for the event once it has written that many."""

    def __init__(self, path, frames, per_ms=None, hold=None):
        super().__init__(daemon=True)
        self.path, self.frames, self.written, self.error = path, frames, 0, None
        self.per_ms, self.hold = per_ms, hold

    def run(self):
        try:
            with open(self.path, "wb", buffering=1 << 16) as fifo:
                for i, chunk in enumerate(pcap_stream(self.frames)):
                    if self.hold is not None and i == self.hold[0] + 1:
                        fifo.flush()
                        self.hold[1].wait()
                    if self.per_ms is not None and i % self.per_ms == 0:
                        fifo.flush()
                        time.sleep(0.001)
                    fifo.write(chunk)
                    self.written += 1
        except OSError as e:
            self.error = e


def csum(data):
    """The Internet checksum (RFC 1071) of data."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth_ipv4(src, dst, proto, l4, ident=1):
    """Ethernet + an option-less IPv4 header (DF set, TTL 64, checksum filled in)
    around l4; src and dst are 4 packed bytes."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, 0x4000, 64, proto, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00" + ip + l4


def flow_frame(flow, seq):
    """UDP packet `seq` of flow `flow` (< 65536): its payload starts with both, as big-endian u32."""
    payload = struct.pack("!II", flow, seq) + bytes(10)
    udp = struct.pack("!HHHH", 10000 + flow, 53, 8 + len(payload), 0) + payload
    return eth_ipv4(bytes([198, 18, flow >> 8, flow & 0xFF]), bytes([203, 0, 113, 9]), 17, udp)


def tally_by_flow(frames, plain_len):
    """What the tally test NF appended to flow_frame packets: per flow, in the
    order they left, (seq, build, count, the rest of the tail)."""
    flows = defaultdict(list)
    for fr in frames:
        flow, seq = struct.unpack("!II", fr[42:50])
        tail = fr[plain_len:]
        check(len(tail) >= 5, f"flow {flow} packet {seq}: no tally tail ({tail.hex()})")
        flows[flow].append((seq, tail[0], int.from_bytes(tail[1:5], "little"), tail[5:]))
    return flows


def nf_counters(host, nf_name):
    """The named NF's own counters from the host's stats, summed over instances."""
    out = {}
    for inst in host.stats()["instances"]:
        for nf in inst["nfs"]:
            if nf["name"] == nf_name:
                for k, v in nf.get("counters", {}).items():
                    out[k] = out.get(k, 0) + v
    return out


def decode(frame):
    """(ip_version, proto, src_port, dst_port) or None for non-IP/malformed."""
    if len(frame) < 14:
        return None
    offset, ethertype = 12, struct.unpack("!H", frame[12:14])[0]
    tags = 0
    while ethertype in (0x8100, 0x88A8):
        tags += 1
        if tags > 2 or len(frame) < offset + 6:
            return None
        offset += 4
        ethertype = struct.unpack("!H", frame[offset:offset + 2])[0]
    l3 = offset + 2
    if ethertype == 0x0800:
        if len(frame) < l3 + 20 or frame[l3] >> 4 != 4:
            return None
        ihl = (frame[l3] & 0xF) * 4
        total = struct.unpack("!H", frame[l3 + 2:l3 + 4])[0]
        if ihl < 20 or total < ihl or l3 + total > len(frame):
            return None
        proto = frame[l3 + 9]
        frag = struct.unpack("!H", frame[l3 + 6:l3 + 8])[0] & 0x1FFF
        l4, end, version = l3 + ihl, l3 + total, 4
        if frag:
            return (4, proto, 0, 0)
    elif ethertype == 0x86DD:
        if len(frame) < l3 + 40 or frame[l3] >> 4 != 6:
            return None
        payload = struct.unpack("!H", frame[l3 + 4:l3 + 6])[0]
        proto, l4, end, version = frame[l3 + 6], l3 + 40, l3 + 40 + payload, 6
        if end > len(frame):
            return None
    else:
        return None
    if proto == 6:
        if end - l4 < 20 or not 5 <= frame[l4 + 12] >> 4 <= (end - l4) // 4:
            return None
        return (version, 6) + struct.unpack("!HH", frame[l4:l4 + 4])
    if proto == 17:
        if end - l4 < 8:
            return None
        ulen = struct.unpack("!H", frame[l4 + 4:l4 + 6])[0]
        if ulen < 8 or ulen > end - l4:
            return None
        return (version, 17) + struct.unpack("!HH", frame[l4:l4 + 4])
    if proto in (1, 58):
        if end - l4 < 8:
            return None
        return (version, proto, 0, 0)
    return (version, proto, 0, 0)


def addresses_of(frame, version):
    """The source and destination address bytes of a frame decode() took."""
    offset = 12
    while frame[offset:offset + 2] in (b"\x81\x00", b"\x88\xa8"):
        offset += 4
    l3 = offset + 2
    if version == 4:
        return frame[l3 + 12:l3 + 16], frame[l3 + 16:l3 + 20]
    return frame[l3 + 8:l3 + 24], frame[l3 + 24:l3 + 40]


def flow_of(frame):
    """Direction-independent flow key from our own decoder: addresses and ports."""
    d = decode(frame)
    if d is None:
        return None
    a, b = addresses_of(frame, d[0])
    ends = sorted([(a, d[2]), (b, d[3])])
    return (d[1], tuple(ends))


class Host:
    """A scratch directory with plugins, chains and a host.toml for one run."""

    def __init__(self, plugins=("steer", "trace", "noop")):
        global _prefix_counter
        _prefix_counter += 1
        self.dir = tempfile.mkdtemp(prefix="serpens-e2e-")
        self.prefix = f"serpens-e2e-{os.getpid()}-{_prefix_counter}"
        # State on tmpfs, where the host's default puts it: on disk every new
        # page of a table waits for writeback.
        self.state = f"/dev/shm/{self.prefix}"
        # A failed check exits at once: the scratch files go all the same.
        atexit.register(self.cleanup)
        os.makedirs(os.path.join(self.dir, "plugins"))
        os.makedirs(os.path.join(self.dir, "chains"))
        for name in plugins:
            target = os.path.join(self.dir, "plugins", f"serpens_nf_{name}.so")
            shutil.copy(os.path.join(TEST_PLUGINS, f"serpens_nf_{name}.so"), target)
            os.chmod(target, 0o755)

    def path(self, name):
        return os.path.join(self.dir, name)

    def add_built_plugins(self, *names):
        """Copies the build's NF plugins (serpens_nf_<name>.so) into this host's plugin directory."""
        for name in names:
            target = self.path(f"plugins/serpens_nf_{name}.so")
            shutil.copy(os.path.join(BUILD, "plugins", name, f"serpens_nf_{name}.so"), target)
            os.chmod(target, 0o755)

    def fw_mon_nat(self, egress):
        """The SFC FW -> MON -> NAT as chain "sfc" leaving by `egress`, with
        every size at its default: the build's plugins, a stateful fw that
        allows everything, mon, and nat from serpens-pktgen's inside
        198.18.0.0/16 to 203.0.113.0/28."""
        self.add_built_plugins("fw", "mon", "nat")
        with open(self.path("allow.rules"), "w") as f:
            f.write("default allow\n")
        self.chain("sfc", f'''name = "sfc"
egress = "{egress}"
chain = ["fw", "mon", "nat"]
[[nf]]
name = "fw"
plugin = "fw"
[nf.config]
rules = "../allow.rules"
stateful = true
[[nf]]
name = "mon"
plugin = "mon"
[[nf]]
name = "nat"
plugin = "nat"
[nf.config]
inside = "198.18.0.0/16"
external = "203.0.113.0/28"
''')

    def chain(self, name, text):
        with open(os.path.join(self.dir, "chains", name + ".toml"), "w") as f:
            f.write(text)

    def pktgen(self, *args):
        out = subprocess.run([PKTGEN, "-o", self.path("in.pcap"), "--summary"] + list(args),
                             check=True, capture_output=True, text=True)
        return json.loads(out.stdout)

    def eal(self, lcores="0-1"):
        return (f'args = ["-l", "{lcores}", "--no-huge", "-m", "256", "--no-pci", "--no-shconf", '
                f'"--file-prefix={self.prefix}", "--no-telemetry", "--log-level=warning"]')

    def traced_queues(self, queues, fifos=False):
        """One capture per RX queue of port "pcap0" (written now, or FIFOs
        a Feeder fills), and chain "c" out of it with a trace NF that tags
        each packet with its instance (0xC0 + i as the last byte); returns
        the port's [[port]] table."""
        paths = [self.path(f"q{q}.{'fifo' if fifos else 'pcap'}") for q in range(len(queues))]
        for path, frames in zip(paths, queues):
            if fifos:
                os.mkfifo(path, 0o600)
            else:
                write_pcap(path, frames)
        self.chain("c", 'name = "c"\negress = "pcap0"\n[[nf]]\nname = "t"\nplugin = "trace"\n'
                        'config = { by_instance = true }\n')
        captures = ",".join(f"rx_pcap={path}" for path in paths)
        return f'[[port]]\nname = "pcap0"\ndevice = "net_pcap0,{captures},tx_pcap={self.path("out.pcap")}"\n'

    def pcap_port(self, name="pcap0"):
        return (f'[[port]]\nname = "{name}"\n'
                f'device = "net_pcap0,rx_pcap={self.path("in.pcap")},tx_pcap={self.path("out.pcap")}"\n')

    def config(self, body, eal=None):
        # A pcap replays as fast as the host reads it, and net_pcap has no
        # back-pressure: rings and pool larger than any test capture keep a
        # busy CI machine (a worker descheduled for a while) from dropping.
        if "[instances]" not in body:
            body += "\n[instances]\nring_size = 16384\n"
        if "[mempool]" not in body:
            body += "\n[mempool]\nmbufs = 32767\n"
        text = (f'[host]\nid = "{self.prefix}"\nplugin_dir = "plugins"\nchains_dir = "chains"\n'
                f'state_dir = "{self.state}"\ncontrol_socket = "ctl.sock"\n\n[eal]\n{eal or self.eal()}\n\n{body}\n')
        with open(self.path("host.toml"), "w") as f:
            f.write(text)
        return self.path("host.toml")

    def run(self, *extra, timeout=60, expect_rc=0):
        cmd = [HOST, "-c", self.path("host.toml"), "--log-level", "warn",
               "--stats-json", self.path("stats.json")] + list(extra)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if expect_rc is not None and proc.returncode != expect_rc:
            fail(f"serpens-host exited {proc.returncode}, expected {expect_rc}\n"
                 f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def start(self, *extra, ns=None, log_level="info", start_timeout=100):
        """Starts serpens-host (inside the Netns `ns` when given) without
        waiting for it to end; returns its Popen once the control socket is
        up, or fails after `start_timeout` s.  Killed at exit if still
        running."""
        cmd = [HOST, "-c", self.path("host.toml"), "--log-level", log_level, "--stats-json",
               self.path("stats.json")] + list(extra)
        output = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        proc = ns.popen(*cmd, **output) if ns is not None else subprocess.Popen(cmd, **output)
        atexit.register(lambda: proc.poll() is None and proc.kill())
        # The control socket appears just before the lcores start.  The wait
        # ends as soon as it does; its bound is generous because a loaded
        # two-core CI machine starting two hosts at once has taken over 30 s,
        # and hosts in network namespaces once took over a minute (meson
        # gives most tests 120 s, those that start hosts in namespaces 300).
        # A slow start says where it is, every 15 s, so that even a test
        # meson ends for its timeout shows where the host was stuck.
        started = time.monotonic()
        next_report = started + 15
        while not os.path.exists(self.path("ctl.sock")) and proc.poll() is None:
            now = time.monotonic()
            if now >= started + start_timeout:
                break
            if now >= next_report:
                print(f"host {self.prefix} still starting after {now - started:.0f} s:\n{thread_report(proc.pid)}",
                      file=sys.stderr, flush=True)
                next_report += 15
            time.sleep(0.05)
        if not os.path.exists(self.path("ctl.sock")):
            if proc.poll() is None:
                report = thread_report(proc.pid)
                proc.kill()  # so that what it said so far shows where it was stuck
                output = proc.communicate()[0]
                fail(f"host did not start within {start_timeout} s; its threads:\n{report}\nits output:\n{output}")
            output = proc.communicate()[0]
            fail(f"host did not start: exit code {proc.returncode}\n{output}")
        return proc

    def ctl(self, *args, timeout=30):
        """serpensctl on this host's control socket: the CompletedProcess."""
        return subprocess.run([CTL, "-s", self.path("ctl.sock")] + list(args), capture_output=True, text=True,
                              timeout=timeout)

    def ctl_json(self, *args):
        """serpensctl's --json reply to a command, which must succeed."""
        out = self.ctl(*args, "--json")
        check(out.returncode == 0, f"serpensctl {' '.join(args)}: {out.stdout}{out.stderr}")
        return json.loads(out.stdout)

    def chain_stats(self, chain):
        """The live `chains` entry of one chain, from serpensctl stats."""
        out = self.ctl("stats", "--json")
        check(out.returncode == 0, f"serpensctl stats: {out.stdout}{out.stderr}")
        return json.loads(out.stdout)["chains"][chain]

    def stats(self):
        with open(self.path("stats.json")) as f:
            return json.load(f)

    def where_packets_are(self):
        """A running host's counters that say where packets went (its
        instances, dispatcher, VXLAN and ports), for the message of a wait
        that timed out."""
        out = self.ctl("stats", "--json")
        if out.returncode != 0:
            return out.stderr
        stats = json.loads(out.stdout)
        return {k: stats.get(k) for k in ("instances", "dispatch", "vxlan", "ports")}

    def output(self):
        return read_pcap(self.path("out.pcap"))

    def input(self):
        return read_pcap(self.path("in.pcap"))

    def eal_runtime_dir(self):
        """The EAL's runtime directory for this host's --file-prefix, which
        --no-shconf still creates (where DPDK puts it)."""
        runtime = "/var/run" if os.geteuid() == 0 else os.environ.get("XDG_RUNTIME_DIR", "/tmp")
        return os.path.join(runtime, "dpdk", self.prefix)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.state, ignore_errors=True)
        # A host that was killed leaves it.
        shutil.rmtree(self.eal_runtime_dir(), ignore_errors=True)


def by_flow(frames):
    """Frames grouped by flow_of, each group in the order given: two captures
    carry the same flows in the same order exactly when these are equal."""
    groups = defaultdict(list)
    for frame in frames:
        groups[flow_of(frame)].append(frame)
    return groups


class Netns:
    """A network namespace of the test's own, removed at exit, with veth
    pairs inside it: hosts and senders reach each other with
    namespace-internal interfaces only."""

    def __init__(self, tag):
        self.name = f"serpens-{tag}-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        atexit.register(lambda: subprocess.run(["ip", "netns", "delete", self.name], check=False))

    def run(self, *cmd, **kw):
        return subprocess.run(["ip", "netns", "exec", self.name] + list(cmd), check=True, **kw)

    def popen(self, *cmd, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.name] + list(cmd), **kw)

    def veth(self, a, b):
        """A veth pair a <-> b, up, without IPv6 (the kernel's own neighbour
        and multicast messages would be traffic a test did not send)."""
        self.run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        for dev in (a, b):
            self.up(dev)

    def up(self, dev, address=None):
        """Brings dev up without IPv6, with an IPv4 address (CIDR) if given."""
        self.run("sysctl", "-q", "-w", f"net.ipv6.conf.{dev}.disable_ipv6=1")
        if address is not None:
            self.run("ip", "addr", "add", address, "dev", dev)
        self.run("ip", "link", "set", dev, "up")

    def link(self, other, a, b, addr_a, addr_b):
        """A veth pair from a here to b in the Netns `other`, up, with IPv4
        addresses (CIDR) on both ends: two hosts' underlay."""
        self.run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        self.run("ip", "link", "set", b, "netns", other.name)
        for ns, dev, addr in ((self, a, addr_a), (other, b, addr_b)):
            ns.up(dev, addr)
            ns.run("ip", "link", "set", "lo", "up")

    def mac(self, dev):
        """The MAC address of an interface here, as aa:bb:cc:dd:ee:ff."""
        out = self.run("cat", f"/sys/class/net/{dev}/address", capture_output=True, text=True).stdout
        return out.strip()

    def send_pcap(self, iface, pcap, pause_s=0.002):
        """Sends a pcap's frames out of iface, 32 at a time with a pause."""
        here = os.path.dirname(os.path.abspath(__file__))
        proc = self.run("python3", os.path.join(here, "send_frames.py"), iface, pcap, str(pause_s), cwd=here,
                        capture_output=True, text=True)
        return proc


def wait_until(what, condition, alive=(), timeout=30, explain=lambda: ""):
    """condition()'s first true value, polled every 100 ms; fails after
    `timeout` s (with explain()'s text), or when a process of `alive` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in alive:
            check(proc.poll() is None, f"{' '.join(proc.args[-6:])} exited while waiting until {what}")
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    fail(f"{what} within {timeout} s {explain()}")


def peer_section(host, pki, address, peer_host, peer_address, underlay=None, lease_ms=5000):
    """host.toml's [peer] for `host`: the peer protocol on address:7946, the
    port named "underlay" carrying VXLAN from `underlay` (default: address),
    heartbeats every 200 ms, down after 1 s, and one [[peer.host]].  `pki`
    is make_pki's (ca, certs)."""
    ca, certs = pki
    cert, key = certs[host.prefix]
    return f'''
[peer]
listen = "{address}:7946"
certificate = "{cert}"
private_key = "{key}"
ca = "{ca}"
underlay_port = "underlay"
underlay_address = "{underlay or address}"
heartbeat_ms = 200
dead_after_ms = 1000
lease_ms = {lease_ms}

[[peer.host]]
id = "{peer_host.prefix}"
address = "{peer_address}:7946"
'''


def make_pki(directory, ids, rogue_ids=()):
    """Certificates for the peer protocol, made with the openssl command: a
    CA, and per host id a key and a certificate it signed naming the id (CN
    and DNS SAN).  Ids in rogue_ids get theirs from another CA, which the
    others do not trust.  Returns the CA's path and {id: (cert, key)}."""
    os.makedirs(directory, exist_ok=True)

    def openssl(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=directory)

    for ca in ("ca", "rogue-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-subj", f"/CN=serpens test {ca}", "-days", "2")
    issued = {}
    for host_id in list(ids) + list(rogue_ids):
        ca = "rogue-ca" if host_id in rogue_ids else "ca"
        with open(os.path.join(directory, f"{host_id}.ext"), "w") as f:
            f.write(f"subjectAltName=DNS:{host_id}\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                f"{host_id}.key", "-out", f"{host_id}.csr", "-subj", f"/CN={host_id}")
        openssl("x509", "-req", "-in", f"{host_id}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{host_id}.crt", "-days", "2", "-extfile", f"{host_id}.ext")
        issued[host_id] = (os.path.join(directory, f"{host_id}.crt"), os.path.join(directory, f"{host_id}.key"))
    return os.path.join(directory, "ca.crt"), issued


def total_drops(stats):
    """Every packet the host counted as dropped, wherever it was dropped."""
    d = stats["dispatch"]
    drops = (d["malformed_dropped"] + d["unmatched_dropped"] + d["no_instance"] + d["ring_full"]
             + d["linearize_failed"] + d["default_tx_dropped"])
    drops += sum(port["tx_ring_dropped"] for port in stats["ports"])
    for inst in stats["instances"]:
        drops += inst["dropped"] + inst["tx_dropped"]
    return drops
