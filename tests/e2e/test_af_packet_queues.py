"""Every lcore receives on a Linux interface: net_af_packet with qpairs=2 on
one end of a veth pair (in a network namespace of its own), the kernel's
fanout spreading flows over the two queues by its symmetric flow hash.
Frames sent into the other end reach the chain on both lcores; every one
leaves, each flow in its original order."""

from harness import HOST, Host, Netns, by_flow, check, flow_of, read_pcap, write_pcap

ns = Netns("afp")
ns.veth("spa", "spb")

host = Host()
# Untagged: the kernel hands af_packet the outer VLAN tag apart, and the
# driver puts it back as 802.1Q even when it was 802.1ad.
host.pktgen("--packets", "3000", "--flows", "300", "--malformed-ratio", "0", "--seed", "9",
            "--mix", "tcp=50,udp=50", "--vlan-ratio", "0")
frames = host.input()
write_pcap(host.path("empty.pcap"), [])
host.chain("c", 'name = "c"\negress = "out"\n[[nf]]\nname = "t"\nplugin = "trace"\n'
                'config = { by_instance = true }\n')
host.config('[[port]]\nname = "in"\ndevice = "net_af_packet0,iface=spa,qpairs=2,framecnt=4096"\n'
            f'\n[[port]]\nname = "out"\ndevice = "net_pcap0,rx_pcap={host.path("empty.pcap")},'
            f'tx_pcap={host.path("out.pcap")}"\n'
            '\n[[gateway.rule]]\nname = "in"\nin_port = "in"\nchain = "c"\n'
            '\n[[instance]]\nchain = "c"\ncount = 2\nlcores = [0, 1]\n')
proc = host.start("--idle-exit", "2", ns=ns, log_level="warn")

# Paced, so the kernel's rings never overflow into the other queue.
sender = ns.send_pcap("spb", host.path("in.pcap"))
check(sender.returncode == 0, f"sending failed: {sender.stderr}")
out, _ = proc.communicate(timeout=60)
check(proc.returncode == 0, f"host exited {proc.returncode}:\n{out}")

stats = host.stats()
rx = {l["id"]: l["rx"] for l in stats["lcores"]}
check(all(rx.get(lcore, 0) > 0 for lcore in (0, 1)), f"both lcores receive: {rx}")
sent = by_flow(frames)
# Only the flows sent: nothing else should cross the veth, but the test does
# not own the kernel.
received = by_flow(f for f in (frame[:-1] for frame in read_pcap(host.path("out.pcap"))) if flow_of(f) in sent)
check(sum(len(v) for v in received.values()) == len(frames),
      f"{sum(len(v) for v in received.values())} of {len(frames)} packets left")
reordered = [f for f in sent if received[f] != sent[f]]
check(not reordered, f"{len(reordered)} of {len(sent)} flows left out of order or incomplete")
print(f"ok: {len(sent)} flows over af_packet qpairs=2, per lcore rx {rx}")
host.cleanup()
