#!/usr/bin/env python3
"""QMP checks with the qemu.qmp library from PyPI as the client (what scripts and
harnesses use against QEMU), against a real swiftvmm process:

  serve: query-version/status/name/commands/pci, set_link on both NICs, argument and
         command errors, hostile input on a raw socket (garbage, deep nesting, a huge
         message, a client leaving mid-command), clients one after another, quit: status 0
         and the sockets gone, SHUTDOWN delivered.
  run:   the mini guest on KVM (skipped without /dev/kvm): query-pci against what the guest
         enumerated, stop/cont (the guest's ticks stop and resume; STOP/RESUME events),
         query-cpus-fast, quit.

  Tools/qmp/check.py --swiftvmm .build/debug/swiftvmm [--mini guest-out/mini/mini.elf]
Exit status 0 when every check passed; 77 when qemu.qmp is missing.
"""
import argparse, asyncio, contextlib, json, os, re, socket, subprocess, sys, tempfile, time

try:
    from qemu.qmp import QMPClient, ExecuteError
except ImportError:
    print("qmp checks: skipped: needs the qemu.qmp Python package (pip install qemu.qmp)", file=sys.stderr)
    sys.exit(77)

failures = []
children = []  # killed at exit whatever happened, so no swiftvmm outlives a failed check


def check(name, ok, detail=""):
    print(f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(name)


def wait_for(path, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not os.path.exists(path):
        time.sleep(0.05)
    return os.path.exists(path)


async def expect_error(q, cls, cmd, args=None):
    try:
        await q.execute(cmd, args)
        return False
    except ExecuteError as e:
        return e.error_class == cls


def raw_exchange(path, payload, timeout=5):
    """Sends raw bytes after negotiating, then a query-status with id 7; returns the
    replies up to that one (error replies for the bad input come first)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(timeout)
    f = s.makefile("rb")
    f.readline()  # greeting
    s.sendall(b'{"execute":"qmp_capabilities"}')
    f.readline()
    s.sendall(payload + b'\n{"execute":"query-status","id":7}')
    replies = []
    for _ in range(500):
        replies.append(json.loads(f.readline()))
        if replies[-1].get("id") == 7:
            break
    s.close()
    return replies


def open_tap(name):
    """A TAP opened the way QEMU and libvirt open one (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR)."""
    import fcntl, struct
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", name.encode(), 0x0002 | 0x1000 | 0x4000))  # TUNSETIFF
    return fd


async def check_descriptors(q, pid):
    """getfd/add-fd: descriptors passed over the socket (SCM_RIGHTS), used by a live backend swap."""
    check("serve: getfd without a descriptor", await expect_error(q, "GenericError", "getfd", {"fdname": "x"}))
    # A descriptor sent with a command that fails is not left for the next command: the
    # next batch replaces it, as in QEMU's socket chardev (it once stayed queued, and the
    # next add-fd stored it instead of its own).
    first_r, first_w = os.pipe()
    second_r, second_w = os.pipe()
    q.send_fd_scm(first_r)
    check("serve: add-fd with a bad fdset-id", await expect_error(q, "GenericError", "add-fd", {"fdset-id": "x"}))
    q.send_fd_scm(second_r)
    added = await q.execute("add-fd", {"opaque": "the second pipe"})
    kept = [f["fd"] for s in await q.execute("query-fdsets") if s["fdset-id"] == added["fdset-id"] for f in s["fds"]]
    inode = os.stat(f"/proc/{pid}/fd/{kept[0]}").st_ino if kept else None
    check("serve: add-fd keeps the descriptor sent with it", inode == os.fstat(second_r).st_ino,
          f"kept {kept}, inode {inode}, sent {os.fstat(second_r).st_ino}, earlier {os.fstat(first_r).st_ino}")
    await q.execute("remove-fd", {"fdset-id": added["fdset-id"]})
    for fd in (first_r, first_w, second_r, second_w):
        os.close(fd)
    r, w = os.pipe()
    q.send_fd_scm(r)
    added = await q.execute("add-fd", {"opaque": "a pipe"})
    sets = await q.execute("query-fdsets")
    check("serve: add-fd and query-fdsets", any(s["fdset-id"] == added["fdset-id"] and s["fds"][0].get("opaque") == "a pipe" for s in sets), str(sets))
    # An fd beyond 32 bits names no descriptor: refused, the set left whole (it once read as "the whole set").
    check("serve: remove-fd with an out-of-range fd", await expect_error(
        q, "GenericError", "remove-fd", {"fdset-id": added["fdset-id"], "fd": 4294967296 + sets[0]["fds"][0]["fd"]}))
    check("serve: the set survives it", len(await q.execute("query-fdsets")) == 1)
    await q.execute("remove-fd", {"fdset-id": added["fdset-id"]})
    check("serve: remove-fd", await q.execute("query-fdsets") == [])
    q.send_fd_scm(w)
    await q.execute("getfd", {"fdname": "notatap"})
    bad = await expect_error(q, "GenericError", "x-swiftvmm-swap-backend", {"name": "nic0", "backend": "net=tap-fd:notatap"})
    check("serve: tap-fd that is not a TAP refused", bad)
    os.close(r); os.close(w)
    if os.geteuid() != 0:
        check("serve: tap-fd swap (needs root for the TAP)", True, "skipped: not root")
        return
    subprocess.run(["ip", "tuntap", "add", "swqmp0", "mode", "tap", "vnet_hdr"], check=False)
    try:
        fd = open_tap("swqmp0")
        q.send_fd_scm(fd)
        os.close(fd)
        await q.execute("getfd", {"fdname": "tap0"})
        await q.execute("x-swiftvmm-swap-backend", {"name": "nic0", "backend": "net=tap-fd:tap0"})
        counters = {n["name"]: n for n in (await q.execute("x-swiftvmm-counters"))["nics"]}
        check("serve: swap to a TAP passed with getfd", counters["nic0"]["backend"] == "tap:swqmp0", counters["nic0"]["backend"])
        check("serve: a getfd name is used once", await expect_error(q, "GenericError", "x-swiftvmm-swap-backend",
                                                                    {"name": "nic1", "backend": "net=tap-fd:tap0"}))
    finally:
        subprocess.run(["ip", "link", "del", "swqmp0"], check=False, stderr=subprocess.DEVNULL)


async def check_serve(binary, tmp):
    qmp, d0, d1, d2, d3 = (os.path.join(tmp, n) for n in ("qmp.sock", "d0.sock", "d1.sock", "d2.sock", "d3.sock"))
    image = os.path.join(tmp, "disk.img")
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    p = subprocess.Popen([binary, "serve", "--socket", d0, "--device", "e1000,net=user,id=nic0",
                          "--socket", d1, "--device", "virtio-net,net=user,id=nic1",
                          "--socket", d2, "--device", f"virtio-blk,disk={image},id=disk0",
                          "--socket", d3, "--device", "virtio-console,id=con0",
                          "--qmp", f"unix:{qmp},server=on,wait=off"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    children.append(p)
    check("serve: sockets appear", wait_for(qmp) and wait_for(d1) and wait_for(d2) and wait_for(d3))
    q = QMPClient("serve")
    await q.connect(qmp)
    version = q.greeting._raw["QMP"]["version"]  # the greeting message as received
    check("serve: greeting names swiftvmm", version["package"].startswith("swiftvmm"), str(version))
    check("serve: query-version", (await q.execute("query-version")) == version)
    status = await q.execute("query-status")
    check("serve: query-status running", status["status"] == "running" and status["running"] is True, str(status))
    names = [c["name"] for c in await q.execute("query-commands")]
    check("serve: query-commands", "set_link" in names and "query-pci" in names and "stop" not in names, str(names))
    devices = (await q.execute("query-pci"))[0]["devices"]
    ids = sorted((d["qdev_id"], d["id"]["vendor"], d["id"]["device"]) for d in devices)
    check("serve: query-pci", ids == [("con0", 0x1AF4, 0x1043), ("disk0", 0x1AF4, 0x1042), ("nic0", 0x8086, 0x100E),
                                      ("nic1", 0x1AF4, 0x1041)], str(ids))
    # class << 8 | subclass, as QEMU reports it: other communication (QEMU's
    # virtio-serial-pci), mass storage (SCSI, as QEMU's virtio-blk-pci), Ethernet twice.
    classes = sorted((d["qdev_id"], d["class_info"]["class"]) for d in devices)
    check("serve: query-pci classes", classes == [("con0", 0x0780), ("disk0", 0x0100), ("nic0", 0x0200), ("nic1", 0x0200)],
          str(classes))
    # A device's own counts (drops it counted) beside its worst action.
    counted = {d["name"]: d for d in (await q.execute("x-swiftvmm-counters"))["devices"]}
    check("serve: device counters", {"bytes-out", "dropped-output", "bad-requests"} <= set(counted["con0"].get("counters", {}))
          and counted["disk0"]["counters"] == {"bad-requests": 0} and "worst-action" in counted["con0"], str(counted.get("con0")))
    blocks = await q.execute("query-block")
    check("serve: query-block", [(b["device"], b["inserted"]["image"]["virtual-size"]) for b in blocks] == [("disk0", 8 << 20)], str(blocks))
    await q.execute("block_resize", {"device": "disk0", "size": 16 << 20})
    check("serve: block_resize grows the image", os.path.getsize(image) == 16 << 20, str(os.path.getsize(image)))
    check("serve: block_resize bad size", await expect_error(q, "GenericError", "block_resize", {"device": "disk0", "size": 1000}))
    check("serve: block_resize unknown disk", await expect_error(q, "DeviceNotFound", "block_resize", {"device": "nope", "size": 1 << 20}))
    await q.execute("x-swiftvmm-set-faults", {"name": "nic0", "drop": 10, "reorder": 5.5, "delay-ms": 2, "seed": 7})
    counters = {n["name"]: n for n in (await q.execute("x-swiftvmm-counters"))["nics"]}
    check("serve: set-faults live", (counters["nic0"]["faults"] or {}).get("seed") == 7 and counters["nic1"]["faults"] is None, str(counters["nic0"]))
    check("serve: set-faults bad rate", await expect_error(q, "GenericError", "x-swiftvmm-set-faults", {"name": "nic0", "drop": 101}))
    check("serve: set-faults bad direction", await expect_error(q, "GenericError", "x-swiftvmm-set-faults", {"name": "nic0", "direction": "up"}))
    await q.execute("x-swiftvmm-clear-faults", {"name": "nic0"})
    counters = {n["name"]: n for n in (await q.execute("x-swiftvmm-counters"))["nics"]}
    check("serve: clear-faults", counters["nic0"]["faults"] is None, str(counters["nic0"]))
    await q.execute("set_link", {"name": "nic1", "up": False})
    counters = {n["name"]: n for n in (await q.execute("x-swiftvmm-counters"))["nics"]}
    check("serve: set_link down", counters["nic1"]["link-up"] is False and counters["nic0"]["link-up"] is True, str(counters))
    await q.execute("set_link", {"name": "nic1", "up": True})
    counters = {n["name"]: n for n in (await q.execute("x-swiftvmm-counters"))["nics"]}
    check("serve: set_link up", counters["nic1"]["link-up"] is True)
    await check_descriptors(q, p.pid)
    check("serve: unknown device", await expect_error(q, "DeviceNotFound", "set_link", {"name": "nope", "up": True}))
    check("serve: wrong argument type", await expect_error(q, "GenericError", "set_link", {"name": "nic0", "up": "yes"}))
    check("serve: unexpected argument", await expect_error(q, "GenericError", "query-pci", {"bogus": 1}))
    check("serve: unknown command", await expect_error(q, "CommandNotFound", "no-such-command"))
    check("serve: powerdown without ACPI", await expect_error(q, "GenericError", "system_powerdown"))
    await q.disconnect()

    # Hostile input on a raw socket, each time followed by a command that must still work.
    r = raw_exchange(qmp, b"garbage!")
    check("serve: garbage answered", "error" in r[0] and r[-1].get("id") == 7, str(r))
    r = raw_exchange(qmp, b"[" * 5000 + b"]" * 5000)
    check("serve: deep nesting refused", "error" in r[0] and r[-1].get("id") == 7, str(r)[:300])
    s = socket.socket(socket.AF_UNIX)
    s.connect(qmp)
    s.sendall(b'{"execute":"qmp_capabilities"}{"execute": "query-')  # leaves mid-command
    s.close()
    r = raw_exchange(qmp, b'{"execute":"query-name","arguments":{"x":"' + b"A" * 200000 + b'"}}')
    check("serve: huge message refused", "error" in r[0] and r[-1].get("id") == 7, str(r)[:200])
    r = raw_exchange(qmp, b'{"execute":"query-status","exec-oob":"x","id":1}{"execute":5,"id":2}')
    check("serve: exec-oob refused (no OOB negotiated), execute must be a string",
          r[0].get("id") == 1 and "'exec-oob' is unexpected" in r[0]["error"]["desc"]
          and r[1].get("id") == 2 and "must be a string" in r[1]["error"]["desc"] and r[-1].get("id") == 7, str(r)[:300])
    r = raw_exchange(qmp, '{"execute":"query-name","id":"\\ud83d\\ude00"}'.encode())
    check("serve: an id escaped as a surrogate pair comes back as one character", r[0].get("id") == "\U0001F600", str(r)[:200])
    check("serve: still serving", p.poll() is None)

    # A client that connects and says nothing keeps the server only until another client
    # waits and the negotiation grace (5 s) has passed; then it is told why and closed.
    squatter = socket.socket(socket.AF_UNIX)
    squatter.connect(qmp)
    squatter.settimeout(15)
    greeting = squatter.makefile("rb").readline()
    started = time.monotonic()
    r = raw_exchange(qmp, b"", timeout=15)
    check("serve: a silent client yields to a waiting one", r and r[-1].get("id") == 7 and time.monotonic() - started < 12, str(r)[:200])
    rest = squatter.recv(4096)
    check("serve: the silent client is told why", b"negotiation not completed" in rest and b"QMP" in greeting, str(rest)[:200])
    squatter.close()

    q = QMPClient("serve-2")
    await q.connect(qmp)
    reset = asyncio.ensure_future(wait_event(q, "RESET"))
    await q.execute("system_reset")
    check("serve: system_reset resets the devices and goes on (RESET)", await reset)
    shutdown = asyncio.ensure_future(wait_event(q, "SHUTDOWN"))
    await q.execute("quit")
    check("serve: SHUTDOWN event", await shutdown)
    with contextlib.suppress(Exception):
        await q.disconnect()
    status = p.wait(timeout=10)
    check("serve: quit exits 0", status == 0, p.stderr.read().decode()[-500:])
    check("serve: sockets removed", not any(os.path.exists(x) for x in (qmp, d0, d1, d2)))


async def check_serve_unnamed(binary, tmp):
    """Two NICs served without `id=` or `mac=`: each sits alone on its own bus, yet they
    must be told apart by name (`dev0`, `dev1`) and by default MAC, as under `run`."""
    qmp, d0, d1 = (os.path.join(tmp, n) for n in ("qmp-u.sock", "u0.sock", "u1.sock"))
    p = subprocess.Popen([binary, "serve", "--socket", d0, "--device", "e1000,net=user",
                          "--socket", d1, "--device", "virtio-net,net=user",
                          "--qmp", f"unix:{qmp},server=on,wait=off"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children.append(p)
    check("serve unnamed: sockets appear", wait_for(qmp) and wait_for(d1))
    q = QMPClient("serve-unnamed")
    await q.connect(qmp)
    filters = await q.execute("query-rx-filter")
    names, macs = [f["name"] for f in filters], [f["main-mac"] for f in filters]
    check("serve unnamed: devN names and default MACs differ", sorted(names) == ["dev0", "dev1"] and len(set(macs)) == 2,
          f"{names} {macs}")
    await q.execute("quit")
    with contextlib.suppress(Exception):
        await q.disconnect()
    p.wait(timeout=10)


async def events_until(q, name, timeout=5.0):
    """The events' names and data up to and including the first NAME (None if it never came)."""
    seen = []
    try:
        async with asyncio.timeout(timeout):
            async for event in q.events:
                seen.append((event["event"], event.get("data", {})))
                if event["event"] == name:
                    return seen
    except TimeoutError:
        return None
    return None


async def wait_event(q, name, timeout=5.0):
    try:
        async with asyncio.timeout(timeout):
            async for event in q.events:
                if event["event"] == name:
                    return True
    except TimeoutError:
        return False
    return False


def ticks(path):
    with open(path, errors="replace") as f:
        found = re.findall(r"tick (\d+)", f.read())
    return int(found[-1]) if found else -1


async def start_run(binary, mini, qmp, name, args):
    """`swiftvmm run` of the mini guest with a QMP socket, and a client connected to it."""
    p = subprocess.Popen([binary, "run", "--kernel", mini, "--memory", "32M", *args,
                          "--qmp", f"unix:{qmp},server=on,wait=off"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    children.append(p)
    check(f"{name}: QMP socket appears", wait_for(qmp))
    q = QMPClient(name)
    await q.connect(qmp)
    return p, q


async def check_run(binary, mini, tmp):
    qmp, serial = os.path.join(tmp, "run-qmp.sock"), os.path.join(tmp, "serial.txt")
    p, q = await start_run(binary, mini, qmp, "run", ["--cmdline", "ticks=5", "--name", "mini", "--serial", f"file:{serial}",
                                                      "--device", "e1000,net=user,id=nic0", "--device", "virtio-net,net=user,id=nic1"])
    check("run: query-name", (await q.execute("query-name")) == {"name": "mini"})
    end = time.monotonic() + 10
    while ticks(serial) < 2 and time.monotonic() < end:
        await asyncio.sleep(0.1)
    with open(serial, errors="replace") as f:
        text = f.read()
    guest = sorted(re.findall(r"pci 00:([0-9a-f]{2})\.0 ([0-9a-f]{4}):([0-9a-f]{4})", text))
    devices = (await q.execute("query-pci"))[0]["devices"]
    host = sorted((f"{d['slot']:02x}", f"{d['id']['vendor']:04x}", f"{d['id']['device']:04x}") for d in devices)
    check("run: query-pci matches the guest's enumeration", [g for g in guest if g[0] != "00"] == host, f"{guest} vs {host}")
    cpus = await q.execute("query-cpus-fast")
    check("run: query-cpus-fast", len(cpus) == 1 and cpus[0]["cpu-index"] == 0, str(cpus))
    stop_event = asyncio.ensure_future(wait_event(q, "STOP"))
    await q.execute("stop")
    check("run: STOP event", await stop_event)
    check("run: query-status paused", (await q.execute("query-status"))["status"] == "paused")
    before = ticks(serial)
    await asyncio.sleep(1.0)
    check("run: vCPUs paused", ticks(serial) == before, f"{before} -> {ticks(serial)}")
    resume_event = asyncio.ensure_future(wait_event(q, "RESUME"))
    await q.execute("cont")
    check("run: RESUME event", await resume_event)
    end = time.monotonic() + 10
    while ticks(serial) <= before and time.monotonic() < end:
        await asyncio.sleep(0.1)
    with open(serial, errors="replace") as f:
        tail = f.read()[-160:]
    check("run: vCPUs resumed", ticks(serial) > before,
          f"tick {before} before cont, {ticks(serial)} 10 s after; serial ends {tail!r}; status {(await q.execute('query-status'))['status']}")
    await q.execute("set_link", {"name": "nic0", "up": False})
    shutdown = asyncio.ensure_future(wait_event(q, "SHUTDOWN"))
    await q.execute("quit")
    check("run: SHUTDOWN event", await shutdown)
    with contextlib.suppress(Exception):
        await q.disconnect()
    status = p.wait(timeout=10)
    check("run: quit exits 0", status == 0, p.stderr.read().decode()[-500:])
    check("run: socket removed", not os.path.exists(qmp))

    # system_reset ends a swiftvmm VM (QEMU's -no-reboot): SHUTDOWN with the reset's
    # reason, and no RESET before it, as QEMU sends.
    p, q = await start_run(binary, mini, qmp, "run-reset", ["--cmdline", "ticks=50", "--serial", "none"])
    events = asyncio.ensure_future(events_until(q, "SHUTDOWN"))
    await q.execute("system_reset")
    events = await events
    check("run: system_reset is one SHUTDOWN (host-qmp-system-reset)",
          events == [("SHUTDOWN", {"guest": False, "reason": "host-qmp-system-reset"})], str(events))
    with contextlib.suppress(Exception):
        await q.disconnect()
    p.wait(timeout=10)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--swiftvmm", required=True)
    ap.add_argument("--mini")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="swiftvmm-qmp-") as tmp:
        try:
            async with asyncio.timeout(120):
                await check_serve(args.swiftvmm, tmp)
                await check_serve_unnamed(args.swiftvmm, tmp)
                if args.mini and os.access("/dev/kvm", os.R_OK | os.W_OK):
                    await check_run(args.swiftvmm, args.mini, tmp)
                else:
                    print("run checks: skipped: needs /dev/kvm and the mini guest (--mini)")
        except Exception as e:
            check("no exception", False, f"{type(e).__name__}: {e}")
        finally:
            for c in children:
                if c.poll() is None:
                    c.kill()
                    c.wait()
    if failures:
        print("FAILED: " + ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
