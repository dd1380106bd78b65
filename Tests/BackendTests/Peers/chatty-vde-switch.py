# A VDE switch that completes libvdeplug's handshake, then writes one byte on the control
# socket, which a switch never does after it. Writes to DIR/result how many of the bytes
# it sent the other end had not read a second later (TIOCOUTQ on a unix stream socket),
# then waits to be killed. Used by VDETests.aByteOnTheControlSocketIsReadNotPeekedForEver.
import fcntl, os, socket, struct, sys, termios, time

d = sys.argv[1]
ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ctl.bind(f"{d}/ctl")
ctl.listen(1)
data = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
data.bind(f"{d}/data")
open(f"{d}/ready", "w").close()
c, _ = ctl.accept()
c.recv(4096)  # struct request_v3
path = f"{d}/data".encode()
c.sendall(struct.pack("=H", socket.AF_UNIX) + path + b"\0" * (108 - len(path)))  # sockaddr_un
time.sleep(0.3)
c.sendall(b"X")
time.sleep(1.0)
unread = struct.unpack("i", fcntl.ioctl(c, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
with open(f"{d}/result.tmp", "w") as f:
    f.write(str(unread))
os.rename(f"{d}/result.tmp", f"{d}/result")
time.sleep(3600)
