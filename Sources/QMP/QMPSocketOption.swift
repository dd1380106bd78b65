/// `--qmp unix:PATH,server=on,wait=off` (QEMU's chardev spelling). swiftvmm is always the
/// server and never waits for a client before starting, so `server` must be on (or
/// absent) and `wait` off (or absent); anything else is refused with the reason.
public enum QMPSocketOption {
    public static func parse(_ text: String) throws(QMPError) -> String {
        guard text.hasPrefix("unix:") else {
            throw .generic("expected unix:PATH[,server=on][,wait=off] (only unix sockets are supported)")
        }
        let parts = text.dropFirst(5).split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let path = parts.first, !path.isEmpty else { throw .generic("the socket path is empty") }
        for option in parts.dropFirst() {
            switch option {
            case "server", "server=on", "wait=off", "nowait": continue
            case "server=off": throw .generic("server=off: swiftvmm is always the QMP server")
            case "wait=on", "wait": throw .generic("wait=on: swiftvmm never waits for a QMP client before starting")
            default: throw .generic("unknown option '\(option)' (server=on and wait=off are accepted)")
            }
        }
        return path
    }
}
