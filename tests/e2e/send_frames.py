"""Sends the frames of a pcap out of an interface, paced: 32 frames, then a
pause.  Run inside the network namespace that holds the interface.
Usage: send_frames.py IFACE PCAP [PAUSE_S]"""
import socket
import sys
import time

from harness import read_pcap

iface, path = sys.argv[1], sys.argv[2]
pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.002
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
for i, frame in enumerate(read_pcap(path)):
    s.send(frame)
    if i % 32 == 31:
        time.sleep(pause)
