"""A branching chain delivers each packet through exactly the NFs of its path, in order."""
from harness import Host, check, decode

host = Host()
host.pktgen("--packets", "4000", "--flows", "200", "--malformed-ratio", "0", "--seed", "9")
# fw (tag 1) branches by protocol: TCP -> ids (2), UDP -> mon (3), other -> out;
# ids and mon join again at nat (4).
host.chain("b", '''name = "branch"
egress = "pcap0"
[[nf]]
name = "fw"
plugin = "steer"
config = { by = "proto", tag = 1 }
[[nf]]
name = "ids"
plugin = "trace"
config = { tag = 2 }
[[nf]]
name = "mon"
plugin = "trace"
config = { tag = 3 }
[[nf]]
name = "nat"
plugin = "trace"
config = { tag = 4 }
[[distribute]]
from = "fw"
to = ["ids", "mon", "out"]
[[aggregate]]
from = ["ids", "mon"]
to = "nat"
''')
host.config(host.pcap_port() + '\n[[gateway.rule]]\nname = "all"\nchain = "branch"\n')
host.run("--idle-exit", "1")


def path_of(frame):
    d = decode(frame)
    proto = d[1] if d else None
    if proto == 6:
        return bytes([1, 2, 4])
    if proto == 17:
        return bytes([1, 3, 4])
    return bytes([1])


inputs = host.input()
outputs = host.output()
check(len(outputs) == len(inputs), f"{len(inputs)} in, {len(outputs)} out")
counts = {}
for i, (src, out) in enumerate(zip(inputs, outputs)):
    trail = path_of(src)
    check(out == src + trail, f"packet {i}: expected path {list(trail)}, got trailer {list(out[len(src):])}")
    counts[trail] = counts.get(trail, 0) + 1
check(len(counts) == 3, f"expected all three paths to be taken: {counts}")
nfs = {nf["name"]: nf["packets"] for nf in host.stats()["instances"][0]["nfs"]}
check(nfs["nat"] == counts[bytes([1, 2, 4])] + counts[bytes([1, 3, 4])], f"nat saw {nfs['nat']}")
print("ok: " + ", ".join(f"{list(k)}: {v}" for k, v in counts.items()))
host.cleanup()
