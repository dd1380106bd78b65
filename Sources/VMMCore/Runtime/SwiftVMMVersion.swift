/// swiftvmm's release version (the CLI's --version, QMP's query-version).
public enum SwiftVMMVersion {
    public static let major = 1, minor = 0, micro = 0
    public static var text: String { "\(major).\(minor).\(micro)" }
}
