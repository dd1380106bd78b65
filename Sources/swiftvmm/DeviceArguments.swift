import KVM
import VMMCore

/// Turns `--device SPEC` and bhyve/hyperkit `-s SLOT[:FN],NAME[,opts]` arguments into
/// device requests, checking names, slots and duplicates before anything is created.
enum DeviceArguments {
    /// bhyve/hyperkit platform entries that this machine always has built in.
    static let builtIn: Set<String> = ["hostbridge", "amd_hostbridge", "lpc"]

    static func requests(devices: [String], slots: [String], registry: PCIDeviceRegistry) throws(UserInputError) -> [DeviceRequest] {
        var requests: [DeviceRequest] = []
        for text in devices {
            // `slot=N[:F]` places a --device like -s does (the qtest mode's spelling).
            var spec = try parse(spec: text, option: "--device")
            let slotText: String?
            do { slotText = try spec.options.take("slot") } catch { throw UserInputError("--device '\(text)': \(error)") }
            var location: (Int, Int)?
            if let slotText {
                guard let l = parseLocation(slotText) else {
                    throw UserInputError("--device '\(text)': slot must be 1-31 and function 0-7 (slot=N[:F])")
                }
                location = l
            }
            requests.append(DeviceRequest(spec: spec, text: "--device '\(text)'", slot: location?.0, function: location?.1 ?? 0))
        }
        for text in slots {
            guard let comma = text.firstIndex(of: ",") else {
                throw UserInputError("-s '\(text)': expected SLOT[:FUNCTION],NAME[,options]")
            }
            let rest = String(text[text.index(after: comma)...])
            guard let (slot, function) = parseLocation(text[..<comma]) else {
                throw UserInputError("-s '\(text)': slot must be 0-31 and function 0-7 (SLOT[:FUNCTION])")
            }
            let name = rest.split(separator: ",", maxSplits: 1).first.map(String.init) ?? ""
            if builtIn.contains(name) { continue }
            guard slot != 0 else { throw UserInputError("-s '\(text)': slot 0 is the host bridge") }
            let spec = try parse(spec: rest, option: "-s", quoting: text)
            requests.append(DeviceRequest(spec: spec, text: "-s '\(text)'", slot: slot, function: function))
        }
        var used: Set<[Int]> = []
        for r in requests {
            guard let slot = r.slot else { continue }
            guard used.insert([slot, r.function]).inserted else {
                throw UserInputError("\(r.text): PCI slot \(slot):\(r.function) is used twice")
            }
        }
        // A guest looks at functions 1-7 of a slot only when function 0 answers (Linux's
        // pci_scan_slot stops at an empty function 0: "must have zero function").
        for r in requests where r.function != 0 {
            guard let slot = r.slot, used.contains([slot, 0]) else {
                throw UserInputError("\(r.text): slot \(r.slot ?? 0) has no function 0, so a guest would never see function \(r.function)")
            }
        }
        for r in requests {
            do { _ = try registry.lookup(r.spec.name) } catch { throw UserInputError("\(r.text): \(error)") }
        }
        return requests
    }

    /// `SLOT[:FUNCTION]` with slot 0-31 and function 0-7.
    private static func parseLocation(_ text: Substring) -> (Int, Int)? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard (1 ... 2).contains(parts.count), let slot = Int(parts[0]), (0 ... 31).contains(slot),
              let function = parts.count == 2 ? Int(parts[1]) : 0, (0 ... 7).contains(function)
        else { return nil }
        return (slot, function)
    }

    private static func parseLocation(_ text: String) -> (Int, Int)? {
        guard let l = parseLocation(Substring(text)), l.0 != 0 else { return nil }
        return l
    }

    /// `quoting`: the whole argument, named in the error (for `-s`, the slot too).
    private static func parse(spec text: String, option: String, quoting argument: String? = nil) throws(UserInputError) -> DeviceSpec {
        do {
            return try DeviceSpec.parse(text)
        } catch {
            throw UserInputError("\(option) '\(argument ?? text)': \(error)")
        }
    }
}
