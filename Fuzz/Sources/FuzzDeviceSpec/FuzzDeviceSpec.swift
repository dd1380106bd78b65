import E1000
import FuzzSupport
import VirtioNet
import VMMCore
import VMMTestKit

/// Fuzz target 2: the device-list entry parser and the option takers devices use
/// (`--device e1000,net=tap:tap0,mac=…`, qtest device lists). User input: every failure
/// must be a typed `OptionError`, never a trap; what parses must survive a round trip.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDeviceSpec(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    // The first byte picks which takers run; the rest is the text a user typed.
    let plan = input.integer(UInt16.self)
    let text = String(decoding: input.rest(), as: UTF8.self)
    let spec: DeviceSpec
    do {
        spec = try DeviceSpec.parse(text)
    } catch {
        _ = error.description
        return 0
    }
    fuzzCheck(!spec.name.isEmpty && !spec.name.contains(","), "parsed an empty or comma name from \(text.debugDescription)")
    fuzzCheck(spec.options.pairs.allSatisfy { !$0.key.isEmpty && !$0.key.contains(",") && !$0.key.contains("=") },
              "bad key parsed from \(text.debugDescription)")

    // Round trip: writing the spec back out and parsing it again gives the same spec.
    let rewritten = ([spec.name] + spec.options.pairs.map { "\($0.key)=\($0.value)" }).joined(separator: ",")
    if let again = try? DeviceSpec.parse(rewritten) {
        fuzzCheck(again == spec, "round trip changed \(text.debugDescription) into \(rewritten.debugDescription)")
    } else {
        fuzzCheck(false, "round trip of \(text.debugDescription) does not parse: \(rewritten.debugDescription)")
    }

    // Registry lookup by any name answers with the type or a typed error.
    do { _ = try PCIDeviceRegistry([]).lookup(spec.name) } catch { _ = error.description }

    var options = spec.options
    let keys = options.pairs.map(\.key)
    for (i, key) in keys.enumerated() where options.has(key) {
        let pick = Int(truncatingIfNeeded: plan >> UInt16((i * 3) % 16)) & 7
        takeOne(&options, key: key, pick: pick)
        fuzzCheck(!options.has(key) || pick == 7, "taking '\(key)' left it behind")
    }
    do { try options.rejectUnknown() } catch { _ = error.description }

    // The NICs' own option takers, through the bus as `--device` does it (net=memory only:
    // the test machine's backend factory, so no TAP or socket is ever opened).
    if spec.name == "e1000" || spec.name == "virtio-net", !spec.options.pairs.contains(where: { $0.key == "net" && $0.value != "memory" }) {
        let type: any PCIDevice.Type = spec.name == "e1000" ? E1000Device.self : VirtioNetDevice.self
        if let machine = try? TestMachine(memorySize: 1 << 20) {
            var nicOptions = spec.options
            do { _ = try machine.bus.add(type, options: &nicOptions) } catch { _ = "\(error)" }
        }
    }

    // MAC addresses: whatever parses prints back to text that parses to the same address.
    for pair in spec.options.pairs {
        if let mac = MACAddress(pair.value) {
            fuzzCheck(MACAddress(mac.description) == mac, "MAC \(pair.value.debugDescription) does not round trip")
            fuzzCheck(mac.description.lowercased() == pair.value.lowercased(), "MAC \(pair.value.debugDescription) printed as \(mac.description)")
        }
    }
    return 0
}

private func takeOne(_ options: inout DeviceOptions, key: String, pick: Int) {
    do {
        switch pick {
        case 0: _ = try options.take(key)
        case 1: _ = options.takeAll(key)
        case 2: _ = try options.takeInteger(key, in: UInt8.min ... UInt8.max)
        case 3: _ = try options.takeInteger(key, in: Int64.min ... Int64.max)
        case 4: _ = try options.takeInteger(key, in: 1 ... 31 as ClosedRange<Int>)
        case 5: _ = try options.takeBool(key)
        case 6: _ = try options.takeMAC(key)
        default: break // leave it for rejectUnknown
        }
    } catch {
        _ = error.description // messages are built from user text: must not trap either
    }
}
