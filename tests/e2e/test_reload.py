"""Hot reload while traffic flows: edits of a chain file and new builds of a
plugin are swapped in at a batch boundary, their state kept, or refused with
the running chain untouched.

The chain runs `tally` (tests/plugins/tally.c) in two instances: it counts each
flow's packets in the chain's flow table and appends its build number and the
flow's count to every packet.  A paced trace of many UDP flows is fed through a
FIFO; while it flows:
 1. an invalid edit of the chain file is refused with file:line;
 2. build 3 of tally, whose state table has another value size, is refused,
    and so is a build the loader refuses (group-writable), saying why;
 3. build 2, compatible, is swapped in by `serpensctl reload`;
 4. a valid edit (a trace NF after tally) is swapped in by SIGHUP.
Then every packet left the host, and each flow's counts run 1, 2, 3... in
order across both swaps (no packet lost or reordered, the flow state kept),
its builds go 1 then 2 (never 3), and the trace NF tags the packets after the
edit.  Bills and metering go on counting across the reloads.
"""
import json
import os
import shutil
import signal
import stat
import threading
import time

from harness import TEST_PLUGINS, Feeder, Host, check, flow_frame, read_pcap, tally_by_flow

FLOWS = 400
ROUNDS = 60
TRACE_TAG = 0x77
CHAIN = 'name = "c"\negress = "pcap0"\n[[nf]]\nname = "tally"\nplugin = "tally"\n'
EDITED = (CHAIN.replace('egress = "pcap0"\n', 'egress = "pcap0"\nchain = ["tally", "t"]\n') +
          f'[[nf]]\nname = "t"\nplugin = "trace"\n[nf.config]\ntag = {TRACE_TAG}\n')
INVALID = CHAIN + '[[nf]]\nname = "t"\nplugin = "trace"\n[nf.config]\ntag = \n'


host = Host(plugins=("tally", "trace"))
chain_file = host.path("chains/c.toml")
host.chain("c", CHAIN)
trace = [flow_frame(f, seq) for seq in range(ROUNDS) for f in range(FLOWS)]
plain_len = len(trace[0])
fifo = host.path("in.fifo")
os.mkfifo(fifo, stat.S_IRUSR | stat.S_IWUSR)
host.config(f'[[port]]\nname = "pcap0"\ndevice = "net_pcap0,rx_pcap={fifo},tx_pcap={host.path("out.pcap")}"\n'
            '\n[[gateway.rule]]\nchain = "c"\n\n[[instance]]\nchain = "c"\ncount = 2\nlcores = [1]\n')
# The last tenth waits for the last reload, so packets surely follow it.
done = threading.Event()
feeder = Feeder(fifo, trace, per_ms=8, hold=(len(trace) * 9 // 10, done))
feeder.start()
proc = host.start("--idle-exit", "2")


def install(build):
    """Puts tally's build over the loaded file, as an operator would (rename in place)."""
    staging = host.path("plugins/.tally.new")
    shutil.copy(os.path.join(TEST_PLUGINS, f"serpens_nf_tally{build}.so"), staging)
    os.chmod(staging, 0o755)
    os.replace(staging, host.path("plugins/serpens_nf_tally.so"))


def wait_fed(fraction):
    while feeder.written < len(trace) * fraction:
        check(proc.poll() is None, "serpens-host stopped before the trace was fed")
        time.sleep(0.002)


def tally_version():
    out = host.ctl("plugins", "--json")
    check(out.returncode == 0, f"serpensctl plugins: {out.stdout}{out.stderr}")
    return next(p["version"] for p in json.loads(out.stdout) if p["name"] == "tally")


def reloads():
    out = host.ctl("chains", "--json")
    check(out.returncode == 0, f"serpensctl chains: {out.stdout}{out.stderr}")
    return next(c["runtime"]["reloads"] for c in json.loads(out.stdout) if c["name"] == "c")


try:
    # 1. An invalid edit: refused with the file and line, nothing changes.
    wait_fed(0.2)
    with open(chain_file, "w") as f:
        f.write(INVALID)
    out = host.ctl("reload")
    check(out.returncode == 1 and f"{chain_file}:" in out.stderr,
          f"an invalid chain edit was not refused with its file:line: {out.returncode} {out.stdout}{out.stderr}")
    with open(chain_file, "w") as f:
        f.write(CHAIN)

    # 2. A build whose state table differs: refused, build 1 runs on.
    wait_fed(0.35)
    install("_v3")
    out = host.ctl("reload", "--json")
    check(out.returncode == 1 and "'seen'" in out.stdout and json.loads(out.stdout)["error"]["code"] == "refused",
          f"an incompatible build was not refused for its table: {out.returncode} {out.stdout}{out.stderr}")
    check(tally_version() == "build 1", "after a refused swap the running plugin is not build 1")

    # 2b. A new build the loader refuses (group-writable): the chain cannot
    # compile, and the reply says why.
    install("_v2")
    os.chmod(host.path("plugins/serpens_nf_tally.so"), 0o775)
    out = host.ctl("reload")
    check(out.returncode == 1 and "plugin refused" in out.stderr and "writable by group" in out.stderr,
          f"a refused plugin file does not explain the failed reload: {out.returncode} {out.stderr}")

    # 3. A compatible build, swapped in by serpensctl.
    wait_fed(0.5)
    install("_v2")
    out = host.ctl("reload", "--json")
    check(out.returncode == 0, f"serpensctl reload of a compatible build: {out.stdout}{out.stderr}")
    reply = json.loads(out.stdout)
    check(reply["reloaded"] == ["c"] and reply["plugins_changed"] == ["tally"] and reply["swaps"][0]["instances"] == 2,
          f"reload reply: {reply}")
    check(tally_version() == "build 2", "serpensctl plugins does not show build 2 after the swap")
    human = host.ctl("reload")
    check(human.returncode == 0 and "unchanged: c" in human.stdout,
          f"a reload with nothing changed should keep the chain: {human.stdout}{human.stderr}")

    # 4. A valid edit, swapped in by SIGHUP.
    wait_fed(0.7)
    with open(chain_file, "w") as f:
        f.write(EDITED)
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while reloads() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    check(reloads() == 2, "SIGHUP did not swap the edited chain in")
    done.set()
    feeder.join(timeout=120)
    check(feeder.error is None, f"feeding the trace: {feeder.error}")
    log, _ = proc.communicate(timeout=120)
finally:
    done.set()
    if proc.poll() is None:
        proc.kill()
        proc.wait()
check(proc.returncode == 0, f"serpens-host exited {proc.returncode}:\n{log}")
check("reload refused" in log or "refused" in log, f"the refusals are not logged:\n{log}")

out = read_pcap(host.path("out.pcap"))
check(len(out) == len(trace), f"{len(trace)} packets sent, {len(out)} left the host:\n{log}")
flows = tally_by_flow(out, plain_len)
for flow, seen in flows.items():
    check([s for s, _, _, _ in seen] == list(range(ROUNDS)), f"flow {flow}: packets out of order or lost: {seen}")
    check([c for _, _, c, _ in seen] == list(range(1, ROUNDS + 1)),
          f"flow {flow}: its count did not carry on across the swaps: {[c for _, _, c, _ in seen]}")
    b = [build for _, build, _, _ in seen]
    check(b == sorted(b) and set(b) <= {1, 2} and b[0] == 1, f"flow {flow}: builds {b}")
    check(all(rest in (b"", bytes([TRACE_TAG])) for _, _, _, rest in seen), f"flow {flow}: unexpected tails {seen}")
    t = [rest == bytes([TRACE_TAG]) for _, _, _, rest in seen]
    check(t == sorted(t), f"flow {flow}: the trace NF's tag came and went: {t}")
all_builds = [build for seen in flows.values() for _, build, _, _ in seen]
check(all_builds.count(2) > 0 and all_builds.count(1) > 0, "the trace did not run on both builds")
check(any(rest for seen in flows.values() for _, _, _, rest in seen), "no packet went through the edited chain")

stats = host.stats()
chain = stats["chains"]["c"]
check(chain["metered_packets"] == len(trace) and chain["reloads"] == 2,
      f"metering across reloads: {chain}, {len(trace)} sent")
print(f"OK: {len(trace)} packets over {FLOWS} flows, 2 swaps and 2 refusals; counts carried on")
