#if canImport(Glibc)
import Glibc
#endif
import CLinux

/// An opened disk file or block device and what it can do. Opening never creates or
/// changes anything: a missing file is an error (a typo must not become an empty disk).
struct FileDisk {
    enum Kind { case regularFile, blockDevice }

    let fd: Int32
    let kind: Kind
    let size: UInt64
    /// The device's own sector size (block devices), else nil.
    let deviceSectorSize: UInt32?
    /// `st_blksize`: the host's preferred I/O size, the physical block size hint.
    let preferredIOSize: Int
    let canPunchHoles: Bool

    static func open(path: String, readOnly: Bool, direct: Bool) throws(DiskBackendError) -> FileDisk {
        var st = stat()
        guard stat(path, &st) == 0 else {
            let e = errno
            throw .system(option: "disk", value: path, call: "stat", errno: e,
                          hint: e == ENOENT ? "disks are not created for you: truncate -s 8G \(path)" : nil)
        }
        let type = st.st_mode & S_IFMT
        let kind: Kind
        switch type {
        case S_IFREG: kind = .regularFile
        case S_IFBLK: kind = .blockDevice
        case S_IFDIR: throw .notADisk(path: path, reason: "is a directory, not a disk image")
        default: throw .notADisk(path: path, reason: "is not a regular file or a block device")
        }

        // O_NONBLOCK until the opened descriptor is checked: a path swapped for a FIFO
        // after the stat above would otherwise block the open for ever.
        var flags = (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK
        if direct { flags |= CLINUX_O_DIRECT }
        let fd = Glibc.open(path, flags)
        guard fd >= 0 else {
            let e = errno
            // open(2) answers EINVAL for O_DIRECT on a filesystem without it: name `direct=` then.
            if e == EINVAL && direct {
                throw .system(option: "direct", value: "on", call: "open(\(path), O_DIRECT)", errno: e,
                              hint: "the filesystem does not support O_DIRECT; use direct=off")
            }
            let hint: String? = switch e {
            case EACCES where !readOnly, EPERM where !readOnly, EROFS where !readOnly: "no write access; readonly=on opens it read-only"
            default: nil
            }
            throw .system(option: "disk", value: path, call: "open", errno: e, hint: hint)
        }
        do throws(DiskBackendError) {
            return try probe(fd: fd, path: path, kind: kind, readOnly: readOnly)
        } catch {
            close(fd)
            throw error
        }
    }

    /// The byte a QEMU that may write the image holds a lock on (file-posix.c).
    static let qemuWriterByte: Int64 = 101

    private static func probe(fd: Int32, path: String, kind: Kind, readOnly: Bool) throws(DiskBackendError) -> FileDisk {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .system(option: "disk", value: path, call: "fstat", errno: errno, hint: nil) }
        // What was opened, not what `stat` saw: the path may have changed in between.
        guard st.st_mode & S_IFMT == (kind == .regularFile ? S_IFREG : S_IFBLK) else {
            throw .notADisk(path: path, reason: "changed while it was opened")
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        // Two writers on one image corrupt it: a disk opened read-write is locked for this
        // process alone, a read-only one shared among readers, as QEMU locks its images
        // (file-posix.c, locking=auto: a filesystem without OFD locks is used unlocked).
        if clinux_lock_whole_file(fd, readOnly ? 0 : 1) != 0 {
            let e = errno
            if e == EAGAIN || e == EACCES {
                throw .notADisk(path: path, reason: readOnly
                    ? "is in use read-write by another process (or another disk= of this one)"
                    : "is in use by another process (or another disk= of this one); it is locked")
            }
        } else if readOnly, clinux_byte_is_range_locked(fd, Self.qemuWriterByte) == 1 {
            // QEMU's locks are shared ones on single bytes, which a shared lock over the
            // whole file does not meet: a QEMU writing the image holds byte 101
            // (RAW_LOCK_PERM_BASE 100 + BLK_PERM_WRITE's bit, file-posix.c), and refuses
            // readers that want no writer the same way ("Failed to get shared 'write' lock").
            // Other readers' locks here cover the whole file and do not count.
            throw .notADisk(path: path, reason: "is in use read-write by another process (a QEMU writing it)")
        }
        let preferred = Int(clamping: st.st_blksize)
        switch kind {
        case .regularFile:
            guard st.st_size >= 0 else { throw .notADisk(path: path, reason: "has a negative size") }
            let size = UInt64(st.st_size)
            return FileDisk(fd: fd, kind: kind, size: size, deviceSectorSize: nil, preferredIOSize: preferred,
                            canPunchHoles: !readOnly && probePunchHole(fd: fd, size: size))
        case .blockDevice:
            var size: UInt64 = 0
            guard clinux_block_device_size(fd, &size) == 0 else {
                throw .system(option: "disk", value: path, call: "ioctl(BLKGETSIZE64)", errno: errno, hint: nil)
            }
            var sector: Int32 = 0
            let sectorSize: UInt32? = clinux_block_device_sector_size(fd, &sector) == 0 ? UInt32(exactly: sector) : nil
            // Discard on a block device is BLKDISCARD's business and may not zero: not offered.
            return FileDisk(fd: fd, kind: kind, size: size, deviceSectorSize: sectorSize, preferredIOSize: preferred, canPunchHoles: false)
        }
    }

    /// Whether the filesystem deallocates ranges: punch a hole past the end of the file
    /// (KEEP_SIZE: the file and its data are unchanged) and see if it is refused.
    private static func probePunchHole(fd: Int32, size: UInt64) -> Bool {
        let aligned = (size / 4096 + 1) * 4096
        guard let offset = Int64(exactly: aligned) else { return false }
        return clinux_fallocate(fd, CLINUX_FALLOC_PUNCH_HOLE | CLINUX_FALLOC_KEEP_SIZE, offset, 4096) == 0
    }
}
