#!/usr/bin/env python3
"""An NBD server (fixed newstyle handshake, NBD protocol spec "Handshake") that gives a
1 MiB export, then closes the connection at the first request of every connection:
a server that crashes on one request, or answers it with a protocol error, looks the same
to a client. Usage: nbd-drops-every-request.py SOCKET_PATH. Writes SOCKET_PATH.ready when
listening and counts connections in SOCKET_PATH.connections."""
import os
import socket
import struct
import sys

path = sys.argv[1]
NBDMAGIC, IHAVEOPT, REPLY_MAGIC = 0x4E42444D41474943, 0x49484156454F5054, 0x3E889045565A9
OPT_GO, REP_ACK, REP_INFO, REP_ERR_UNSUP = 7, 1, 3, (1 << 31) + 1


def recv_exact(c, n):
    data = b""
    while len(data) < n:
        chunk = c.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def reply(c, option, kind, payload=b""):
    c.sendall(struct.pack(">QIII", REPLY_MAGIC, option, kind, len(payload)) + payload)


def serve(c):
    c.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, 1 | 2))   # FIXED_NEWSTYLE | NO_ZEROES
    recv_exact(c, 4)                                               # client flags
    while True:
        _, option, length = struct.unpack(">QII", recv_exact(c, 16))
        recv_exact(c, length)
        if option == OPT_GO:
            # NBD_INFO_EXPORT: size 1 MiB, flags HAS_FLAGS | SEND_FLUSH
            reply(c, option, REP_INFO, struct.pack(">HQH", 0, 1 << 20, 1 | 4))
            reply(c, option, REP_ACK)
            break
        reply(c, option, REP_ERR_UNSUP)
    recv_exact(c, 28)   # the first request header: then the connection ends


listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
listener.listen(4)
open(path + ".ready", "w").close()
connections = 0
while True:
    c, _ = listener.accept()
    connections += 1
    with open(path + ".connections", "w") as f:
        f.write(str(connections))
    try:
        serve(c)
    except (EOFError, OSError):
        pass
    c.close()
