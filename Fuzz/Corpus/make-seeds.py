#!/usr/bin/env python3
"""Writes the structured seeds of the fuzz targets that need well-formed starting points
(a valid kernel image, a working virtqueue, real TCP/UDP frames). Random seeds are kept
as files; rerun this after changing a target's input layout."""
import os, struct, random

HERE = os.path.dirname(os.path.abspath(__file__))
random.seed(8)

def put(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)

def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF

def tcp4(payload=b"x" * 3000, vlan=False):
    eth = b"\x52\x54\x00\x12\x34\x56" + b"\x52\x54\x00\x12\x34\x57" + (b"\x81\x00\x00\x05" if vlan else b"") + b"\x08\x00"
    tcp = struct.pack("!HHIIBBHHH", 1234, 80, 1, 0, 5 << 4, 0x18, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 1, 0x4000, 64, 6, 0, bytes([10, 0, 2, 15]), bytes([10, 0, 2, 2]))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return eth + ip + tcp + payload

def udp6(payload=b"y" * 2000):
    eth = b"\x33\x33\x00\x00\x00\x01" + b"\x52\x54\x00\x12\x34\x56" + b"\x86\xdd"
    udp = struct.pack("!HHHH", 5353, 5353, 8 + len(payload), 0)
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(udp) + len(payload), 17, 64, b"\xfe\x80" + b"\0" * 13 + b"\1", b"\xff\x02" + b"\0" * 13 + b"\1")
    return eth + ip + udp + payload

# FuzzFrames: op, four hostile ints (u16 + selector each), tci, cut count and cuts, frame.
def frames_seed(op, ints, tci, cuts, frame):
    b = bytes([op])
    for v, sel in ints: b += struct.pack("<HB", v & 0xFFFF, sel)
    b += struct.pack("<H", tci) + bytes([len(cuts)]) + b"".join(struct.pack("<H", c) for c in cuts)
    return b + frame
for op in range(6):
    put("FuzzFrames", f"seed-tcp4-op{op}", frames_seed(op, [(1448, 0), (14, 0), (34, 0), (54, 0)], 0x0005, [14, 54], tcp4()))
    put("FuzzFrames", f"seed-udp6-op{op}", frames_seed(op, [(1280, 0), (14, 0), (54, 0), (62, 0)], 0x0006, [7], udp6()))
put("FuzzFrames", "seed-vlan-tcp", frames_seed(4, [(2000, 5), (60, 0), (0, 0), (0, 0)], 0x2005, [], tcp4(b"z" * 100, vlan=True)))
put("FuzzFrames", "seed-absurd-context", frames_seed(1, [(14, 0), (0xFFF0, 0), (0xFFFF, 2), (0, 0)], 0x0000, [1, 2, 3], tcp4()))

# FuzzVirtqueue: max size exponent, size choice, three addresses, indirect, event idx, RAM image.
def vq_seed(descs, avail_ring, indirect=b"", size_exp=3):
    hdr = bytes([size_exp, 1]) + b"\x00" + struct.pack("<H", 0x0000) + b"\x00" + struct.pack("<H", 0x0100) + b"\x00" + struct.pack("<H", 0x0200) + b"\x01\x00"
    ram = bytearray(0x2000)
    for i, (addr, length, flags, nxt) in enumerate(descs):
        ram[16 * i:16 * i + 16] = struct.pack("<QIHH", addr, length, flags, nxt)
    ram[0x100:0x104] = struct.pack("<HH", 0, len(avail_ring))
    for i, h in enumerate(avail_ring): ram[0x104 + 2 * i:0x106 + 2 * i] = struct.pack("<H", h)
    ram[0x1800:0x1800 + len(indirect)] = indirect
    return hdr + bytes(ram)
put("FuzzVirtqueue", "seed-chain", vq_seed([(0x1000, 12, 1, 1), (0x1100, 1514, 1, 2), (0x1800, 64, 2, 0)], [0]))
put("FuzzVirtqueue", "seed-loop", vq_seed([(0x1000, 12, 1, 1), (0x1100, 64, 1, 0)], [0, 1]))
put("FuzzVirtqueue", "seed-indirect", vq_seed([(0x1800, 48, 4, 0)], [0], indirect=struct.pack("<QIHH", 0x1000, 12, 1, 1) + struct.pack("<QIHH", 0x1100, 64, 1, 2) + struct.pack("<QIHH", 0x1200, 64, 2, 0)))
put("FuzzVirtqueue", "seed-avail-runaway", vq_seed([(0x1000, 12, 0, 0)], [0] * 8)[:0x100 + 14] + struct.pack("<HH", 0, 0x7777))

# FuzzKernelLoader: RAM choice, initrd flag (+ length, bytes), cmdline (length, bytes), image.
def loader_seed(image, initrd=b"INITRD", cmdline=b"console=ttyS0 earlyprintk=serial"):
    b = bytes([2, 0, len(initrd)]) + initrd if initrd is not None else bytes([2, 1])
    return b + bytes([len(cmdline)]) + cmdline + image
bz = bytearray(0x1200)
struct.pack_into("<B", bz, 0x1F1, 1)            # setup_sects
struct.pack_into("<H", bz, 0x1FE, 0xAA55)
struct.pack_into("<BB", bz, 0x200, 0xEB, 0x66)   # jmp: header up to 0x268
struct.pack_into("<I", bz, 0x202, 0x53726448)   # HdrS
struct.pack_into("<H", bz, 0x206, 0x020F)
struct.pack_into("<B", bz, 0x211, 0x01)         # LOADED_HIGH
struct.pack_into("<I", bz, 0x22C, 0x37FFFFFF)   # initrd_addr_max
struct.pack_into("<I", bz, 0x230, 0x200000)     # kernel_alignment
struct.pack_into("<B", bz, 0x234, 1)
struct.pack_into("<H", bz, 0x236, 0x1)          # XLF_KERNEL_64
struct.pack_into("<I", bz, 0x238, 2047)
struct.pack_into("<Q", bz, 0x258, 0x1000000)
struct.pack_into("<I", bz, 0x260, 0x10000)
put("FuzzKernelLoader", "seed-bzimage", loader_seed(bytes(bz)))
# 64-bit ELF: one PT_LOAD at 1 MiB and one PT_NOTE with the Xen PVH entry (type 18).
note = struct.pack("<III", 4, 4, 18) + b"Xen\0" + struct.pack("<I", 0x100000)
code = b"\xf4" * 16
ehdr = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9 + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, 0x100000, 64, 0, 0, 64, 56, 2, 0, 0, 0)
ph_load = struct.pack("<IIQQQQQQ", 1, 5, 64 + 112, 0x100000, 0x100000, len(code), len(code) + 0x1000, 0x1000)
ph_note = struct.pack("<IIQQQQQQ", 4, 4, 64 + 112 + len(code), 0, 0, len(note), len(note), 4)
put("FuzzKernelLoader", "seed-pvh-elf", loader_seed(ehdr + ph_load + ph_note + code + note))
put("FuzzKernelLoader", "seed-pvh-elf-no-initrd", loader_seed(ehdr + ph_load + ph_note + code + note, initrd=None))

# NIC targets: random scripts (coverage guidance finds the structure from there).
for t in ("FuzzE1000", "FuzzVirtioNet"):
    for i in range(16):
        put(t, f"seed-random-{i:02d}", bytes(random.randrange(256) for _ in range(random.choice([64, 256, 1024]))))
