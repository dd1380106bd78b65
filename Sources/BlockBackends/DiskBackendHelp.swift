import VMMCore

/// The disk options every block device accepts (taken by `DiskBackendFactory`), for
/// `swiftvmm backends` and a device's `optionHelp`.
public enum DiskBackendHelp {
    public static let options: [OptionHelp] = [
        OptionHelp("disk", "PATH", "a raw image file or block device (required; it must exist: truncate -s 8G disk.img)"),
        OptionHelp("disk", "nbd://HOST[:PORT]/EXPORT", "an NBD export over TCP (libnbd); reconnects when the server goes away"),
        OptionHelp("disk", "nbd+unix:///EXPORT?socket=PATH", "an NBD export over a unix socket"),
        OptionHelp("readonly", "on|off", "refuse writes: the guest sees a read-only disk (default off; an NBD export the server marks read-only is read-only anyway)"),
        OptionHelp("direct", "on|off", "(files) O_DIRECT: bypass the host page cache (default off)"),
        OptionHelp("block-size", "512|4096", "the logical block size the guest sees (default 512, or what the disk needs)"),
        OptionHelp("reconnect-timeout", "SECONDS", "(NBD) how long requests wait for a lost server before failing (default 30, 0-3600)"),
        OptionHelp("request-timeout", "SECONDS", "(NBD) how long a connected server may leave a request unanswered before the connection is dropped and requests are re-sent, five times at most (default 0 = never, 0-3600)"),
    ]
}
