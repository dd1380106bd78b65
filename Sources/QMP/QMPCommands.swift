#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import VMMBlock
import VMMCore
import VMMNet

/// The commands, with QEMU's names and argument and return shapes (qapi/*.json), so
/// existing QMP clients and scripts work. One instance per client session.
final class QMPCommands {
    private unowned let server: QMPServer
    private(set) var negotiated = false
    private(set) var quitRequested = false
    func acknowledgeQuit() { quitRequested = false }

    init(server: QMPServer) { self.server = server }

    /// The last batch of descriptors the client sent (SCM_RIGHTS) that no getfd/add-fd
    /// took yet.
    private var receivedDescriptors: [Int32] = []
    static let maxReceivedDescriptors = 8

    /// Keeps the descriptors that arrived with the client's bytes. A new batch replaces
    /// what is left of the last one, which is closed, as QEMU's socket chardev does
    /// (`tcp_chr_process_IO_msg`): a command that failed before taking its descriptor
    /// must not leave it for the next command, which would then take a descriptor other
    /// than the one sent with it. Beyond the bound the rest of a batch is closed.
    func received(_ fds: [Int32]) {
        guard !fds.isEmpty else { return }
        closeReceivedDescriptors()
        receivedDescriptors = Array(fds.prefix(Self.maxReceivedDescriptors))
        DescriptorCloser.shared.close(Array(fds.dropFirst(Self.maxReceivedDescriptors)))
    }

    func closeReceivedDescriptors() {
        DescriptorCloser.shared.close(receivedDescriptors)
        receivedDescriptors.removeAll()
    }

    /// The batch's first descriptor; the rest of the batch is closed (QEMU's
    /// `tcp_chr_get_msgfds` hands out what was asked for and closes the others).
    private func takeReceivedDescriptor() throws(QMPError) -> Int32 {
        guard !receivedDescriptors.isEmpty else { throw .generic("No file descriptor supplied via SCM_RIGHTS") }
        let fd = receivedDescriptors.removeFirst()
        closeReceivedDescriptors()
        return fd
    }

    var greeting: String {
        JSONValue.object([("QMP", .object([
            ("version", Self.version),
            ("capabilities", .array([])),
        ]))]).serialized
    }

    /// `query-version`'s shape: QEMU's numbers are swiftvmm's, `package` names swiftvmm.
    static var version: JSONValue {
        .object([
            ("qemu", .object([("major", .int(Int64(SwiftVMMVersion.major))), ("minor", .int(Int64(SwiftVMMVersion.minor))),
                              ("micro", .int(Int64(SwiftVMMVersion.micro)))])),
            ("package", .string("swiftvmm \(SwiftVMMVersion.text)")),
        ])
    }

    static let standard = ["qmp_capabilities", "query-version", "query-status", "query-name", "query-commands", "query-pci",
                           "set_link", "query-rx-filter", "getfd", "closefd", "add-fd", "remove-fd", "query-fdsets", "query-block", "block_resize", "system_reset", "system_powerdown", "quit", "x-swiftvmm-counters",
                           "x-swiftvmm-capture-start", "x-swiftvmm-capture-stop", "x-swiftvmm-swap-backend",
                           "x-swiftvmm-set-faults", "x-swiftvmm-clear-faults"]
    static let vcpuCommands = ["stop", "cont", "query-cpus-fast"]

    var available: [String] { Self.standard + (server.target.hasVCPUs ? Self.vcpuCommands : []) }

    /// Handles one JSON text; returns the reply line.
    func handle(_ bytes: [UInt8]) -> String {
        let request: JSONValue
        do {
            request = try JSONParser.parse(bytes, maxDepth: 32)
        } catch {
            return Self.errorReply(.generic("JSON parse error: \(error)"), id: nil)
        }
        let id = request["id"]
        guard let members = request.objectMembers else {
            return Self.errorReply(.generic("QMP input must be a JSON object"), id: nil)
        }
        // `exec-oob` too: out-of-band execution is never negotiated here (the `oob`
        // capability is refused), and QEMU then refuses the member as well.
        for (key, _) in members where !["execute", "arguments", "id"].contains(key) {
            return Self.errorReply(.generic("QMP input member '\(key)' is unexpected"), id: id)
        }
        guard let executeMember = request["execute"] else {
            return Self.errorReply(.generic("QMP input lacks member 'execute'"), id: id)
        }
        guard let command = executeMember.stringValue else {
            return Self.errorReply(.generic("QMP input member 'execute' must be a string"), id: id)
        }
        let arguments = request["arguments"] ?? .object([])
        guard arguments.objectMembers != nil else {
            return Self.errorReply(.generic("QMP input member 'arguments' must be an object"), id: id)
        }
        guard negotiated || command == "qmp_capabilities" else {
            return Self.errorReply(.commandNotFound("Expecting capabilities negotiation with 'qmp_capabilities'"), id: id)
        }
        do {
            let result = try execute(command, Arguments(arguments))
            var reply: [(String, JSONValue)] = [("return", result)]
            if let id { reply.append(("id", id)) }
            return JSONValue.object(reply).serialized
        } catch {
            return Self.errorReply(error, id: id)
        }
    }

    static func errorReply(_ error: QMPError, id: JSONValue?) -> String {
        var reply: [(String, JSONValue)] = [("error", .object([("class", .string(error.errorClass)), ("desc", .string(error.description))]))]
        if let id { reply.append(("id", id)) }
        return JSONValue.object(reply).serialized
    }

    private func execute(_ command: String, _ args: Arguments) throws(QMPError) -> JSONValue {
        let target = server.target
        switch command {
        case "qmp_capabilities":
            if negotiated { throw .commandNotFound("Capabilities negotiation is already complete, command ignored") }
            if let enable = args.value("enable") {
                guard case let .array(list) = enable else { throw .generic("Invalid parameter type for 'enable', expected: array") }
                if let first = list.first {
                    guard let name = first.stringValue else { throw .generic("Invalid parameter type for 'enable', expected: array of strings") }
                    throw .generic("Capability '\(name)' not available")
                }
            }
            try args.only(["enable"])
            negotiated = true
            return .object([])
        case "query-version":
            try args.only([])
            return Self.version
        case "query-status":
            try args.only([])
            return .object([("status", .string(target.isRunning ? "running" : "paused")), ("running", .bool(target.isRunning))])
        case "query-name":
            try args.only([])
            return .object(target.name.map { [("name", .string($0))] } ?? [])
        case "query-commands":
            try args.only([])
            return .array(available.map { .object([("name", .string($0))]) })
        case "query-pci":
            try args.only([])
            return .array([.object([("bus", .int(0)), ("devices", .array(target.pciFunctions.map(Self.describe)))])])
        case "set_link":
            try args.only(["name", "up"])
            let name = try args.string("name"), up = try args.bool("up")
            guard let link = server.links?.link(named: name) else { throw .deviceNotFound("Device '\(name)' not found") }
            link.setLink(up: up)
            return .object([])
        case "query-rx-filter":
            // QEMU's shape (qapi/net.json RxFilterInfo); reading a NIC's filter re-arms its
            // NIC_RX_FILTER_CHANGED event.
            try args.only(["name"])
            let wanted = try args.value("name") != nil ? args.string("name") : nil
            let links = (server.links?.all ?? []).filter { wanted == nil || $0.name == wanted }
            if let wanted, links.isEmpty { throw .deviceNotFound("Device '\(wanted)' not found") }
            var out: [JSONValue] = []
            for entry in links {
                guard let info = entry.link.receiveFilter else {
                    if wanted != nil { throw .generic("net client(\(entry.name)) doesn't support rx-filter querying") }
                    continue
                }
                server.links?.receiveFilterQueried(entry.name)
                out.append(Self.describe(filter: info, name: entry.name))
            }
            return .array(out)
        case "getfd":
            // qapi/misc.json: the descriptor that came with this message, kept by name.
            try args.only(["fdname"])
            let name = try args.string("fdname")
            guard let passed = server.descriptors else { throw .generic("this platform takes no descriptors") }
            let fd = try takeReceivedDescriptor()
            do { try passed.keep(fd, as: name) } catch { throw .generic("\(error)") }
            return .object([])
        case "closefd":
            try args.only(["fdname"])
            let name = try args.string("fdname")
            guard server.descriptors?.close(named: name) == true else { throw .generic("File descriptor named '\(name)' not found") }
            return .object([])
        case "add-fd":
            try args.only(["fdset-id", "opaque"])
            guard let passed = server.descriptors else { throw .generic("this platform takes no descriptors") }
            var set: Int?
            if args.value("fdset-id") != nil {
                let id = try args.int("fdset-id")
                guard (0 ... 1 << 20).contains(id) else { throw .generic("Parameter 'fdset-id' must be in 0…1048576") }
                set = Int(id)
            }
            let opaque = try args.value("opaque") != nil ? args.string("opaque") : nil
            let fd = try takeReceivedDescriptor()
            let id: Int
            do { id = try passed.add(fd, toSet: set, opaque: opaque) } catch { throw .generic("\(error)") }
            return .object([("fdset-id", .int(Int64(id))), ("fd", .int(Int64(fd)))])
        case "remove-fd":
            try args.only(["fdset-id", "fd"])
            let id = try args.int("fdset-id")
            let fd = try args.value("fd") != nil ? args.int("fd") : nil
            let notFound = QMPError.generic("File descriptor set \(id)\(fd.map { " fd \($0)" } ?? "") not found")
            // An fd given but out of range names no descriptor; it must not read as "the whole set".
            var descriptor: Int32?
            if let fd {
                guard let narrowed = Int32(exactly: fd) else { throw notFound }
                descriptor = narrowed
            }
            guard let set = Int(exactly: id), server.descriptors?.remove(set: set, fd: descriptor) == true else { throw notFound }
            return .object([])
        case "query-fdsets":
            try args.only([])
            return .array((server.descriptors?.fdSets ?? []).map { set in
                .object([("fdset-id", .int(Int64(set.id))),
                         ("fds", .array(set.entries.map { e in
                             .object([("fd", .int(Int64(e.fd)))] + (e.opaque.map { [("opaque", JSONValue.string($0))] } ?? []))
                         }))])
            })
        case "query-block":
            try args.only([])
            return .array((server.disks?.all ?? []).map { Self.describe(disk: $0.name, $0.backend) })
        case "block_resize":
            // QEMU's shape: `device` or `node-name`, and the new `size` in bytes.
            try args.only(["device", "node-name", "size"])
            let name = try args.value("device") != nil ? args.string("device") : args.string("node-name")
            let size = try args.int("size")
            guard let disk = server.disks?.disk(named: name) else { throw .deviceNotFound("Device '\(name)' not found") }
            guard size > 0, size % 512 == 0 else { throw .generic("Parameter 'size' must be a positive multiple of 512") }
            do { try disk.resize(to: UInt64(size)) } catch { throw .generic("Cannot resize '\(name)': \(error)") }
            return .object([])
        case "system_reset":
            try args.only([])
            if !target.resetEndsMachine {
                server.emit("RESET", data: .object([("guest", .bool(false)), ("reason", .string("host-qmp-system-reset"))]))
            }
            target.reset()
            return .object([])
        case "system_powerdown":
            try args.only([])
            throw .generic("system_powerdown needs ACPI, which this platform does not have; use quit or system_reset")
        case "quit":
            try args.only([])
            quitRequested = true
            return .object([])
        case "stop" where target.hasVCPUs:
            try args.only([])
            if target.isRunning {
                target.pause()
                server.emit("STOP")
            }
            return .object([])
        case "cont" where target.hasVCPUs:
            try args.only([])
            if !target.isRunning {
                target.resume()
                server.emit("RESUME")
            }
            return .object([])
        case "query-cpus-fast" where target.hasVCPUs:
            try args.only([])
            return .array((0 ..< target.vcpuCount).map { i in
                .object([("cpu-index", .int(Int64(i))), ("qom-path", .string("/machine/unattached/device[\(i)]")),
                         ("target", .string("x86_64")), ("props", .object([("core-id", .int(0)), ("thread-id", .int(0)), ("socket-id", .int(Int64(i)))]))])
            })
        case "x-swiftvmm-counters":
            try args.only([])
            return counters()
        case "x-swiftvmm-capture-start":
            // The QMP client is the VM's administrator (the socket is 0600): it may name
            // any path the process can write, as QEMU's dump commands do.
            try args.only(["name", "path"])
            let name = try args.string("name"), path = try args.string("path")
            guard let link = server.links?.link(named: name) else { throw .deviceNotFound("Device '\(name)' not found") }
            guard link.capturePath == nil else { throw .generic("a capture of '\(name)' is already running (to \(link.capturePath ?? ""))") }
            do { try link.startCapture(path: path) } catch { throw .generic("cannot capture to '\(path)': \(error)") }
            return .object([])
        case "x-swiftvmm-swap-backend":
            // `backend` is what follows the device name in --device: net=…[,capture=…][,fault…].
            try args.only(["name", "backend"])
            let name = try args.string("name"), text = try args.string("backend")
            guard let link = server.links?.link(named: name) else { throw .deviceNotFound("Device '\(name)' not found") }
            do {
                let spec = try DeviceSpec.parse("backend," + text)
                try link.swap(options: spec.options)
            } catch {
                throw .generic("cannot swap the backend of '\(name)' to '\(text)': \(error)")
            }
            return .object([])
        case "x-swiftvmm-set-faults":
            try args.only(["name", "drop", "duplicate", "corrupt", "reorder", "delay-ms", "rate-mbps", "seed", "direction"])
            let name = try args.string("name")
            guard let link = server.links?.link(named: name) else { throw .deviceNotFound("Device '\(name)' not found") }
            var config = FaultConfig()
            config.dropPercent = try args.percent("drop")
            config.duplicatePercent = try args.percent("duplicate")
            config.corruptPercent = try args.percent("corrupt")
            config.reorderPercent = try args.percent("reorder")
            let delay = try args.number("delay-ms", in: 0 ... 60_000) ?? 0
            config.delay = UInt64(delay * 1_000_000)
            if let rate = try args.number("rate-mbps", in: 0 ... 1_000_000), rate > 0 {
                // Below 1 bit/s the rate would round to 0, which means "no limit".
                guard rate >= 1e-6 else { throw .generic("Parameter 'rate-mbps' must be 0 (no limit) or at least 0.000001") }
                config.rateBitsPerSecond = UInt64(rate * 1_000_000)
            }
            if args.value("seed") != nil {
                let seed = try args.int("seed")
                guard seed >= 0 else { throw .generic("Parameter 'seed' must not be negative") }
                config.seed = UInt64(seed)
            }
            if args.value("direction") != nil {
                let d = try args.string("direction")
                guard let direction = FaultConfig.Direction(rawValue: d) else {
                    throw .generic("Parameter 'direction' must be 'tx', 'rx' or 'both'")
                }
                config.direction = direction
            }
            do { try link.setFaults(config) } catch { throw .generic("\(error)") }
            return .object([])
        case "x-swiftvmm-clear-faults":
            try args.only(["name"])
            let name = try args.string("name")
            guard let link = server.links?.link(named: name) else { throw .deviceNotFound("Device '\(name)' not found") }
            do { try link.setFaults(nil) } catch { throw .generic("\(error)") }
            return .object([])
        case "x-swiftvmm-capture-stop":
            try args.only(["name"])
            let name = try args.string("name")
            guard let link = server.links?.link(named: name) else { throw .deviceNotFound("Device '\(name)' not found") }
            guard link.stopCapture() else { throw .generic("no capture of '\(name)' is running") }
            return .object([])
        default:
            throw .commandNotFound("The command \(command) has not been found")
        }
    }

    /// One `PciDeviceInfo` (qapi/pci.json).
    static func describe(filter f: ReceiveFilterInfo, name: String) -> JSONValue {
        .object([
            ("name", .string(name)), ("promiscuous", .bool(f.promiscuous)),
            ("multicast", .string(f.multicast.rawValue)), ("unicast", .string(f.unicast.rawValue)),
            ("vlan", .string(f.vlan.rawValue)), ("broadcast-allowed", .bool(f.broadcastAllowed)),
            ("multicast-overflow", .bool(f.multicastOverflow)), ("unicast-overflow", .bool(f.unicastOverflow)),
            ("main-mac", .string(f.mainMAC.description)),
            ("vlan-table", .array(f.vlanTable.map { .int(Int64($0)) })),
            ("unicast-table", .array(f.unicastTable.map { .string($0.description) })),
            ("multicast-table", .array(f.multicastTable.map { .string($0.description) })),
        ])
    }

    /// What a NIC's fault injection has done so far.
    static func describe(faults f: FaultFilter) -> JSONValue {
        let st = f.statistics
        func n(_ a: borrowing Atomic<UInt64>) -> JSONValue { .int(Int64(truncatingIfNeeded: a.load(ordering: .relaxed))) }
        return .object([("dropped", n(st.dropped)), ("duplicated", n(st.duplicated)), ("corrupted", n(st.corrupted)),
                        ("reordered", n(st.reordered)), ("delayed", n(st.delayed)), ("rate-limited", n(st.rateLimited)),
                        ("seed", .int(Int64(truncatingIfNeeded: f.config.seed)))])
    }

    /// One `BlockInfo` as QEMU's query-block returns it (qapi/block-core.json).
    static func describe(disk name: String, _ backend: BlockBackend) -> JSONValue {
        let g = backend.geometry
        return .object([
            ("device", .string(name)), ("locked", .bool(false)), ("removable", .bool(false)),
            ("inserted", .object([
                ("file", .string(backend.description)), ("ro", .bool(g.readOnly)), ("drv", .string("raw")),
                ("image", .object([("filename", .string(backend.description)), ("format", .string("raw")),
                                   ("virtual-size", .int(Int64(clamping: g.size)))])),
            ])),
        ])
    }

    static func describe(_ fn: PCIFunction) -> JSONValue {
        fn.lock.withLock {
            let c = fn.config
            // QEMU's class_info.class: the class and subclass bytes (0x0B, 0x0A) as one word.
            let classAndSubclass = c.read(offset: PCIConfigOffset.classCode + 1, size: 2)
            var regions: [JSONValue] = []
            for bar in 0 ..< 6 {
                guard let kind = c.bars[bar] else { continue }
                var r: [(String, JSONValue)] = [("bar", .int(Int64(bar))), ("type", .string(kind.isIO ? "io" : "memory")),
                                                 ("address", .int(Int64(truncatingIfNeeded: c.barAddress(bar) ?? 0))),
                                                 ("size", .int(Int64(truncatingIfNeeded: kind.size)))]
                if !kind.isIO {
                    if case let .memory32(_, p) = kind { r.append(("prefetch", .bool(p))) }
                    if case let .memory64(_, p) = kind { r.append(("prefetch", .bool(p))) }
                    r.append(("mem_type_64", .bool(kind.is64Bit)))
                }
                regions.append(.object(r))
            }
            var info: [(String, JSONValue)] = [
                ("bus", .int(0)), ("slot", .int(Int64(fn.slot))), ("function", .int(Int64(fn.function))),
                ("class_info", .object([("class", .int(Int64(classAndSubclass)))])),
                ("id", .object([("device", .int(Int64(c.deviceID))), ("vendor", .int(Int64(c.vendorID))),
                                ("subsystem", .int(Int64(c.read(offset: PCIConfigOffset.subsystemID, size: 2)))),
                                ("subsystem-vendor", .int(Int64(c.read(offset: PCIConfigOffset.subsystemVendorID, size: 2))))])),
                ("regions", .array(regions)),
                ("qdev_id", .string(fn.id ?? "")),
            ]
            if c.interruptPin != 0 {
                info.append(("irq", .int(Int64(c.interruptLine))))
                info.append(("irq_pin", .int(Int64(c.interruptPin))))
            }
            return .object(info)
        }
    }

    private func counters() -> JSONValue {
        let nics = (server.links?.all ?? []).map { entry -> JSONValue in
            let c = entry.link.counters
            return .object([
                ("name", .string(entry.name)), ("backend", .string(entry.link.description)),
                ("link-up", .bool(entry.link.isLinkUp)), ("admin-up", .bool(entry.link.isAdministrativelyUp)),
                ("tx-frames", .int(Int64(truncatingIfNeeded: c.txFrames.load(ordering: .relaxed)))),
                ("tx-bytes", .int(Int64(truncatingIfNeeded: c.txBytes.load(ordering: .relaxed)))),
                ("rx-frames", .int(Int64(truncatingIfNeeded: c.rxFrames.load(ordering: .relaxed)))),
                ("rx-bytes", .int(Int64(truncatingIfNeeded: c.rxBytes.load(ordering: .relaxed)))),
                ("drops", .object(c.allDrops.sorted { $0.key.rawValue < $1.key.rawValue }
                    .map { ($0.key.rawValue, .int(Int64(truncatingIfNeeded: $0.value))) })),
                ("faults", entry.link.faultFilter.map(Self.describe(faults:)) ?? .null),
            ])
        }
        let devices = server.target.pciFunctions.map { fn -> JSONValue in
            let (worst, counts) = fn.lock.withLock { (fn.cost.worst, (fn.device as? DeviceCounters)?.counters ?? []) }
            var members: [(String, JSONValue)] = [("name", .string(fn.id ?? fn.name)),
                                                  ("worst-action", .object([("descriptors", .int(Int64(worst.descriptors))),
                                                                            ("frames", .int(Int64(worst.frames))), ("bytes", .int(Int64(worst.bytes)))]))]
            if !counts.isEmpty { members.append(("counters", .object(counts.map { ($0.name, .int(Int64(truncatingIfNeeded: $0.value))) }))) }
            return .object(members)
        }
        return .object([("nics", .array(nics)), ("devices", .array(devices))])
    }
}

/// A command's `arguments`, checked by name and type; unknown members are errors.
struct Arguments {
    let members: [(String, JSONValue)]
    init(_ value: JSONValue) { members = value.objectMembers ?? [] }

    func value(_ key: String) -> JSONValue? { members.first { $0.0 == key }?.1 }

    func only(_ allowed: [String]) throws(QMPError) {
        if let extra = members.first(where: { !allowed.contains($0.0) }) {
            throw .generic("Parameter '\(extra.0)' is unexpected")
        }
    }

    func string(_ key: String) throws(QMPError) -> String {
        guard let v = value(key) else { throw .generic("Parameter '\(key)' is missing") }
        guard let s = v.stringValue else { throw .generic("Parameter '\(key)' expects a string") }
        return s
    }

    /// An optional number (integer or not) within `range`.
    func number(_ key: String, in range: ClosedRange<Double>) throws(QMPError) -> Double? {
        guard let v = value(key) else { return nil }
        let d: Double
        switch v {
        case let .int(i): d = Double(i)
        case let .double(x): d = x
        default: throw .generic("Parameter '\(key)' expects a number")
        }
        guard d.isFinite, range.contains(d) else { throw .generic("Parameter '\(key)' must be in \(range.lowerBound)…\(range.upperBound)") }
        return d
    }

    /// An optional percentage (0…100), 0 when absent.
    func percent(_ key: String) throws(QMPError) -> Double { try number(key, in: 0 ... 100) ?? 0 }

    func int(_ key: String) throws(QMPError) -> Int64 {
        guard let v = value(key) else { throw .generic("Parameter '\(key)' is missing") }
        guard let i = v.intValue else { throw .generic("Parameter '\(key)' expects an integer") }
        return i
    }

    func bool(_ key: String) throws(QMPError) -> Bool {
        guard let v = value(key) else { throw .generic("Parameter '\(key)' is missing") }
        guard let b = v.boolValue else { throw .generic("Parameter '\(key)' expects a boolean") }
        return b
    }
}
