#!/usr/bin/env python3
"""The Linux-driver tier: Linux's own e1000, virtio_net, virtio_blk, virtio_rng and
virtio_console drivers against swiftvmm's devices, served over vfio-user to QEMU (software
emulation), and the same guest script against QEMU's own e1000, virtio-net-pci,
virtio-blk-pci, virtio-rng-pci and virtconsole in the same run for comparison.

Each run boots Debian's kernel with the Tools/build-guest initramfs and two NICs of one
model: one on user-mode networking, one on a TAP in a network namespace this script
creates (10.9.0.1 with an iperf3 server). Everything (swiftvmm serve, QEMU, iperf3) runs
inside that namespace, so its loopback is "the host's loopback" the guest reaches through
user-mode networking, and nothing is left on the machine afterwards. The virtio-blk run serves a 64 MiB ext4
image made here (mkfs.ext4); the guest mounts it, writes, syncs and reads back, trims,
and sees the disk grow over QMP block_resize; afterwards e2fsck must find it clean and
debugfs must read back what the guest wrote. The same guest reads /dev/hwrng through a
virtio-rng device served by the same `swiftvmm serve` (QEMU's virtio-rng-pci for QEMU),
and talks both ways over hvc0 through a virtio-console whose port is a Unix socket this
script connects to (QEMU's virtconsole on a socket chardev).

  Tools/linux-tier/run.py [--models e1000,virtio-net] [--no-reference] [--json FILE]

Needs root (namespaces, TAP), iperf3, guest-out/ (Tools/build-guest), a swiftvmm binary
(--swiftvmm, default .build/debug/swiftvmm) and a QEMU with the vfio-user client:
$SWIFTVMM_QEMU, else ../shared/qemu/bin/qemu-system-x86_64. Exit status: 0 when every
swiftvmm check passed, 1 when one failed, 77 when something needed is missing (the
message says what).
"""
import argparse, json, os, re, select, shutil, signal, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USER_MAC, TAP_MAC = "52:54:00:00:01:01", "52:54:00:00:01:02"
QEMU_MODEL = {"e1000": "e1000", "virtio-net": "virtio-net-pci", "virtio-blk": "virtio-blk-pci"}
DISK_MIB, RESIZED_MIB = 64, 96
HOSTFWD_PORT = 18080
GUEST_TIMEOUT = 240  # seconds for one guest run under TCG (it needs ~40)


def find_qemu():
    q = os.environ.get("SWIFTVMM_QEMU") or os.path.join(ROOT, "..", "shared", "qemu", "bin", "qemu-system-x86_64")
    return os.path.abspath(q) if os.access(q, os.X_OK) else None


def missing(args):
    if os.geteuid() != 0:
        return "root (network namespaces and TAP devices)"
    if not find_qemu():
        return "a QEMU with the vfio-user client: set SWIFTVMM_QEMU or provide ../shared/qemu/bin/qemu-system-x86_64"
    if not os.access(args.swiftvmm, os.X_OK):
        return f"the swiftvmm binary at {args.swiftvmm} (swift build)"
    for tool in ("iperf3", "ip", "mkfs.ext4", "e2fsck", "debugfs"):
        if subprocess.call(["sh", "-c", f"command -v {tool}"], stdout=subprocess.DEVNULL) != 0:
            return f"{tool} (Tools/install-deps)"
    for f in ("guest-out/vmlinux", "guest-out/initramfs.cpio.gz"):
        if not os.path.exists(os.path.join(ROOT, f)):
            return f"{f} (Tools/build-guest)"
    return None


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class Namespace:
    """A network namespace with lo up, a TAP lt0 at 10.9.0.1/24 (MTU 9000) and iperf3 -s."""

    def __init__(self, name):
        self.name = name
        sh("ip", "netns", "add", name)
        self.exec_prefix = ["ip", "netns", "exec", name]
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "tuntap", "add", "dev", "lt0", "mode", "tap")
        sh("ip", "-n", name, "link", "set", "lt0", "mtu", "9000")
        sh("ip", "-n", name, "addr", "add", "10.9.0.1/24", "dev", "lt0")
        sh("ip", "-n", name, "link", "set", "lt0", "up")
        # A second TAP for the backend swap (swiftvmm's x-swiftvmm-swap-backend).
        sh("ip", "-n", name, "tuntap", "add", "dev", "lt1", "mode", "tap")
        sh("ip", "-n", name, "addr", "add", "10.9.1.1/24", "dev", "lt1")
        sh("ip", "-n", name, "link", "set", "lt1", "up")
        self.iperf = subprocess.Popen(self.exec_prefix + ["iperf3", "-s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def popen(self, cmd, **kw):
        return subprocess.Popen(self.exec_prefix + cmd, **kw)

    def connect_and_send(self, port, payload):
        code = ("import socket,sys\n"
                f"s=socket.create_connection(('127.0.0.1',{port}),5)\n"
                f"s.sendall({payload!r})\ns.close()\n")
        return subprocess.call(self.exec_prefix + [sys.executable, "-c", code]) == 0

    def close(self):
        self.iperf.kill()
        self.iperf.wait()
        sh("ip", "netns", "del", self.name, check=False)


def qemu_command(qemu, model, nics, impl):
    run = f"swiftvmm-blk-checks,{impl}" if model == "virtio-blk" else f"swiftvmm-checks,{model},{impl}"
    return [qemu, "-L", os.path.join(os.path.dirname(os.path.dirname(qemu)), "share", "qemu"),
            "-machine", "pc,accel=tcg,memory-backend=mem", "-m", "512",
            "-object", "memory-backend-memfd,id=mem,size=512M,share=on",
            "-nodefaults", "-nographic", "-serial", "stdio", "-no-reboot",
            "-kernel", os.path.join(ROOT, "guest-out/vmlinux"),
            "-initrd", os.path.join(ROOT, "guest-out/initramfs.cpio.gz"),
            "-append", f"console=ttyS0 reboot=k panic=-1 quiet swiftvmm.run={run}"] + nics


def set_link(qmp_path, name, up):
    """QMP set_link through the qemu.qmp library (the same call for swiftvmm and QEMU)."""
    import asyncio
    from qemu.qmp import QMPClient

    async def go():
        q = QMPClient("linux-tier")
        await q.connect(qmp_path)
        await q.execute("set_link", {"name": name, "up": up})
        await q.disconnect()
    try:
        asyncio.run(go())
    except Exception as e:  # the guest's checks then fail and say so
        print(f"linux-tier: set_link {name} {up}: {e}", file=sys.stderr)


def qmp_call(qmp_path, command, arguments):
    import asyncio
    from qemu.qmp import QMPClient

    async def go():
        q = QMPClient("linux-tier")
        await q.connect(qmp_path)
        await q.execute(command, arguments)
        await q.disconnect()
    try:
        asyncio.run(go())
        return True
    except Exception as e:
        print(f"linux-tier: {command}: {e}", file=sys.stderr)
        return False


class RxFilterProbe:
    """QMP query-rx-filter and NIC_RX_FILTER_CHANGED on the TAP NIC while the guest turns
    promiscuous mode on: read the filter (which re-arms the event), wait for the event,
    read it again."""

    def __init__(self, qmp_path):
        import threading
        self.checks = {}
        self.thread = threading.Thread(target=self.run, args=(qmp_path,), daemon=True)
        self.thread.start()

    def run(self, qmp_path):
        import asyncio
        from qemu.qmp import QMPClient

        async def go():
            q = QMPClient("linux-tier-rxfilter")
            await q.connect(qmp_path)
            before = (await q.execute("query-rx-filter", {"name": "tapnic"}))[0]
            self.checks["rx-filter-query"] = {"pass": before["main-mac"] == TAP_MAC and before["promiscuous"] is False,
                                              "detail": json.dumps(before)[:300]}
            event = None
            try:
                async with asyncio.timeout(10):
                    async for e in q.events:
                        if e["event"] == "NIC_RX_FILTER_CHANGED":
                            event = e
                            break
            except TimeoutError:
                pass
            self.checks["rx-filter-event"] = {"pass": event is not None and event["data"]["name"] == "tapnic",
                                              "detail": json.dumps(event["data"]) if event else "no NIC_RX_FILTER_CHANGED in 10 s"}
            await asyncio.sleep(1)
            after = (await q.execute("query-rx-filter", {"name": "tapnic"}))[0]
            self.checks["rx-filter-promiscuous"] = {"pass": after["unicast"] == "all" or after["promiscuous"] is True,
                                                    "detail": json.dumps(after)[:300]}
            await q.disconnect()
        try:
            asyncio.run(go())
        except Exception as e:
            self.checks["rx-filter-query"] = {"pass": False, "detail": f"{type(e).__name__}: {e}"}

    def result(self):
        self.thread.join(timeout=20)
        return self.checks


def open_tap(name):
    """A TAP opened the way QEMU and libvirt open one (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR)."""
    import fcntl, struct
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", name.encode(), 0x0002 | 0x1000 | 0x4000))  # TUNSETIFF
    return fd


def qmp_swap_to_tap(ns, qmp_path, nic, tap):
    """The sandboxed VMM opens nothing itself: the TAP is opened inside the namespace (this
    script again, as a helper) and passed over QMP with getfd."""
    r = subprocess.run(ns.exec_prefix + [sys.executable, os.path.abspath(__file__), "--swap-helper", qmp_path, nic, tap],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        print(f"linux-tier: swap to {tap}: {r.stdout.strip()}", file=sys.stderr)
    return r.returncode == 0


def swap_helper(qmp_path, nic, tap):
    import asyncio
    from qemu.qmp import QMPClient

    async def go():
        q = QMPClient("linux-tier")
        await q.connect(qmp_path)
        fd = open_tap(tap)
        q.send_fd_scm(fd)
        os.close(fd)
        await q.execute("getfd", {"fdname": tap})
        await q.execute("x-swiftvmm-swap-backend", {"name": nic, "backend": f"net=tap-fd:{tap}"})
        await q.disconnect()
    asyncio.run(go())
    return 0


def icmp_in_capture(path):
    """ICMP echo requests and replies tshark finds in a pcap file."""
    out = subprocess.run(["tshark", "-r", path, "-Y", "icmp", "-T", "fields", "-e", "icmp.type"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout.split()
    return out.count("8"), out.count("0")


class HvcPeer:
    """The host end of the guest's hvc0: a client of the console's Unix socket that says
    HOST-HELLO when the guest is ready and then reads the guest's marker."""

    def __init__(self, path):
        self.path, self.sock = path, None

    def hello(self):
        import socket
        deadline = time.monotonic() + 5
        while self.sock is None and time.monotonic() < deadline:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.path)
                self.sock = s
            except OSError:
                time.sleep(0.05)
        if self.sock:
            self.sock.sendall(b"HOST-HELLO\n")

    def check(self, marker):
        got = b""
        deadline = time.monotonic() + 10
        while self.sock and marker not in got and time.monotonic() < deadline:
            r, _, _ = select.select([self.sock], [], [], 0.5)
            if r:
                chunk = self.sock.recv(4096)
                if not chunk:
                    break
                got += chunk
        if self.sock:
            self.sock.close()
        return {"pass": marker in got, "detail": f"host read {got[-80:]!r} from the console socket"}


def run_guest(ns, cmd, log, qmp_path, capture=None, rx_filter=False, hvc=None, impl="swiftvmm"):
    """Boots the guest, answers its hostfwd and set_link prompts, returns (checks, metrics, seconds)."""
    start = time.monotonic()
    peer = HvcPeer(hvc) if hvc else None
    p = ns.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    checks, metrics, buf = {}, {}, b""
    done = False
    probe = None
    while not done and time.monotonic() - start < GUEST_TIMEOUT:
        r, _, _ = select.select([p.stdout], [], [], 1.0)
        if not r:
            if p.poll() is not None:
                break
            continue
        chunk = os.read(p.stdout.fileno(), 65536)
        if not chunk:
            break
        log.write(chunk)
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            text = line.decode(errors="replace").strip("\r")
            m = re.match(r"CHECK (\S+) (PASS|FAIL) ?(.*)", text)
            if m:
                checks[m.group(1)] = {"pass": m.group(2) == "PASS", "detail": m.group(3)}
            m = re.match(r"METRIC (\S+) (.*)", text)
            if m:
                metrics[m.group(1)] = m.group(2)
            if text.startswith("HOSTFWD-READY"):
                ns.connect_and_send(HOSTFWD_PORT, b"hello-hostfwd\n")
            if peer and text.startswith("HVC-READY"):
                peer.hello()
            if peer and text.startswith("HVC-SENT"):
                checks["console-out"] = peer.check(f"TIER-HVC0-{impl}".encode())
            if text.startswith("BLOCK-RESIZE"):
                qmp_call(qmp_path, "block_resize", {"device": "d0", "size": RESIZED_MIB << 20})
            if rx_filter and text.startswith("RXFILTER-QUERY"):
                probe = RxFilterProbe(qmp_path)
            if text.startswith("SETLINK-DOWN"):
                set_link(qmp_path, "tapnic", False)
            if text.startswith("SETLINK-UP"):
                set_link(qmp_path, "tapnic", True)
            if capture and text.startswith("CAPTURE-START"):
                qmp_call(qmp_path, "x-swiftvmm-capture-start", {"name": "tapnic", "path": capture})
            if capture and text.startswith("SWAP-BACKEND"):
                if not qmp_swap_to_tap(ns, qmp_path, "usernic", "lt1"):
                    checks["swap-backend-command"] = {"pass": False, "detail": "x-swiftvmm-swap-backend failed"}
            if capture and text.startswith("CAPTURE-STOP"):
                stopped = qmp_call(qmp_path, "x-swiftvmm-capture-stop", {"name": "tapnic"})
                requests, replies = icmp_in_capture(capture) if stopped else (0, 0)
                checks["qmp-capture"] = {"pass": requests >= 3 and replies >= 3,
                                         "detail": f"{requests} echo requests, {replies} replies in {capture}"}
            if text.startswith("CHECKS-DONE"):
                done = True
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    if probe:
        checks.update(probe.result())
    if not done:
        checks["guest-finished"] = {"pass": False, "detail": f"no CHECKS-DONE within {GUEST_TIMEOUT} s"}
    return checks, metrics, round(time.monotonic() - start, 1)


def make_disk(sockdir, name):
    image = os.path.join(sockdir, name)
    with open(image, "wb") as f:
        f.truncate(DISK_MIB << 20)
    sh("mkfs.ext4", "-q", "-F", image)
    return image


def disk_checks(image, metrics):
    """What the host sees in the image after the guest: a clean file system holding the
    file the guest wrote, byte for byte."""
    fsck = sh("e2fsck", "-f", "-n", image, check=False)
    data = subprocess.run(["debugfs", "-R", "cat /pattern", image], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
    import hashlib
    host_sum = hashlib.md5(data).hexdigest()
    return {"fsck-clean": {"pass": fsck.returncode == 0, "detail": fsck.stdout.strip().splitlines()[-1] if fsck.stdout.strip() else ""},
            "host-reads-guest-data": {"pass": host_sum == metrics.get("pattern-md5"),
                                      "detail": f"{len(data)} bytes, md5 {host_sum}"}}


def wait_for_sockets(paths):
    """Waits up to 5 s for `swiftvmm serve` to create its sockets."""
    for _ in range(100):
        if all(os.path.exists(p) for p in paths):
            return
        time.sleep(0.05)


def stop_serve(serve):
    """SIGTERM, then SIGKILL after 10 s; returns the exit status."""
    serve.send_signal(signal.SIGTERM)
    try:
        return serve.wait(timeout=10)
    except subprocess.TimeoutExpired:
        serve.kill()
        return serve.wait()


def run_swiftvmm_blk(args, ns, log, sockdir):
    image = make_disk(sockdir, "swiftvmm-disk.img")
    sock, qmp = os.path.join(sockdir, "blk.sock"), os.path.join(sockdir, "blk-qmp.sock")
    rng, con, hvc = (os.path.join(sockdir, n) for n in ("rng.sock", "con.sock", "hvc.sock"))
    serve = ns.popen([args.swiftvmm, "serve", "--qmp", f"unix:{qmp},server=on,wait=off",
                      "--socket", sock, "--device", f"virtio-blk,disk={image},serial=tier-disk,id=d0",
                      "--socket", rng, "--device", "virtio-rng",
                      "--socket", con, "--device", f"virtio-console,chardev=socket:{hvc}"],
                     stdout=subprocess.DEVNULL, stderr=log)
    wait_for_sockets([sock, rng, con, hvc])
    devices = []
    for path in (sock, rng, con):
        devices += ["-device", json.dumps({"driver": "vfio-user-pci", "socket": {"type": "unix", "path": path}})]
    checks, metrics, secs = run_guest(ns, qemu_command(find_qemu(), "virtio-blk", devices, "swiftvmm"), log, qmp, hvc=hvc)
    status = stop_serve(serve)
    checks["serve-clean-exit"] = {"pass": status == 0 and not any(os.path.exists(s) for s in (sock, rng, con, hvc)),
                                  "detail": f"status {status}"}
    checks.update(disk_checks(image, metrics))
    return checks, metrics, secs


def run_swiftvmm(args, ns, model, log, sockdir):
    if model == "virtio-blk":
        return run_swiftvmm_blk(args, ns, log, sockdir)
    s_user, s_tap = os.path.join(sockdir, f"{model}-user.sock"), os.path.join(sockdir, f"{model}-tap.sock")
    qmp = os.path.join(sockdir, f"{model}-qmp.sock")
    serve = ns.popen([args.swiftvmm, "serve", "--qmp", f"unix:{qmp},server=on,wait=off",
                      "--socket", s_user, "--device", f"{model},net=user,mac={USER_MAC},hostfwd=tcp:127.0.0.1:{HOSTFWD_PORT}-:8080,id=usernic",
                      "--socket", s_tap, "--device", f"{model},net=tap:lt0,mac={TAP_MAC},id=tapnic"],
                     stdout=subprocess.DEVNULL, stderr=log)
    wait_for_sockets([s_user, s_tap])
    nics = ["-device", json.dumps({"driver": "vfio-user-pci", "socket": {"type": "unix", "path": s_user}}),
            "-device", json.dumps({"driver": "vfio-user-pci", "socket": {"type": "unix", "path": s_tap}})]
    checks, metrics, secs = run_guest(ns, qemu_command(find_qemu(), model, nics, "swiftvmm"), log, qmp,
                                      capture=os.path.join(sockdir, f"{model}-tap.pcap"), rx_filter=True)
    status = stop_serve(serve)
    checks["serve-clean-exit"] = {"pass": status == 0 and not any(os.path.exists(s) for s in (s_user, s_tap, qmp)),
                                  "detail": f"status {status}"}
    return checks, metrics, secs


def run_reference(args, ns, model, log, sockdir):
    m = QEMU_MODEL[model]
    qmp = os.path.join(sockdir, f"qemu-{model}-qmp.sock")
    if model == "virtio-blk":
        image = make_disk(sockdir, "qemu-disk.img")
        hvc = os.path.join(sockdir, "qemu-hvc.sock")
        disk = ["-drive", f"file={image},format=raw,if=none,id=d0",
                "-device", f"{m},drive=d0,serial=tier-disk", "-device", "virtio-rng-pci",
                "-chardev", f"socket,id=hvc,path={hvc},server=on,wait=off",
                "-device", "virtio-serial-pci", "-device", "virtconsole,chardev=hvc",
                "-qmp", f"unix:{qmp},server=on,wait=off"]
        checks, metrics, secs = run_guest(ns, qemu_command(find_qemu(), model, disk, "qemu"), log, qmp, hvc=hvc, impl="qemu")
        checks.update(disk_checks(image, metrics))
        return checks, metrics, secs
    nics = ["-netdev", f"user,id=u,hostfwd=tcp:127.0.0.1:{HOSTFWD_PORT}-:8080",
            "-device", f"{m},netdev=u,mac={USER_MAC},romfile=",
            "-netdev", "tap,id=t,ifname=lt0,script=no,downscript=no" + (",vhost=off" if model == "virtio-net" else ""),
            "-device", f"{m},netdev=t,mac={TAP_MAC},romfile=,id=tapnic",
            "-qmp", f"unix:{qmp},server=on,wait=off"]
    # QEMU's e1000 does not implement query-rx-filter; its virtio-net does.
    return run_guest(ns, qemu_command(find_qemu(), model, nics, "qemu"), log, qmp, rx_filter=model == "virtio-net")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--swiftvmm", default=os.path.join(ROOT, ".build/debug/swiftvmm"))
    ap.add_argument("--models", default="e1000,virtio-net,virtio-blk")
    ap.add_argument("--no-reference", action="store_true", help="skip QEMU's own devices")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--log", default="/tmp/swiftvmm-linux-tier.log", help="guest consoles and server logs")
    args = ap.parse_args()
    # A parent (swift test) may have blocked SIGTERM/SIGINT; children inherit the mask.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    why = missing(args)
    if why:
        print(f"linux-tier: skipped: needs {why}", file=sys.stderr)
        return 77
    results = []
    ok = True
    sockdir = f"/tmp/swiftvmm-lt-{os.getpid()}"
    os.makedirs(sockdir, exist_ok=True)
    with open(args.log, "wb") as log:
        for model in args.models.split(","):
            impls = ["swiftvmm"] + ([] if args.no_reference else ["qemu"])
            for impl in impls:
                log.write(f"\n===== {impl} {model} =====\n".encode())
                log.flush()
                ns = Namespace(f"svlt{os.getpid()}{len(results)}")
                try:
                    if impl == "swiftvmm":
                        checks, metrics, secs = run_swiftvmm(args, ns, model, log, sockdir)
                    else:
                        checks, metrics, secs = run_reference(args, ns, model, log, sockdir)
                finally:
                    ns.close()
                failed = [k for k, v in checks.items() if not v["pass"]]
                if impl == "swiftvmm" and (failed or not checks):
                    ok = False
                results.append({"impl": impl, "model": model, "seconds": secs, "checks": checks, "metrics": metrics})
                print(f"{impl:8} {model:10} {len(checks) - len(failed)}/{len(checks)} checks passed in {secs} s"
                      + (f"; FAILED: {', '.join(failed)}" if failed else ""))
                for k in failed:
                    print(f"    {k}: {checks[k]['detail']}")
                for k, v in metrics.items():
                    print(f"    {k}: {v}")
    shutil.rmtree(sockdir, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--swap-helper":
        sys.exit(swap_helper(*sys.argv[2:]))
    sys.exit(main())
