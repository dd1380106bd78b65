#!/usr/bin/env python3
"""Tools/soak/flood.py SECONDS RATE IP... — a paced UDP flood (1400-byte payloads, port 9:
discard, nothing answers) toward each IP at about RATE datagrams/s, so a soak has RX load
without one process eating a core of a 2-core machine."""
import socket
import sys
import time

seconds, rate, targets = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
data, per_tick = bytes(1400), max(1, rate // 1000)
end, sent, errors = time.monotonic() + seconds, 0, 0
while time.monotonic() < end:
    for _ in range(per_tick):
        for ip in targets:
            try:
                s.sendto(data, (ip, 9))
                sent += 1
            except OSError:
                errors += 1
    time.sleep(0.001)
print(f"flood: {sent} datagrams sent, {errors} refused by the sending socket")
