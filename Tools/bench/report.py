#!/usr/bin/env python3
"""Turns the `BENCH key value` / `SKIP` / `INFO` lines of Tools/bench/run into the
markdown tables of Docs/performance.md: every swiftvmm figure next to its same-run limit
(memcpy, the raw C program, QEMU) and the ratio, then the issue-7 targets, met or not.

Usage: report.py BENCH_FILE [--update Docs/performance.md]
"""
import statistics
import sys

START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
SIZES = [("64", "64 B"), ("1500", "1514 B (1500 MTU)"), ("9000", "9014 B (9000 MTU)"), ("tso64k", "64 KiB TSO send")]



def raw_variant(v, backend, key, base_key, base_name, sizes):
    """One raw TX program variant per size: its frames/s, against the `base_key` variant,
    and each device's frames/s against it; "" when no size has both figures."""
    parts = []
    for size, label in SIZES:
        figure, base = v(f"{backend}.{key}.tx.{size}.fps"), v(f"{backend}.{base_key}.tx.{size}.fps")
        if size not in sizes or figure is None or base is None:
            continue
        devs = ", ".join(f"{dev} {fmt(ratio(v(f'{backend}.{dev}.tx.{size}.fps'), figure), 2)}×"
                         for dev in ("virtio-net", "e1000") if v(f"{backend}.{dev}.tx.{size}.fps") is not None)
        parts.append(f"{label} {fmt(figure)} frames/s ({fmt(ratio(figure, base), 2)}× the {base_name} figure; {devs})")
    return "; ".join(parts)

def load(path):
    """A key measured several times (Tools/bench/run --repeats) keeps its median."""
    samples, skips, info = {}, [], {}
    for line in open(path):
        parts = line.rstrip("\n").split(" ", 2)
        if parts[0] == "BENCH" and len(parts) == 3:
            try:
                samples.setdefault(parts[1], []).append(float(parts[2]))
            except ValueError:
                pass
        elif parts[0] == "SKIP" and len(parts) >= 2:
            skips.append((parts[1], parts[2] if len(parts) > 2 else ""))
        elif parts[0] == "INFO" and len(parts) >= 2:
            info[parts[1]] = parts[2] if len(parts) > 2 else ""
    values = {k: statistics.median(v) for k, v in samples.items()}
    return values, skips, info


def fmt(v, digits=None):
    if v is None:
        return "–"
    if digits is None:
        digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
    return f"{v:,.{digits}f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def build(values, skips, info):
    v = values.get
    out = []
    out.append(f"Run {info.get('date', '?')} at commit {info.get('commit', '?')}, {info.get('seconds', '?')} s per backend run, "
               f"median of {info.get('repeats', '1')} alternating runs per backend figure, "
               f"whole run {info.get('elapsed', '?')}.\n")
    if info.get("note"):
        out.append(f"Note: {info['note']}\n")
    out.append("| Machine | |\n|---|---|")
    for k, label in [("cpu", "CPU"), ("cores", "cores"), ("memory", "memory"), ("kernel", "kernel"), ("kvm", "KVM modules"),
                     ("virt", "hardware virtualization"), ("swift", "Swift"), ("qemu", "QEMU"), ("libslirp", "libslirp")]:
        out.append(f"| {label} | {info.get(k, '?')} |")
    out.append("")

    # In-memory datapath.
    out.append("### Device datapath, in memory (device cost only; limit: one memcpy of the frame, same run)\n")
    out.append("package-benchmark (`Benchmarks/Benchmarks/SwiftVMMBenchmarks`): median of its samples of 1,000 frames; "
               "allocations per frame at p90 of the samples.\n")
    out.append("| path | frame | ns/frame | Gbit/s | memcpy ns | × memcpy | allocations/frame |\n|---|---|---|---|---|---|---|")
    rows = [("virtio-net TX", "mem.virtio.tx"), ("virtio-net TX, software TSO (backend without offloads)", "mem.virtio.tx"),
            ("virtio-net RX", "mem.virtio.rx"), ("virtio-net RX, MRG_RXBUF", "mem.virtio.rx-mrg"),
            ("e1000 TX", "mem.e1000.tx"), ("e1000 RX", "mem.e1000.rx")]
    for label, prefix in rows:
        for size, size_label in SIZES:
            if "software TSO" in label:
                if size != "tso64k":
                    continue
                key = f"{prefix}.tso64k-sw"
            else:
                key = f"{prefix}.{size}"
            ns = v(f"{key}.ns")
            if ns is None:
                continue
            mc = v(f"mem.memcpy.{size}.ns")
            out.append(f"| {label} | {size_label} | {fmt(ns)} | {fmt(v(f'{key}.gbps'))} | {fmt(mc)} | {fmt(ratio(ns, mc), 1)} | {fmt(v(f'{key}.allocs'), 2)} |")
    out.append("")

    # Micro-benchmarks.
    micro = [("micro.bar.read", "BAR read through the bus (e1000 STATUS)", "access"),
             ("micro.bar.write", "BAR write through the bus (e1000 LEDCTL)", "access"),
             ("micro.e1000.txd.legacy", "e1000 TX descriptor, legacy 1514 B", "descriptor"),
             ("micro.e1000.txd.tso", "e1000 TX descriptor, TSO (per descriptor of a 64 KiB send)", "descriptor"),
             ("micro.vq.tx", "virtqueue TX round (1 chain, 1 kick, 64 B)", "round"),
             ("micro.vq.rx", "virtqueue RX round, 1514 B, without MRG_RXBUF", "round"),
             ("micro.vq.rx-mrg", "virtqueue RX round, 1514 B, with MRG_RXBUF", "round"),
             ("micro.checksum.1500", "Internet checksum, 1500 B", "call"),
             ("micro.checksum.65536", "Internet checksum, 64 KiB", "call"),
             ("micro.pcap", "pcap capture, 1514 B frame, to /dev/null (the writer's own cost)", "frame"),
             ("micro.pcap-file", "pcap capture, 1514 B frame, to a tmpfs file", "frame")]
    if any(v(f"{k}.ns") is not None for k, _, _ in micro):
        out.append("### Micro-benchmarks (package-benchmark: median of samples of 1,000 operations; "
                   "the e1000 descriptor rows are the 1514 B and TSO e1000 TX rows above per descriptor)\n")
        out.append("| operation | ns | per | allocations |\n|---|---|---|---|")
        for k, label, unit in micro:
            if v(f"{k}.ns") is not None:
                out.append(f"| {label} | {fmt(v(f'{k}.ns'))} | {unit} | {fmt(v(f'{k}.allocs'), 2)} |")
        out.append("")

    # Real backends.
    for backend, title, limit in [("tap", "TAP (kernel in a network namespace on the other side)", "raw-tap.c: read/write on the same TAP"),
                                  ("vde", "vde_switch", "raw-vde.c: vde_send/vde_recv on the same switch"),
                                  ("user", "libslirp (user networking)", "raw-slirp.c: slirp_input on one thread")]:
        lines = []
        for direction in ("tx", "rx"):
            for size, size_label in SIZES:
                for dev in ("virtio-net", "e1000"):
                    fps = v(f"{backend}.{dev}.{direction}.{size}.fps")
                    if fps is None:
                        continue
                    raw_key = f"{backend}.raw-csum" if (backend == "tap" and direction == "rx" and dev == "virtio-net") else f"{backend}.raw"
                    raw = v(f"{raw_key}.{direction}.{size}.fps")
                    lines.append(f"| {dev} | {direction.upper()} | {size_label} | {fmt(fps)} | {fmt(v(f'{backend}.{dev}.{direction}.{size}.gbps'), 2)} | "
                                 f"{fmt(raw)} | {fmt(ratio(fps, raw), 2)} |")
        if lines:
            out.append(f"### Datapath over {title} (limit: {limit})\n")
            out.append("| device | dir | frame | frames/s | Gbit/s | raw frames/s | × raw |\n|---|---|---|---|---|---|---|")
            out.extend(lines)
            out.append("")
            # The raw program again, writing from 256 buffers in turn as a guest's ring does
            # (the bench drivers' 256 slots): how much of the gap is the frames' cache misses.
            line = raw_variant(v, backend, "raw256", "raw", "one-buffer", [size for size, _ in SIZES])
            if line:
                out.append("The raw program writing from 256 buffers in turn, as a guest's ring sends: " + line + "\n")
            # ...and with the header as an iovec of its own: how the TAP backend writes frames
            # over 2 KiB (the device's header, checked or built in the VMM's memory, then the
            # frame from guest memory). Smaller frames it copies whole into one buffer, so
            # only the larger sizes are compared with this figure.
            line = raw_variant(v, backend, "raw256split", "raw256", "one-iovec", ["9000", "tso64k"])
            if line:
                out.append("The same from 256 buffers with the vnet header as an iovec of its own (`writev`), as the TAP backend "
                           "writes frames over 2 KiB: the device's header from the VMM's memory, then the frame from the guest's: "
                           + line + "\n")
            # What a vCPU pays per doorbell: the e1000 sends within its TDT write.
            tdt = [(size_label, v(f"{backend}.e1000.tx.{size}.tdt_ns"), v(f"{backend}.e1000.tx.{size}.tdt_batch"))
                   for size, size_label in SIZES]
            tdt = [(label, ns, n) for label, ns, n in tdt if ns is not None and n is not None]
            if tdt:
                out.append("Time the sending (vCPU) thread spends in one e1000 TDT write: "
                           + ", ".join(f"{label} {fmt(ns / 1000)} µs for {int(n)} packets" for label, ns, n in tdt) + "\n")

    # Exit path.
    if v("exit.raw.pio.eps") is not None or v("exit.swiftvmm.pio.eps") is not None:
        out.append("### Exit path (mini guest, 50,000 writes each, median of 5 runs; limit: raw-kvm.c, the smallest KVM_RUN loop)\n")
        out.append("| exit | swiftvmm exits/s | raw KVM loop exits/s | × raw |\n|---|---|---|---|")
        for kind, label in [("pio", "port I/O (UART scratch register)"), ("mmio", "MMIO (swiftvmm: e1000 LEDCTL through the bus; raw: no device)")]:
            s, r = v(f"exit.swiftvmm.{kind}.eps"), v(f"exit.raw.{kind}.eps")
            out.append(f"| {label} | {fmt(s)} | {fmt(r)} | {fmt(ratio(s, r), 2)} |")
        out.append("")

    # Sandbox cost.
    if any(k.startswith("sandbox.") for k in values):
        out.append("### What the seccomp sandbox costs (--sandbox on against off, median of 5 alternating runs; TAP: swiftvmm-bench with the I/O-loop and vCPU lists)\n")
        out.append("| path | sandbox on | sandbox off | on ÷ off |\n|---|---|---|---|")
        for kind, label in [("pio.eps", "exit path, port I/O (exits/s)"), ("mmio.eps", "exit path, MMIO to e1000 LEDCTL (exits/s)"),
                            ("tap.virtio-net.tx.fps", "TAP, virtio-net TX 1514 B (frames/s)"),
                            ("tap.e1000.tx.fps", "TAP, e1000 TX 1514 B (frames/s)"),
                            ("tap.virtio-net.rx.fps", "TAP, virtio-net RX 1514 B (frames/s)")]:
            on, off = v(f"sandbox.on.{kind}"), v(f"sandbox.off.{kind}")
            if on is not None or off is not None:
                out.append(f"| {label} | {fmt(on)} | {fmt(off)} | {fmt(ratio(on, off), 2)} |")
        out.append("")

    # vfio-user.
    if any(k.startswith("vfiouser.") for k in values):
        out.append("### BAR accesses through the vfio-user server (mini guest under QEMU TCG, 20,000 each, median of 5 runs; limit: QEMU's own device in the same QEMU)\n")
        out.append("| access | swiftvmm over vfio-user, ns | QEMU's own device, ns | × QEMU |\n|---|---|---|---|")
        for kind, label in [("mmio-write", "e1000 MMIO write (LEDCTL)"), ("mmio-read", "e1000 MMIO read (LEDCTL)"),
                            ("virtio-notify", "virtio-net queue notify (MMIO write)"),
                            ("pio", "port write to QEMU's UART (control: same in both)")]:
            s, q = v(f"vfiouser.swiftvmm.{kind}.ns"), v(f"vfiouser.qemu.{kind}.ns")
            out.append(f"| {label} | {fmt(s)} | {fmt(q)} | {fmt(ratio(s, q), 1)} |")
        out.append("")

    # Boot and memory.
    if any(k.startswith("boot.") for k in values):
        out.append("### Boot to first serial output, and peak RSS (512 MiB guest, virtio-net + e1000 on user networking; mini guest: median of 3 alternating runs)\n")
        out.append("| guest | swiftvmm ms | QEMU ms | × QEMU | swiftvmm peak RSS MiB | QEMU peak RSS MiB | × QEMU | swiftvmm PSS / anon MiB | QEMU PSS / anon MiB |\n|---|---|---|---|---|---|---|---|---|")
        for guest, label in [("mini", "mini guest (PVH ELF), to its first line"), ("vmlinux", "Debian vmlinux (PVH), to `Linux version`")]:
            s, q = v(f"boot.swiftvmm.{guest}.marker-ms"), v(f"boot.qemu.{guest}.marker-ms")
            s = s if s is None or s >= 0 else None
            q = q if q is None or q >= 0 else None
            sr, qr = v(f"boot.swiftvmm.{guest}.maxrss-kb"), v(f"boot.qemu.{guest}.maxrss-kb")
            sr = sr / 1024 if sr else None
            qr = qr / 1024 if qr else None
            def split(vmm):
                pss, anon = v(f"boot.{vmm}.{guest}.marker-pss-kb"), v(f"boot.{vmm}.{guest}.marker-anon-kb")
                return f"{fmt(pss / 1024, 1)} / {fmt(anon / 1024, 1)}" if pss and anon and pss > 0 and anon > 0 else "–"
            out.append(f"| {label} | {fmt(s)} | {fmt(q)} | {fmt(ratio(s, q), 2)} | {fmt(sr, 1)} | {fmt(qr, 1)} | {fmt(ratio(sr, qr), 2)} | {split('swiftvmm')} | {split('qemu')} |")
        out.append("")

    # Targets.
    out.append("### Targets (issue 7)\n")
    out.append("| target | measured | met? |\n|---|---|---|")

    def target(name, value, ok, shown=None):
        if value is None:
            out.append(f"| {name} | not measured | – |")
        else:
            out.append(f"| {name} | {shown or fmt(value, 2)} | {'met' if ok(value) else '**missed**'} |")

    for dev in ("virtio-net", "e1000"):
        target(f"TAP 1500 B TX, {dev} ≥ 0.9× raw", ratio(v(f"tap.{dev}.tx.1500.fps"), v("tap.raw.tx.1500.fps")), lambda x: x >= 0.9,)
        raw_rx = v("tap.raw-csum.rx.1500.fps") if dev == "virtio-net" else v("tap.raw.rx.1500.fps")
        target(f"TAP 1500 B RX, {dev} ≥ 0.9× raw", ratio(v(f"tap.{dev}.rx.1500.fps"), raw_rx), lambda x: x >= 0.9)
    target("TAP TSO (virtio-net, vnet header through) ≥ 5× the 1500 B Gbit/s",
           ratio(v("tap.virtio-net.tx.tso64k.gbps"), v("tap.virtio-net.tx.1500.gbps")), lambda x: x >= 5)
    for dev, key, limit in [("virtio-net TX", "mem.virtio.tx.1500", 3), ("virtio-net RX (MRG_RXBUF)", "mem.virtio.rx-mrg.1500", 3),
                            ("e1000 TX", "mem.e1000.tx.1500", 5), ("e1000 RX", "mem.e1000.rx.1500", 5)]:
        target(f"in-memory {dev} per 1514 B frame ≤ {limit}× memcpy", ratio(v(f"{key}.ns"), v("mem.memcpy.1500.ns")), lambda x, l=limit: x <= l)
    allocs = [v(f"{k}.allocs") for k in ("mem.virtio.tx.1500", "mem.virtio.rx.1500", "mem.virtio.rx-mrg.1500", "mem.e1000.tx.1500", "mem.e1000.rx.1500")]
    allocs = [a for a in allocs if a is not None]
    target("no allocation per frame (max over the 1514 B paths)", max(allocs) if allocs else None, lambda x: x < 0.01)
    if info.get("thresholds"):
        ok = info["thresholds"].startswith("met")
        out.append(f"| allocation thresholds (p90 mallocs per benchmark ≤ Benchmarks/Thresholds, `benchmark thresholds check`) | "
                   f"{info['thresholds']} | {'met' if ok else '**missed**'} |")
    for kind in ("pio", "mmio"):
        target(f"exit path ({kind}) ≥ 0.8× raw KVM loop", ratio(v(f"exit.swiftvmm.{kind}.eps"), v(f"exit.raw.{kind}.eps")), lambda x: x >= 0.8)
    for guest in ("mini", "vmlinux"):
        s, q = v(f"boot.swiftvmm.{guest}.marker-ms"), v(f"boot.qemu.{guest}.marker-ms")
        target(f"boot ({guest}) ≤ 0.5× QEMU", ratio(s, q) if s and q and s > 0 and q > 0 else None, lambda x: x <= 0.5)
    target("memory (peak RSS, mini guest) ≤ 0.25× QEMU", ratio(v("boot.swiftvmm.mini.maxrss-kb"), v("boot.qemu.mini.maxrss-kb")), lambda x: x <= 0.25)
    out.append("")

    if skips:
        out.append("### Skipped\n")
        for name, why in skips:
            out.append(f"- **{name}**: {why}")
        out.append("")
    return "\n".join(out)


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    text = build(*load(sys.argv[1]))
    if len(sys.argv) == 4 and sys.argv[2] == "--update":
        doc = open(sys.argv[3]).read()
        if START not in doc or END not in doc:
            print(f"{sys.argv[3]}: markers {START} / {END} not found", file=sys.stderr)
            return 1
        head, rest = doc.split(START, 1)
        _, tail = rest.split(END, 1)
        open(sys.argv[3], "w").write(f"{head}{START}\n{text}\n{END}{tail}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
