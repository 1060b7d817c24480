"""vpn through the real serpens-host, checked by tshark with the configured SAs.

Run 1 encrypts: tshark decrypts every ESP packet of the output with the SA
(ICV verified) and its inner packet must be the input packet's IP packet;
packets outside the selectors leave unchanged.  Run 2 decrypts run 1's
output plus a replayed, a tampered and an unknown-SPI packet: the output is
the original traffic, and the three bad packets are dropped and counted.
"""
import ipaddress
import os
import shutil
import struct
import subprocess
import sys

from harness import HOST, Host, check, read_pcap, write_pcap

if shutil.which("tshark") is None:
    print("skip: tshark not installed")
    sys.exit(77)

VPN_SO = os.path.join(os.path.dirname(os.path.dirname(HOST)), "plugins", "vpn", "serpens_nf_vpn.so")
LOCAL, REMOTE = "192.0.2.1", "198.51.100.2"
SAS = [  # spi, key+salt, selector (source prefix)
    (0x1001, "0123456789abcdef0123456789abcdef01020304", "198.18.0.0/16"),
    (0x1002, "fedcba9876543210fedcba9876543210a0b0c0d0", "2001:db8:a::/48"),
]


def sa_toml(direction):
    text = ""
    for spi, key, src in SAS:
        text += (f'[[nf.config.sa]]\nspi = {spi}\ndirection = "{direction}"\nkey = "0x{key}"\n'
                 f'local = "{LOCAL if direction == "out" else REMOTE}"\n'
                 f'remote = "{REMOTE if direction == "out" else LOCAL}"\n')
        if direction == "out":
            text += f'src = "{src}"\n'
    return text


def inner_ip(frame):
    """The IP packet of an untagged Ethernet frame, without Ethernet padding, and its source."""
    et = struct.unpack("!H", frame[12:14])[0]
    if et == 0x0800:
        total = struct.unpack("!H", frame[16:18])[0]
        return frame[14:14 + total], ipaddress.ip_address(frame[26:30])
    if et == 0x86DD:
        total = 40 + struct.unpack("!H", frame[18:20])[0]
        return frame[14:14 + total], ipaddress.ip_address(frame[22:38])
    return None, None


def selected_sa(frame):
    ip, src = inner_ip(frame)
    for spi, key, prefix in SAS:
        net = ipaddress.ip_network(prefix)
        if src is not None and src.version == net.version and src in net:
            return spi
    return None


def run_host(frames_in, direction):
    host = Host(plugins=())
    shutil.copy(VPN_SO, host.path("plugins/serpens_nf_vpn.so"))
    os.chmod(host.path("plugins/serpens_nf_vpn.so"), 0o755)
    if frames_in is None:
        host.pktgen("--packets", "1200", "--flows", "120", "--malformed-ratio", "0", "--vlan-ratio", "0",
                    "--mix", "tcp=50,udp=25,icmp=5,ipv6=20", "--seed", "31")
    else:
        write_pcap(host.path("in.pcap"), frames_in)
    host.chain("vpn", f'name = "vpn"\negress = "pcap0"\n[[nf]]\nname = "vpn"\nplugin = "vpn"\n'
                      f'[nf.config]\nstate = "host"\n{sa_toml(direction)}')
    host.config(host.pcap_port() + '\n[[gateway.rule]]\nname = "all"\nchain = "vpn"\n')
    host.run("--idle-exit", "1")
    nf = next(n for n in host.stats()["instances"][0]["nfs"] if n["name"] == "vpn")
    return host, host.input(), host.output(), nf.get("counters", {})


# ---- run 1: encrypt ------------------------------------------------------------
host1, inputs, outputs, c1 = run_host(None, "out")
check(len(outputs) == len(inputs), f"{len(inputs)} in, {len(outputs)} out")
uat = [f'uat:esp_sa:"IPv4","{LOCAL}","{REMOTE}","0x{spi:08x}","AES-GCM with 16 octet ICV [RFC4106]",'
       f'"0x{key}","NULL",""' for spi, key, _ in SAS]
cmd = ["tshark", "-r", host1.path("out.pcap"), "-o", "esp.enable_encryption_decode:TRUE",
       "-o", "esp.enable_authentication_check:TRUE",
       # Random payloads on well-known ports make application dissectors throw
       # "Malformed Packet" before ESP adds its trailer and ICV fields: stop at L3.
       "--disable-protocol", "tcp", "--disable-protocol", "udp", "--disable-protocol", "icmp",
       "--disable-protocol", "icmpv6"]
for u in uat:
    cmd += ["-o", u]
cmd += ["-T", "fields", "-E", "separator=|", "-e", "frame.number", "-e", "esp.spi", "-e", "esp.sequence",
        "-e", "esp.icv_good", "-e", "esp.contained_data", "-e", "esp.protocol"]
proc = subprocess.run(cmd, capture_output=True, text=True)
check(proc.returncode == 0, f"tshark failed: {proc.stderr}")
rows = [line.split("|") for line in proc.stdout.splitlines()]
check(len(rows) == len(outputs), f"tshark printed {len(rows)} rows for {len(outputs)} packets")
next_seq = {spi: 1 for spi, _, _ in SAS}
encrypted = 0
for i, (src, out, row) in enumerate(zip(inputs, outputs, rows)):
    spi = selected_sa(src)
    if spi is None:
        check(out == src, f"packet {i}: outside the selectors but changed")
        check(row[1] == "", f"packet {i}: unexpected ESP")
        continue
    encrypted += 1
    ip, _ = inner_ip(src)
    check(row[1] != "" and int(row[1], 16) == spi, f"packet {i}: SPI {row[1]}, expected {spi:#x}")
    check(int(row[2]) == next_seq[spi], f"packet {i}: sequence {row[2]}, expected {next_seq[spi]}")
    next_seq[spi] += 1
    check(row[3] in ("1", "True"), f"packet {i}: tshark says the ICV is not good: {row}")
    check(bytes.fromhex(row[4]) == ip, f"packet {i}: tshark's decrypted inner packet differs from the input")
    check(int(row[5], 0) == (4 if ip[0] >> 4 == 4 else 41), f"packet {i}: next header {row[5]}")
    check(out[12:14] == b"\x08\x00" and out[14 + 9] == 50, f"packet {i}: not an IPv4 ESP frame")
check(encrypted > 0 and all(n > 1 for n in next_seq.values()), f"both SAs should carry traffic: {next_seq}")
check(c1.get("encrypted") == encrypted, f"counter encrypted {c1.get('encrypted')} != {encrypted}")
check(c1.get("bypassed") == len(inputs) - encrypted, f"counter bypassed: {c1}")
print(f"ok run 1: {encrypted} of {len(inputs)} packets encrypted, tshark decrypted all: {c1}")

# ---- run 2: decrypt, with a replay, a tampered and an unknown-SPI packet ---------
first_esp = next(o for o in outputs if o[14 + 9] == 50)
# A fresh sequence number (so the replay check passes) that the ICV does not cover.
tampered = bytearray(first_esp)
tampered[34 + 4:34 + 8] = struct.pack("!I", 100000)
unknown = bytearray(first_esp)
unknown[34 + 3] ^= 0x40
wire = list(outputs) + [first_esp, bytes(tampered), bytes(unknown)]
host2, _, plain, c2 = run_host(wire, "in")
want = []
for src in inputs:
    if selected_sa(src) is None:
        want.append(src)
    else:
        ip, _ = inner_ip(src)
        want.append(src[:14] + ip)
check(len(plain) == len(want), f"run 2: {len(plain)} packets out, expected {len(want)}: {c2}")
for i, (got, exp) in enumerate(zip(plain, want)):
    check(got == exp, f"run 2: packet {i} does not decrypt to the original")
check(c2.get("decrypted") == encrypted, f"run 2: decrypted {c2.get('decrypted')} != {encrypted}")
check(c2.get("replay") == 1 and c2.get("bad_icv") == 1 and c2.get("unknown_spi") == 1,
      f"run 2: replay/bad ICV/unknown SPI should be counted once each: {c2}")
print(f"ok run 2: {c2}")
host1.cleanup()
host2.cleanup()
