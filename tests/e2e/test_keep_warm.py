"""Keep-warm and scale to zero: an idle instance is reaped, its state survives,
and the next packet wakes the chain from the pool without being dropped.

A mon chain with keep_warm_s = 0.4 gets a first batch of flows through a veth
(net_af_packet in a namespace of the test's own); once it has been idle past
keep-warm the host reports the chain at zero (parked).  A second batch of the
same flows then wakes it.  Every packet of both batches leaves in order, mon's
per-flow counts cover both batches (the state outlived the instance), and the
host counted the wake-up and its first-packet latency.
"""
import json
import subprocess
import time

from harness import Host, Netns, STATE_TOOL, by_flow, check, flow_of, read_pcap, write_pcap


ns = Netns("warm")
ns.veth("kwa", "kwb")

host = Host(plugins=())
host.add_built_plugins("mon")
host.pktgen("--packets", "1200", "--flows", "100", "--malformed-ratio", "0", "--seed", "5", "--mix", "tcp=50,udp=50",
            "--vlan-ratio", "0")
frames = host.input()
write_pcap(host.path("first.pcap"), frames[:600])
write_pcap(host.path("second.pcap"), frames[600:])
write_pcap(host.path("empty.pcap"), [])
host.chain("c", 'name = "c"\negress = "out"\n[[nf]]\nname = "mon"\nplugin = "mon"\n'
                '[nf.config]\nmax_hosts = 4096\n')
host.config('[[port]]\nname = "in"\ndevice = "net_af_packet0,iface=kwa,framecnt=4096"\n'
            f'\n[[port]]\nname = "out"\ndevice = "net_pcap0,rx_pcap={host.path("empty.pcap")},'
            f'tx_pcap={host.path("out.pcap")}"\n'
            '\n[[gateway.rule]]\nname = "in"\nin_port = "in"\nchain = "c"\n'
            '\n[[instance]]\nchain = "c"\ncount = 1\nlcores = [1]\n'
            '\n[instances]\nkeep_warm_s = 0.4\npool = 1\n')
proc = host.start("--idle-exit", "5", ns=ns)


def wait_for(what, condition, seconds=4):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        state = host.chain_stats("c")
        if condition(state):
            return state
        time.sleep(0.05)
    check(False, f"{what} within {seconds} s: {host.chain_stats('c')}")


sent = ns.send_pcap("kwb", host.path("first.pcap"))
check(sent.returncode == 0, f"sending failed: {sent.stderr}")
parked = wait_for("the idle chain is parked (scaled to zero)", lambda c: c["instances"] == 0 and c["parked"] == 1)
check(parked["reaped"] >= 1, f"the reaped instance is counted: {parked}")

sent = ns.send_pcap("kwb", host.path("second.pcap"))
check(sent.returncode == 0, f"sending failed: {sent.stderr}")
woken = wait_for("a packet wakes the chain", lambda c: c["wakeups"] >= 1)
out, _ = proc.communicate(timeout=60)
check(proc.returncode == 0, f"host exited {proc.returncode}:\n{out}")

stats = host.stats()
chain = stats["chains"]["c"]
check(stats["dispatch"]["wakeups"] >= 1, f"the dispatcher opened the parked instance: {stats['dispatch']}")
check(len(chain["wake_latency_us"]) >= 1, f"the wake-up's first-packet latency is reported: {chain}")
sent_flows = by_flow(frames)
received = by_flow(f for f in read_pcap(host.path("out.pcap")) if flow_of(f) in sent_flows)
check(sum(len(v) for v in received.values()) == len(frames),
      f"{sum(len(v) for v in received.values())} of {len(frames)} packets left")
reordered = [f for f in sent_flows if received[f] != sent_flows[f]]
check(not reordered, f"{len(reordered)} of {len(sent_flows)} flows left out of order or incomplete")

# mon's counts survived the instance: both batches, per flow.
# Word 0 of mon's area in the chain's flow table: the flow's packets.
dump = subprocess.run([STATE_TOOL, "--root", host.state, "flows", "c", "--json"], capture_output=True, text=True,
                      check=True).stdout
counted = sorted(e["areas"]["mon"][0] for e in json.loads(dump)["entries"])
check(counted == sorted(len(v) for v in sent_flows.values()),
      f"mon's per-flow counts {counted[:8]}... differ from what was sent")
print(f"ok: parked after keep-warm, woken by a packet in {chain['wake_latency_us']} us, "
      f"{len(frames)} packets of {len(sent_flows)} flows in order, mon state intact")
host.cleanup()
