#!/usr/bin/env python3
"""Hostile-guest scenarios against `swiftvmm qtest` (issue 8, misbehaviour tests).

Drives a black-box `swiftvmm qtest` process over QEMU's qtest line protocol, with an
e1000 and a virtio-net on the bus, through what a malicious guest can do: rings outside
RAM, descriptor loops, a runaway avail index, TSO contexts with absurd header lengths,
MSI-X entries with bogus addresses, BARs moved over each other and over RAM, register
accesses of every size at every offset, and a long random script with a fixed seed.
After every scenario the process must still be running and answering.

    Tools/hostile/qtest_hostile.py [--swiftvmm PATH] [--random-commands N] [--seed S] [SCENARIO...]

Exit status 0 when the process survived everything; the summary lists each scenario
with the number of commands sent.
"""
import argparse, os, random, select, subprocess, sys, time

E1000_SLOT, VIRTIO_SLOT = 3, 4
E1000_BAR0, E1000_IO = 0xC000_0000, 0xC000       # 128 KiB registers, 8-byte I/O window
VIRTIO_BAR0 = 0xC010_0000                          # 64-bit BAR, 32 KiB
RAM = 64 << 20


class Dead(Exception):
    pass


class QTest:
    def __init__(self, binary, timeout=10.0):
        self.proc = subprocess.Popen(
            [binary, "qtest", "--memory", "64M",
             "--device", f"e1000,slot={E1000_SLOT},net=user",
             "--device", f"virtio-net,slot={VIRTIO_SLOT},net=user"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
        self.timeout = timeout
        self.buffer = b""
        self.sent = 0
        self.notes = set()   # what the devices answered (e.g. NEEDS_RESET), for the record

    def _line(self):
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Dead("no answer within %.0f s (hang?)" % self.timeout)
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise Dead("process exited with status %s" % self.proc.wait())
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode(errors="replace")

    def cmd(self, text):
        try:
            self.proc.stdin.write((text + "\n").encode())
        except BrokenPipeError:
            raise Dead("process exited with status %s" % self.proc.wait())
        self.sent += 1
        while True:
            line = self._line()
            if not line.startswith("IRQ "):        # asynchronous interrupt notices
                return line

    def value(self, text):
        answer = self.cmd(text)
        if not answer.startswith("OK "):
            return 0
        try:
            return int(answer.split()[1], 16)
        except ValueError:
            return 0

    def alive(self):
        return self.proc.poll() is None and self.cmd("readl 0x0").startswith("OK")

    def close(self):
        self.proc.kill()
        self.proc.wait()

    # config mechanism #1 and memory helpers
    def cfg_write(self, slot, offset, value, size=4):
        self.cmd(f"outl 0xcf8 {0x80000000 | slot << 11 | (offset & 0xFC):#x}")
        op = {1: "outb", 2: "outw", 4: "outl"}[size]
        self.cmd(f"{op} {0xCFC + (offset & 3):#x} {value:#x}")

    def cfg_read(self, slot, offset):
        self.cmd(f"outl 0xcf8 {0x80000000 | slot << 11 | (offset & 0xFC):#x}")
        return self.value("inl 0xcfc")

    def mem(self, address, data):
        self.cmd(f"write {address:#x} {len(data)} 0x{data.hex()}")

    def w32(self, address, value):
        self.cmd(f"writel {address:#x} {value & 0xFFFFFFFF:#x}")

    def w(self, size, address, value):
        self.cmd(f"write{'bwlq'[[1, 2, 4, 8].index(size)]} {address:#x} {value:#x}")

    def r(self, size, address):
        return self.value(f"read{'bwlq'[[1, 2, 4, 8].index(size)]} {address:#x}")


def firmware(q):
    """Place the BARs and enable decode + bus mastering, as a BIOS would."""
    q.cfg_write(E1000_SLOT, 0x10, E1000_BAR0)
    q.cfg_write(E1000_SLOT, 0x14, E1000_IO)
    q.cfg_write(E1000_SLOT, 0x04, 0x7, 2)
    q.cfg_write(VIRTIO_SLOT, 0x10, VIRTIO_BAR0)
    q.cfg_write(VIRTIO_SLOT, 0x14, 0)
    q.cfg_write(VIRTIO_SLOT, 0x04, 0x6, 2)


def e1000_reg(q, offset, value):
    q.w32(E1000_BAR0 + offset, value)


def e1000_up(q, rx=0x10000, tx=0x20000, length=256):
    e1000_reg(q, 0x0, 0x40)                 # CTRL.SLU
    e1000_reg(q, 0xD0, 0x1F6DF)             # IMS
    for base, reg in ((rx, 0x2800), (tx, 0x3800)):
        e1000_reg(q, reg, base & 0xFFFFFFFF)
        e1000_reg(q, reg + 4, base >> 32)
        e1000_reg(q, reg + 8, length)
        e1000_reg(q, reg + 0x10, 0)
        e1000_reg(q, reg + 0x18, 0)
    e1000_reg(q, 0x100, 0x2 | 0x8 | 0x8000)  # RCTL: EN, UPE, BAM
    e1000_reg(q, 0x400, 0x2 | 0x8)           # TCTL: EN, PSP


def tx_descriptor(q, ring, slot, low, high):
    q.mem(ring + 16 * slot, low.to_bytes(8, "little") + high.to_bytes(8, "little"))


# --- virtio-net driver side (virtio 1.2 §4.1.4.3 common configuration at BAR0+0) ---
def vcommon(q, offset, size, value):
    q.w(size, VIRTIO_BAR0 + offset, value)


def virtio_up(q, rings=0x40000, size=16, queues=2, desc=None, avail=None, used=None):
    vcommon(q, 0x14, 1, 0)
    vcommon(q, 0x14, 1, 3)
    vcommon(q, 0x08, 4, 1)
    vcommon(q, 0x0C, 4, 1)                    # VERSION_1
    vcommon(q, 0x14, 1, 11)                   # FEATURES_OK
    for i in range(queues):
        base = rings + i * 0x1000
        vcommon(q, 0x16, 2, i)
        vcommon(q, 0x18, 2, size)
        vcommon(q, 0x20, 8, base if desc is None else desc)
        vcommon(q, 0x28, 8, base + 0x400 if avail is None else avail)
        vcommon(q, 0x30, 8, base + 0x800 if used is None else used)
        vcommon(q, 0x1C, 2, 1)
    vcommon(q, 0x14, 1, 15)                   # DRIVER_OK


def virtio_descriptor(q, table, slot, address, length, flags, nxt):
    q.mem(table + 16 * slot, address.to_bytes(8, "little") + length.to_bytes(4, "little")
          + flags.to_bytes(2, "little") + nxt.to_bytes(2, "little"))


def virtio_avail(q, avail, index, heads):
    data = (0).to_bytes(2, "little") + index.to_bytes(2, "little") + b"".join(h.to_bytes(2, "little") for h in heads)
    q.mem(avail, data)


def virtio_kick(q, queue):
    q.w(2, VIRTIO_BAR0 + 0x3000 + 4 * queue, queue)


# --- scenarios ------------------------------------------------------------------------
def rings_outside_ram(q):
    for base in (0xFFFF_FFF0, RAM - 0x80, 0x1_0000_0000_0000, 0xFFFF_FFFF_FFFF_FF80, E1000_BAR0):
        e1000_up(q, rx=base, tx=base, length=4096)
        e1000_reg(q, 0x3818, 5)
        e1000_reg(q, 0x2818, 7)
        q.cmd("clock_step 1000000")
    for base in (RAM - 0x100, 0xFFFF_FFFF_FFFF_F000, 0x8000_0000, 0x3):
        virtio_up(q, desc=base, avail=base + 0x400, used=base + 0x800)
        virtio_kick(q, 1)
        q.notes.add("virtio status after ring outside RAM: %#x" % q.r(1, VIRTIO_BAR0 + 0x14))


def descriptor_loop(q):
    virtio_up(q)
    table, avail = 0x41000, 0x41400            # transmit queue
    virtio_descriptor(q, table, 0, 0x60000, 64, 1, 1)
    virtio_descriptor(q, table, 1, 0x60100, 64, 1, 0)   # 0 → 1 → 0 …
    virtio_avail(q, avail, 1, [0])
    virtio_kick(q, 1)
    virtio_up(q)                               # again, with an indirect table pointing at itself
    virtio_descriptor(q, table, 0, 0x62000, 32, 4, 0)
    q.mem(0x62000, (0x62000).to_bytes(8, "little") + (32).to_bytes(4, "little") + (4).to_bytes(2, "little") + b"\0\0")
    virtio_avail(q, avail, 1, [0])
    virtio_kick(q, 1)
    q.notes.add("virtio status after a self-referencing indirect table: %#x" % q.r(1, VIRTIO_BAR0 + 0x14))
    for bad_length in (0, 7, 16 * 5000, 0xFFFFFFF0):
        virtio_up(q)
        virtio_descriptor(q, table, 0, 0x62000, bad_length, 4, 0)
        virtio_avail(q, avail, 1, [0])
        virtio_kick(q, 1)
        q.notes.add("virtio status after indirect length %#x: %#x" % (bad_length, q.r(1, VIRTIO_BAR0 + 0x14)))
    # e1000: a ring whose tail never arrives (head chases tail around a full ring)
    e1000_up(q, length=128)
    for slot in range(8):
        tx_descriptor(q, 0x20000, slot, 0x70000, (60) | 1 << 24 | 1 << 27)
    e1000_reg(q, 0x3818, 7)
    e1000_reg(q, 0x3818, 0)


def avail_runaway(q):
    virtio_up(q)
    for index in (17, 0x8000, 0xFFFF, 1):
        virtio_avail(q, 0x41400, index, [0xFFFF] * 16)
        virtio_kick(q, 1)
        virtio_kick(q, 0)
        q.notes.add("virtio status after avail index %#x: %#x" % (index, q.r(1, VIRTIO_BAR0 + 0x14)))
        virtio_up(q)
    virtio_kick(q, 200)                         # a queue that does not exist
    e1000_up(q)
    for tail in (0xFFFFFFFF, 16, 17, 0x10000):
        e1000_reg(q, 0x3818, tail)
        e1000_reg(q, 0x2818, tail)
        e1000_reg(q, 0x3810, tail)
        e1000_reg(q, 0x2810, tail)
    for length in (0, 8, 100, 0xFFFFFF80):
        e1000_reg(q, 0x3808, length)
        e1000_reg(q, 0x2808, length)
        e1000_reg(q, 0x3818, 3)


def absurd_tso(q):
    e1000_up(q)
    ring, frame = 0x20000, 0x70000
    q.mem(frame, bytes(range(256)) * 8)
    slot = 0
    for hdrlen, mss, ipcss, tucss, paylen in ((255, 0, 250, 254, 2048), (0, 1, 0, 0, 64), (54, 1, 14, 34, 0xFFFFF),
                                               (200, 0xFFFF, 199, 14, 100), (54, 8, 300, 400, 1000)):
        # context descriptor: IPCSS/IPCSO/IPCSE, TUCSS/TUCSO/TUCSE, then PAYLEN, DTYP 0, DEXT|TSE|IP|TCP, HDRLEN, MSS
        low = ipcss & 0xFF | (ipcss + 10 & 0xFF) << 8 | 0xFFFF << 16 | (tucss & 0xFF) << 32 | (tucss + 16 & 0xFF) << 40
        high = paylen & 0xFFFFF | (1 << 29 | 1 << 26 | 1 << 25 | 1 << 24) | hdrlen << 40 | mss << 48
        tx_descriptor(q, ring, slot, low, high)
        # data descriptors: TSE, length from tiny to larger than the buffer
        for length in (0, 1, 0xFFFF):
            slot += 1
            tx_descriptor(q, ring, slot % 16, frame, length | 1 << 20 | 1 << 29 | 1 << 26 | 1 << 24 | 3 << 40)
        slot = (slot + 1) % 16
        e1000_reg(q, 0x3818, slot)
        q.cmd("clock_step 100000")
    # virtio-net: GSO headers with absurd hdr_len / gso_size / csum offsets
    virtio_up(q)
    for hdr in (bytes([1, 1]) + (0xFFFF).to_bytes(2, "little") + (0).to_bytes(2, "little") + (0xFFFF).to_bytes(2, "little") + (0xFFFF).to_bytes(2, "little") + b"\0\0",
                bytes([1, 4]) + (54).to_bytes(2, "little") + (1).to_bytes(2, "little") + (54).to_bytes(2, "little") + (16).to_bytes(2, "little") + b"\0\0"):
        q.mem(0x63000, hdr + bytes(range(256)) * 4)
        virtio_descriptor(q, 0x41000, 0, 0x63000, 12 + 1024, 0, 0)
        virtio_avail(q, 0x41400, 1, [0])
        virtio_kick(q, 1)
        virtio_up(q)


def bogus_msix(q):
    virtio_up(q)
    table = VIRTIO_BAR0 + 0x4000
    for vector, address in enumerate((0, 0xFFFF_FFFF_FFFF_FFFC, E1000_BAR0, 0xFEE0_0000, 0x1234_5678_9ABC)):
        q.w(4, table + 16 * vector, address & 0xFFFFFFFF)
        q.w(4, table + 16 * vector + 4, address >> 32)
        q.w(4, table + 16 * vector + 8, 0xFFFFFFFF)
        q.w(4, table + 16 * vector + 12, 0)
    cap = 0x40
    for _ in range(16):                      # find the MSI-X capability and enable it
        if q.cfg_read(VIRTIO_SLOT, cap) & 0xFF == 0x11:
            q.cfg_write(VIRTIO_SLOT, cap + 2, 0x8000, 2)
            break
        cap = (q.cfg_read(VIRTIO_SLOT, cap) >> 8) & 0xFC
        if cap == 0:
            break
    vcommon(q, 0x10, 2, 4)
    vcommon(q, 0x16, 2, 1)
    vcommon(q, 0x1A, 2, 0xFFFF - 1)          # a vector beyond the table
    virtio_kick(q, 1)
    for offset in range(0, 0x200, 4):        # the table and past it
        q.w(4, table + offset, random.getrandbits(32))


def bars_over_each_other(q):
    for e1000_base, virtio_base in ((VIRTIO_BAR0, VIRTIO_BAR0), (0, 0x1000), (RAM - 0x1000, 0xFFFF_F000),
                                    (0xFFFF_FFF0, 0xFEC0_0000)):
        q.cfg_write(E1000_SLOT, 0x10, e1000_base)
        q.cfg_write(VIRTIO_SLOT, 0x10, virtio_base)
        q.cfg_write(E1000_SLOT, 0x14, 0xCF8)              # I/O BAR over the config ports
        q.cfg_write(E1000_SLOT, 0x04, 0x7, 2)
        q.cfg_write(VIRTIO_SLOT, 0x04, 0x6, 2)
        q.r(4, e1000_base)
        q.w(4, e1000_base + 0xD0, 0xFFFFFFFF)
        q.r(4, virtio_base + 0x14)
        q.value("inl 0xcfc")
        q.cfg_write(E1000_SLOT, 0x10, 0xFFFFFFFF)          # sizing in the middle of it
        q.cfg_write(VIRTIO_SLOT, 0x14, 0xFFFFFFFF)
    firmware(q)


def every_size_every_offset(q):
    regions = [(E1000_BAR0, 0x20000, 4), (VIRTIO_BAR0, 0x8000, 4)]
    fine = [(E1000_BAR0, 0x0, 0x100), (E1000_BAR0, 0x2800, 0x40), (E1000_BAR0, 0x3800, 0x40), (E1000_BAR0, 0x5400, 0x20),
            (VIRTIO_BAR0, 0x0, 0x40), (VIRTIO_BAR0, 0x1000, 0x8), (VIRTIO_BAR0, 0x2000, 0x40),
            (VIRTIO_BAR0, 0x3000, 0x10), (VIRTIO_BAR0, 0x4000, 0x40), (VIRTIO_BAR0, 0x6000, 0x10)]
    rng = random.Random(8)
    for base, start, length in fine:                      # every byte offset, every size
        for offset in range(start, start + length):
            for size in (1, 2, 4, 8):
                q.r(size, base + offset)
                q.w(size, base + offset, rng.getrandbits(8 * size))
        firmware(q)
    for base, length, step in regions:                    # every dword offset of both BARs
        for offset in range(0, length, step):
            size = (1, 2, 4, 8)[offset // step % 4]
            q.r(size, base + offset)
            if base == E1000_BAR0 and offset in (0x0,):    # CTRL.RST/PHY_RST are covered above
                continue
            q.w(size, base + offset, rng.getrandbits(8 * size))
        firmware(q)
    for port in range(E1000_IO, E1000_IO + 8):            # the I/O window
        for op, width in (("b", 8), ("w", 16), ("l", 32)):
            q.cmd(f"in{op} {port:#x}")
            q.cmd(f"out{op} {port:#x} {rng.getrandbits(width):#x}")
    for slot in (E1000_SLOT, VIRTIO_SLOT, 0, 31):         # config space, all offsets and sizes
        for offset in range(256):
            for size in (1, 2, 4):
                q.cmd(f"outl 0xcf8 {0x80000000 | slot << 11 | (offset & 0xFC):#x}")
                port = 0xCFC + (offset & 3)
                q.cmd(f"in{'bwl'[[1, 2, 4].index(size)]} {port:#x}")
                q.cmd(f"out{'bwl'[[1, 2, 4].index(size)]} {port:#x} {rng.getrandbits(8 * size):#x}")
    firmware(q)


def random_script(q, count, seed):
    rng = random.Random(seed)
    windows = [(E1000_BAR0, 0x20000), (VIRTIO_BAR0, 0x8000), (0, 0x80000), (RAM - 0x1000, 0x2000)]
    for i in range(count):
        k = rng.random()
        if k < 0.35:
            base, length = rng.choice(windows)
            size = rng.choice((1, 2, 4, 8))
            address = base + rng.randrange(length)
            if rng.random() < 0.5:
                q.r(size, address)
            else:
                q.w(size, address, rng.getrandbits(8 * size))
        elif k < 0.55:
            q.mem(rng.randrange(0x10000, 0x80000), bytes(rng.getrandbits(8) for _ in range(rng.choice((2, 8, 16, 64)))))
        elif k < 0.65:
            virtio_kick(q, rng.randrange(4))
        elif k < 0.72:
            e1000_reg(q, rng.choice((0x3818, 0x2818, 0x3808, 0x2808, 0x100, 0x400, 0x0, 0xC0)), rng.getrandbits(32))
        elif k < 0.80:
            q.cfg_write(rng.choice((E1000_SLOT, VIRTIO_SLOT)), rng.choice((0x04, 0x10, 0x14, 0x18, 0x40, 0x42, 0x50, 0x52)),
                        rng.getrandbits(16), 2)
        elif k < 0.85:
            q.cmd(f"clock_step {rng.choice((1, 1000, 1000000, 10**9))}")
        elif k < 0.92:
            port = rng.choice((0xCF8, 0xCFC, 0xCFD, E1000_IO, E1000_IO + 4, 0xCFE))
            q.cmd(f"out{rng.choice('bwl')} {port:#x} {rng.getrandbits(16):#x}")
        elif k < 0.96:
            firmware(q)
            if rng.random() < 0.5:
                e1000_up(q)
            else:
                virtio_up(q)
        else:
            q.cmd(f"memset {rng.randrange(0x10000, 0x80000):#x} {rng.randrange(1, 4096)} {rng.getrandbits(8):#x}")


SCENARIOS = {
    "rings-outside-ram": rings_outside_ram,
    "descriptor-loop": descriptor_loop,
    "avail-runaway": avail_runaway,
    "absurd-tso": absurd_tso,
    "bogus-msix": bogus_msix,
    "bars-over-each-other": bars_over_each_other,
    "every-size-every-offset": every_size_every_offset,
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--swiftvmm", default=os.environ.get("SWIFTVMM", ".build/debug/swiftvmm"))
    p.add_argument("--random-commands", type=int, default=200000)
    p.add_argument("--seed", type=int, default=8)
    p.add_argument("scenarios", nargs="*", default=list(SCENARIOS) + ["random"])
    args = p.parse_args()
    random.seed(args.seed)
    failed = []
    for name in args.scenarios:
        q = QTest(args.swiftvmm)
        start = time.monotonic()
        try:
            firmware(q)
            if name == "random":
                random_script(q, args.random_commands, args.seed)
            else:
                SCENARIOS[name](q)
            ok = q.alive()
            verdict = "survived" if ok else "NOT ANSWERING"
            if ok:
                # Issue 12: no single guest action (register access, kick, backend frame,
                # deferred continuation) may cost more than the device's budget.
                cost = [int(x) for x in q.cmd("swiftvmm-action-cost").split()[1:]]
                worst, budget = cost[:3], cost[3:]
                verdict += f"; worst action {worst[0]} descriptors, {worst[1]} frames, {worst[2]} bytes"
                if any(w > b for w, b in zip(worst, budget)):
                    ok, verdict = False, verdict + f" OVER BUDGET {budget}"
        except Dead as e:
            ok, verdict = False, f"DIED: {e}"
        print(f"{name:26} {q.sent:8} commands {time.monotonic() - start:7.1f} s  {verdict}", flush=True)
        for note in sorted(q.notes):
            print(f"    {note}")
        if not ok:
            failed.append(name)
        q.close()
    if failed:
        print("process did not survive: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
