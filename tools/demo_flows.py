#!/usr/bin/env python3
"""Shows a few flows the demo's NAT translated: each output packet whose
source is a NAT pool address is matched to its input packet by the fields NAT
leaves alone (IP id, destination, protocol, length)."""
import struct
import sys


def frames(path):
    with open(path, "rb") as f:
        data = f.read()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    offset = 24
    while offset + 16 <= len(data):
        caplen = struct.unpack(endian + "I", data[offset + 8:offset + 12])[0]
        yield data[offset + 16:offset + 16 + caplen]
        offset += 16 + caplen


def ipv4_flow(frame):
    """(key NAT leaves alone, (src, sport), (dst, dport), proto) of an untagged IPv4 TCP/UDP frame."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0xF) * 4
    proto = frame[23]
    if proto not in (6, 17) or len(frame) < 14 + ihl + 4:
        return None
    ip = lambda b: ".".join(str(x) for x in b)
    src, dst = ip(frame[26:30]), ip(frame[30:34])
    sport, dport = struct.unpack("!HH", frame[14 + ihl:18 + ihl])
    key = (frame[18:20], dst, dport, proto, frame[16:18])
    return key, (src, sport), (dst, dport), proto


def main(inp, out, pool_prefix, count=5):
    before = {}
    for frame in frames(inp):
        flow = ipv4_flow(frame)
        if flow:
            before.setdefault(flow[0], flow)
    shown = set()
    for frame in frames(out):
        flow = ipv4_flow(frame)
        if not flow or not flow[1][0].startswith(pool_prefix) or flow[0] not in before:
            continue
        original = before[flow[0]]
        if original[1] in shown:
            continue
        shown.add(original[1])
        name = "tcp" if flow[3] == 6 else "udp"
        print(f"  {name} {original[1][0]}:{original[1][1]} -> {flow[2][0]}:{flow[2][1]}"
              f"   left as   {flow[1][0]}:{flow[1][1]} -> {flow[2][0]}:{flow[2][1]}")
        if len(shown) == count:
            break
    if not shown:
        print("  (no translated flow found)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "203.0.113.")
