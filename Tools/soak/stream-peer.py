#!/usr/bin/env python3
"""Tools/soak/stream-peer.py PATH UP AWAY — the far end of a `net=stream:unix:PATH` backend
that goes away under traffic: listens on PATH, takes the connection, reads frames (4-byte
big-endian length, then the frame) for UP seconds, then closes the connection and the
listener and removes PATH, stays away AWAY seconds, listens again and reads until the
other side closes. Prints the frames read per connection."""
import os
import socket
import sys
import time

path, up, away = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])


def serve(until):
    """Accepts one connection and counts whole frames until `until` (or EOF); returns the count."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    conn, _ = listener.accept()
    conn.settimeout(0.2)
    pending, frames = b"", 0
    while until is None or time.monotonic() < until:
        try:
            chunk = conn.recv(1 << 20)
        except socket.timeout:
            continue
        if not chunk:
            break
        pending += chunk
        while len(pending) >= 4:
            n = int.from_bytes(pending[:4], "big")
            if len(pending) < 4 + n:
                break
            pending = pending[4 + n:]
            frames += 1
    conn.close()
    listener.close()
    os.unlink(path)
    return frames


first = serve(time.monotonic() + up)
print(f"{path}: connection 1 read {first} frames, then closed; away {away:.0f} s", flush=True)
time.sleep(away)
second = serve(None)
print(f"{path}: connection 2 read {second} frames until the device side closed", flush=True)
