#if canImport(Glibc)
import Glibc
#endif
import BenchSupport
import Sandbox
import VMMNet

/// swiftvmm-bench: the real-backend side of the benchmarks of issue 7 (see Docs/performance.md),
/// the runs Tools/bench/run sets next to the raw C programs. The in-memory datapath and the
/// micro-benchmarks are package-benchmark benchmarks now (Benchmarks/Benchmarks/SwiftVMMBenchmarks,
/// `swift package --package-path Benchmarks benchmark`).
///   swiftvmm-bench frames DIR [addr…]     writes the TX frames (vnet header + frame) for the raw C programs
///   swiftvmm-bench backend --device virtio-net|e1000 --direction tx|rx --size 64|1500|9000|tso64k
///                          --net tap:NAME|vde:URL|user --seconds S --key KEY [--sandbox on|off|log] [addr…]
///                          --sandbox on: the I/O loop and the sending thread run under swiftvmm's
///                          seccomp lists (io-loop and vcpu roles), to measure what they cost
///   swiftvmm-bench soak --seconds S [--batch N] [--pause-us U] --virtio-net NET[@ADDR] --e1000 NET[@ADDR]
///                          both NICs at once (Soak.swift); ADDR = devmac,devip,peermac,peerip
///   swiftvmm-bench profile NAME [N]       runs one in-memory workload (a package-benchmark name,
///                          mem.virtio.rx-mrg.1500 …) for N operations (default 1,000,000) and
///                          nothing else, under `perf record` or `valgrind --tool=callgrind`
/// addr: --device-mac M --peer-mac M --device-ip A --peer-ip A --port P
/// Output: a readable line per result and `BENCH key value` lines for Tools/bench/run.
func parseOptions(_ args: ArraySlice<String>) throws -> [String: String] {
    var out: [String: String] = [:]
    var i = args.startIndex
    while i < args.endIndex {
        let k = args[i]
        guard k.hasPrefix("--"), i + 1 < args.endIndex else { throw BenchError.usage("expected --key value, got '\(k)'") }
        out[String(k.dropFirst(2))] = args[i + 1]
        i += 2
    }
    return out
}

func addressing(_ o: [String: String]) throws -> FrameAddressing {
    var a = FrameAddressing()
    if let v = o["device-mac"] { guard let m = FrameAddressing.parseMAC(v) else { throw BenchError.usage("--device-mac '\(v)'") }; a.deviceMAC = m }
    if let v = o["peer-mac"] { guard let m = FrameAddressing.parseMAC(v) else { throw BenchError.usage("--peer-mac '\(v)'") }; a.peerMAC = m }
    if let v = o["device-ip"] { guard let ip = FrameAddressing.parseIPv4(v) else { throw BenchError.usage("--device-ip '\(v)'") }; a.deviceIP = ip }
    if let v = o["peer-ip"] { guard let ip = FrameAddressing.parseIPv4(v) else { throw BenchError.usage("--peer-ip '\(v)'") }; a.peerIP = ip }
    if let v = o["port"] { guard let p = UInt16(v) else { throw BenchError.usage("--port '\(v)'") }; a.port = p }
    return a
}

/// Writes `tx-<size>.bin` (device → peer, as the Swift TX benchmark sends it) and
/// `rx-<size>.bin` (peer → device) for each size: the 12-byte virtio-net header the
/// device would exchange with a TAP, then the frame.
func writeFrames(directory: String, addressing a: FrameAddressing) throws {
    for size in FrameSize.allCases {
        for towardDevice in [false, true] {
            let frame = a.frame(size, towardDevice: towardDevice)
            var header = [UInt8](repeating: 0, count: VirtioNetHeader.size)
            header.withUnsafeMutableBytes { (size == .tso ? TSO.header : VirtioNetHeader()).write(to: $0) }
            let bytes = header + frame
            let path = "\(directory)/\(towardDevice ? "rx" : "tx")-\(size.key).bin"
            guard let f = fopen(path, "wb") else { throw BenchError.setup("cannot write \(path)") }
            defer { fclose(f) }
            guard bytes.withUnsafeBytes({ fwrite($0.baseAddress, 1, $0.count, f) }) == bytes.count else {
                throw BenchError.setup("short write to \(path)")
            }
        }
    }
}

/// `profile NAME [N]`: the workload is built, warmed with 10,000 operations, then run for
/// N; prints the time per operation so a profile can be matched to the benchmark.
func profile(_ args: ArraySlice<String>) throws {
    let names = WorkloadCatalog.entries.map(\.name)
    guard let name = args.first, let entry = WorkloadCatalog.entry(named: name) else {
        throw BenchError.usage("profile NAME [N], NAME one of: \(names.joined(separator: " "))")
    }
    let count = try args.dropFirst().first.map { v -> Int in
        guard let n = Int(v), n > 0, n <= 1_000_000_000 else { throw BenchError.usage("profile: N '\(v)' is not 1…1000000000") }
        return n
    } ?? 1_000_000
    let workload = try entry.make()
    defer { entry.teardown() }
    workload.run(10_000)
    let start = monotonicNanoseconds()
    workload.run(count)
    let elapsed = monotonicNanoseconds() - start
    if let failure = workload.failure() { throw BenchError.setup(failure) }
    print("\(name): \(count) operations, \(Double(elapsed) / Double(count)) ns each")
}

func main() -> Int32 {
    let args = CommandLine.arguments.dropFirst()
    guard let command = args.first else {
        print("usage: swiftvmm-bench frames DIR [addr…] | backend --device … --direction … --size … --net … --seconds … --key … | soak … | profile NAME [N]")
        return 2
    }
    do {
        switch command {
        case "memory", "micro":
            throw BenchError.usage("'\(command)' moved to package-benchmark: swift package --package-path Benchmarks benchmark --filter '\(command == "memory" ? "mem" : "micro")\\..*' (Docs/performance.md)")
        case "frames":
            guard args.count >= 2 else { throw BenchError.usage("frames DIR [addr…]") }
            let dir = args[args.startIndex + 1]
            try writeFrames(directory: dir, addressing: addressing(parseOptions(args.dropFirst(2))))
        case "backend":
            let o = try parseOptions(args.dropFirst())
            guard let d = o["device"].flatMap(RealBackendDatapath.Device.init(rawValue:)),
                  let dir = o["direction"].flatMap(RealBackendDatapath.Direction.init(rawValue:)),
                  let size = o["size"].flatMap(FrameSize.parse), let net = o["net"], let key = o["key"]
            else { throw BenchError.usage("backend needs --device virtio-net|e1000 --direction tx|rx --size 64|1500|9000|tso64k --net SPEC --key KEY") }
            let seconds = o["seconds"].flatMap(Double.init) ?? 2
            guard let sandbox = Sandbox.Mode(rawValue: o["sandbox"] ?? "off") else { throw BenchError.usage("--sandbox on|off|log") }
            try RealBackendDatapath(device: d, direction: dir, size: size, net: net, seconds: seconds,
                                    addressing: addressing(o), key: key, sandbox: sandbox).run()
        case "soak":
            let o = try parseOptions(args.dropFirst())
            var specs: [(device: RealBackendDatapath.Device, net: String, addressing: FrameAddressing)] = []
            for device in [RealBackendDatapath.Device.virtioNet, .e1000] {
                guard let v = o[device.rawValue] else { continue }
                let parts = v.split(separator: "@", maxSplits: 1).map(String.init)
                var a = FrameAddressing()
                if parts.count == 2 {
                    let f = parts[1].split(separator: ",").map(String.init)
                    guard f.count == 4 else { throw BenchError.usage("--\(device.rawValue) NET@devmac,devip,peermac,peerip") }
                    a = try addressing(["device-mac": f[0], "device-ip": f[1], "peer-mac": f[2], "peer-ip": f[3]])
                }
                specs.append((device, parts[0], a))
            }
            guard !specs.isEmpty else { throw BenchError.usage("soak needs --virtio-net NET and/or --e1000 NET") }
            try Soak(seconds: o["seconds"].flatMap(Double.init) ?? 10, batch: o["batch"].flatMap(Int.init) ?? 16,
                     pauseMicroseconds: o["pause-us"].flatMap(Int.init) ?? 500, specs: specs).run()
        case "profile":
            try profile(args.dropFirst())
        default:
            throw BenchError.usage("unknown command '\(command)'")
        }
    } catch {
        let message = "swiftvmm-bench: \(error)\n"
        _ = message.withCString { write(2, $0, strlen($0)) }
        return 1
    }
    return 0
}

exit(main())
