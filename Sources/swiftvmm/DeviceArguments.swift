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
            requests.append(DeviceRequest(spec: try parse(spec: text, option: "--device", registry: registry), text: text))
        }
        for text in slots {
            guard let comma = text.firstIndex(of: ",") else {
                throw UserInputError("-s '\(text)': expected SLOT[:FUNCTION],NAME[,options]")
            }
            let location = text[..<comma]
            let rest = String(text[text.index(after: comma)...])
            let parts = location.split(separator: ":", omittingEmptySubsequences: false)
            guard (1 ... 2).contains(parts.count), let slot = Int(parts[0]), (0 ... 31).contains(slot),
                  let function = parts.count == 2 ? Int(parts[1]) : 0, (0 ... 7).contains(function)
            else {
                throw UserInputError("-s '\(text)': slot must be 0-31 and function 0-7 (SLOT[:FUNCTION])")
            }
            let name = rest.split(separator: ",", maxSplits: 1).first.map(String.init) ?? ""
            if builtIn.contains(name) { continue }
            guard slot != 0 else { throw UserInputError("-s '\(text)': slot 0 is the host bridge") }
            let spec = try parse(spec: rest, option: "-s", registry: registry)
            requests.append(DeviceRequest(spec: spec, text: text, slot: slot, function: function))
        }
        var used: Set<[Int]> = []
        for r in requests {
            guard let slot = r.slot else { continue }
            guard used.insert([slot, r.function]).inserted else {
                throw UserInputError("-s '\(r.text)': PCI slot \(slot):\(r.function) is used twice")
            }
        }
        return requests
    }

    private static func parse(spec text: String, option: String, registry: PCIDeviceRegistry) throws(UserInputError) -> DeviceSpec {
        do {
            let spec = try DeviceSpec.parse(text)
            _ = try registry.lookup(spec.name)
            return spec
        } catch {
            throw UserInputError("\(option) '\(text)': \(error)")
        }
    }
}
