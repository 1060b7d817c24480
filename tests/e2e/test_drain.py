"""Draining lcores while traffic flows: `serpensctl drain` moves every
instance off an lcore, each handing its flows to one started on another
lcore, and keeps scaling off it until `drain --undo`.

Chain `c` runs `tally` (tests/plugins/tally.c: it counts each flow's packets
in the chain's flow table and appends the count to every packet) in two
instances, on lcores 1 and 2.  A paced trace flows through a FIFO while
lcore 2 is drained, a scale-out avoids it, and after --undo one uses it
again.  Afterwards every packet left the host, and each flow's counts run
1, 2, 3... in order: nothing lost or reordered, the flow state kept.
"""
import json
import os
import stat
import threading

from harness import Feeder, Host, check, flow_frame, read_pcap, tally_by_flow, wait_until

FLOWS = 300
ROUNDS = 50

host = Host(plugins=("tally",))
host.chain("c", 'name = "c"\negress = "pcap0"\n[[nf]]\nname = "tally"\nplugin = "tally"\n')
trace = [flow_frame(f, seq) for seq in range(ROUNDS) for f in range(FLOWS)]
fifo = host.path("in.fifo")
os.mkfifo(fifo, stat.S_IRUSR | stat.S_IWUSR)
host.config(f'[[port]]\nname = "pcap0"\ndevice = "net_pcap0,rx_pcap={fifo},tx_pcap={host.path("out.pcap")}"\n'
            '\n[[gateway.rule]]\nchain = "c"\n\n[[instance]]\nchain = "c"\ncount = 2\nlcores = [1, 2]\n',
            # Three lcores on whatever CPUs the machine has (CI has two).
            eal=host.eal("0-1").replace('"-l", "0-1"', '"--lcores", "0@0,1@1,2@1"'))
done = threading.Event()
feeder = Feeder(fifo, trace, per_ms=8, hold=(len(trace) * 9 // 10, done))
feeder.start()
proc = host.start("--idle-exit", "2")


def ctl_json(*args):
    out = host.ctl(*args, "--json")
    check(out.returncode == 0, f"serpensctl {' '.join(args)}: {out.stdout}{out.stderr}")
    return json.loads(out.stdout)


def lcores_of_c():
    return sorted(i["lcore"] for i in ctl_json("instances") if i["chain"] == "c" and i["state"] == "active")


def wait_fed(fraction):
    # Polled, not spun: a spinning loop holds the GIL the feeder needs.
    wait_until(f"{fraction:.0%} of the trace fed", lambda: feeder.written >= len(trace) * fraction, alive=[proc],
               timeout=60, explain=lambda: f"({feeder.written} of {len(trace)} frames, error {feeder.error})")


try:
    check(lcores_of_c() == [1, 2], f"instances before the drain: {lcores_of_c()}")
    wait_fed(0.3)
    drained = ctl_json("drain", "2")
    check(drained["drained"] == [2] and len(drained["moves"]) == 1 and drained["moves"][0]["from_lcore"] == 2 and
          drained["moves"][0]["to_lcore"] != 2 and drained["moved_buckets"] > 0, f"drain 2: {drained}")
    check(2 not in lcores_of_c() and len(lcores_of_c()) == 2, f"instances after the drain: {lcores_of_c()}")
    check(ctl_json("drain") == {"drained": [2]}, "drain without lcores lists the drained ones")
    wait_fed(0.5)
    check(ctl_json("scale", "c", "+1")["after"] == 3, "scale +1 after the drain")
    check(2 not in lcores_of_c(), f"a scale-out placed an instance on drained lcore 2: {lcores_of_c()}")
    for bad, why in ((["drain", "0,1,2"], "leave none"), (["drain", "9"], "not enabled"),
                     (["scale", "c", "+1", "-l", "2"], "drained")):
        out = host.ctl(*bad)
        check(out.returncode == 1 and why in out.stderr, f"serpensctl {' '.join(bad)}: {out.returncode} {out.stderr}")
    wait_fed(0.7)
    check(ctl_json("drain", "--undo") == {"drained": []}, "drain --undo")
    check(ctl_json("scale", "c", "+1", "-l", "2")["after"] == 4 and 2 in lcores_of_c(),
          f"after --undo, lcore 2 runs instances again: {lcores_of_c()}")
    human = host.ctl("drain")
    check(human.returncode == 0 and "drained lcores: none" in human.stdout, f"serpensctl drain: {human.stdout}")
    done.set()
    feeder.join(timeout=120)
    check(feeder.error is None, f"feeding the trace: {feeder.error}")
    log, _ = proc.communicate(timeout=120)
except SystemExit:
    done.set()
    if proc.poll() is None:
        proc.kill()
    print(f"serpens-host (exit {proc.wait()}):\n{proc.communicate()[0]}")
    raise
finally:
    done.set()
    if proc.poll() is None:
        proc.kill()
        proc.wait()
check(proc.returncode == 0, f"serpens-host exited {proc.returncode}:\n{log}")

out = read_pcap(host.path("out.pcap"))
check(len(out) == len(trace), f"{len(trace)} packets sent, {len(out)} left the host:\n{log}")
for flow, seen in tally_by_flow(out, len(trace[0])).items():
    check([(s, c) for s, _, c, _ in seen] == [(s, s + 1) for s in range(ROUNDS)],
          f"flow {flow}: lost, reordered or recounted across the drain: {seen}")
print(f"OK: {len(trace)} packets over {FLOWS} flows through a drain, a scale-out and an undo")
