import KVM

/// Parses `--memory` values: a number with an optional K/M/G/T suffix (binary units);
/// a bare number means MiB, as in bhyve's `-m`.
enum MemorySize {
    static func parse(_ text: String) throws(UserInputError) -> UInt64 {
        let bad = UserInputError("--memory '\(text)': expected a size such as 512M or 2G")
        var digits = Substring(text)
        var shift: UInt64 = 20
        if let last = digits.last, last.isLetter {
            switch last.uppercased() {
            case "K": shift = 10
            case "M": shift = 20
            case "G": shift = 30
            case "T": shift = 40
            default: throw bad
            }
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { throw bad }
        guard let n = UInt64(digits) else { throw UserInputError("--memory '\(text)' is too large") }
        let (bytes, overflow) = n.multipliedReportingOverflow(by: UInt64(1) << shift)
        guard !overflow else { throw UserInputError("--memory '\(text)' is too large") }
        return bytes
    }

    /// `--memory` for a guest in the PC layout (`run`, `qtest`): parsed, and within what
    /// the layout holds below the 64-bit PCI window.
    static func parseGuestRAM(_ text: String) throws(UserInputError) -> UInt64 {
        let size = try parse(text)
        // KVM maps guest memory in whole pages (KVM_SET_USER_MEMORY_REGION refuses the rest).
        guard size % 4096 == 0 else { throw UserInputError("--memory '\(text)' is not a whole number of 4 KiB pages") }
        guard (PlatformLayout.minimumMemory ... PlatformLayout.maximumMemory).contains(size) else {
            throw UserInputError("--memory '\(text)' is out of range (\(PlatformLayout.minimumMemory >> 20)M to \(PlatformLayout.maximumMemory >> 30)G)")
        }
        return size
    }
}
