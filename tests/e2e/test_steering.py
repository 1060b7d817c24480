"""Gateway rules steer each packet to exactly the chain its first matching rule names."""
from collections import Counter

from harness import Host, check, decode

host = Host()
host.pktgen("--packets", "5000", "--flows", "400", "--malformed-ratio", "0", "--seed", "5",
            "--mix", "tcp=40,udp=40,icmp=10,ipv6=10")
for name, tag in (("web", 0x11), ("dns", 0x22), ("v6", 0x33)):
    host.chain(name, f'name = "{name}"\negress = "pcap0"\n[[nf]]\nname = "t"\nplugin = "trace"\n'
                     f'config = {{ tag = {tag} }}\n')
rules = '''
[gateway]
default = "pcap0"

[[gateway.rule]]
name = "web"
chain = "web"
proto = "tcp"
dst_port = "1024-65535"
src = "0.0.0.0/0"

[[gateway.rule]]
name = "dns"
chain = "dns"
proto = "udp"

[[gateway.rule]]
name = "v6"
chain = "v6"
src = "::/0"
'''
host.config(host.pcap_port() + rules)
host.run("--idle-exit", "1")


def expected_chain(frame):
    d = decode(frame)
    if d is None:
        return None
    version, proto, sport, dport = d
    if proto == 6 and 1024 <= dport <= 65535 and version == 4:
        return 0x11
    if proto == 17:
        return 0x22
    if version == 6:
        return 0x33
    return None


inputs = host.input()
outputs = host.output()
check(len(outputs) == len(inputs), f"{len(inputs)} in, {len(outputs)} out")
# The multiset of output frames must be exactly each input plus its chain's tag
# byte (or the input untouched when no rule matches).
want = Counter()
per_tag = Counter()
for frame in inputs:
    tag = expected_chain(frame)
    per_tag[tag] += 1
    want[frame + (bytes([tag]) if tag is not None else b"")] += 1
got = Counter(outputs)
check(want == got, f"{sum((want - got).values())} expected frames missing, "
                   f"{sum((got - want).values())} unexpected frames in the output")
stats = host.stats()
check(stats["rules"]["web"] == per_tag[0x11], "rule 'web' counter")
check(stats["rules"]["dns"] == per_tag[0x22], "rule 'dns' counter")
check(stats["rules"]["v6"] == per_tag[0x33], "rule 'v6' counter")
check(stats["dispatch"]["unmatched_passed"] == per_tag[None], "unmatched packets passed")
print("ok: " + ", ".join(f"{t}: {n}" for t, n in per_tag.items()))
host.cleanup()
