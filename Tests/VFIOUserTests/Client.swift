#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Foundation
@testable import VFIOUser
import VMMCore

/// A vfio-user client written from the spec for the tests: sends commands (with
/// descriptors) and reads replies, as QEMU's hw/vfio-user does.
final class TestClient {
    let fd: Int32
    private var nextID: UInt16 = 1

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        guard clinux_sockaddr_un(&addr, path) == 0 else { throw ClientError("path") }
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard r == 0 else { throw ClientError("connect: \(errno)") }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    struct Reply {
        let header: VFIOUserHeader
        let payload: [UInt8]
        var isError: Bool { header.flags.contains(.error) }
        /// Little-endian field at `at` (bytes past the payload read as 0).
        func u32(_ at: Int) -> UInt32 { (0 ..< 4).reduce(0) { $0 | UInt32(byte(at + $1)) << (8 * $1) } }
        func u64(_ at: Int) -> UInt64 { (0 ..< 8).reduce(0) { $0 | UInt64(byte(at + $1)) << (8 * $1) } }
        private func byte(_ i: Int) -> UInt8 { i < payload.count ? payload[i] : 0 }
    }

    /// Sends raw bytes (for malformed messages).
    func sendRaw(_ bytes: [UInt8], fds: [Int32] = []) {
        _ = bytes.withUnsafeBytes { raw in fds.withUnsafeBufferPointer { f in
            clinux_send_with_fds(fd, raw.baseAddress, raw.count, f.baseAddress, Int32(f.count))
        } }
    }

    func send(_ command: VFIOUserCommand, _ payload: [UInt8], fds: [Int32] = [], noReply: Bool = false) -> UInt16 {
        let id = nextID
        nextID &+= 1
        let h = VFIOUserHeader(messageID: id, command: command.rawValue, messageSize: UInt32(16 + payload.count),
                               flags: noReply ? .noReply : [])
        sendRaw(h.encoded() + payload, fds: fds)
        return id
    }

    func receive() throws -> Reply {
        var header = [UInt8](repeating: 0, count: 16)
        try readExactly(&header)
        let h = try VFIOUserHeader.decode(header)
        guard h.messageSize >= 16 else { throw ClientError("reply size \(h.messageSize)") }
        var payload = [UInt8](repeating: 0, count: Int(h.messageSize) - 16)
        if !payload.isEmpty { try readExactly(&payload) }
        return Reply(header: h, payload: payload)
    }

    func call(_ command: VFIOUserCommand, _ payload: [UInt8], fds: [Int32] = []) throws -> Reply {
        let id = send(command, payload, fds: fds)
        let r = try receive()
        guard r.header.messageID == id else { throw ClientError("reply id \(r.header.messageID), expected \(id)") }
        return r
    }

    private func readExactly(_ buffer: inout [UInt8]) throws {
        var done = 0
        while done < buffer.count {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) }
            guard n > 0 else { throw ClientError("read: \(n) errno \(errno)") }
            done += n
        }
    }

    // MARK: Commands

    func version() throws -> Reply {
        try call(.version, le16(0) + le16(0) + Array("{\"capabilities\":{\"max_msg_fds\":16}}".utf8) + [0])
    }

    func regionRead(_ region: UInt32, _ offset: UInt64, _ count: UInt32) throws -> Reply {
        try call(.regionRead, le64(offset) + le32(region) + le32(count))
    }

    func regionWrite(_ region: UInt32, _ offset: UInt64, _ data: [UInt8], posted: Bool = false) throws -> Reply? {
        let payload = le64(offset) + le32(region) + le32(UInt32(data.count)) + data
        if posted { _ = send(.regionWrite, payload, noReply: true); return nil }
        return try call(.regionWrite, payload)
    }

    func setIRQs(flags: UInt32, index: UInt32, start: UInt32, count: UInt32, fds: [Int32] = []) throws -> Reply {
        try call(.deviceSetIRQs, le32(20) + le32(flags) + le32(index) + le32(start) + le32(count), fds: fds)
    }

    func dmaMap(address: UInt64, size: UInt64, offset: UInt64 = 0, fd: Int32?, flags: UInt32 = 3) throws -> Reply {
        try call(.dmaMap, le32(32) + le32(flags) + le64(offset) + le64(address) + le64(size), fds: fd.map { [$0] } ?? [])
    }

    /// `flags` 2 (VFIO_DMA_UNMAP_FLAG_ALL) with address and size 0 unmaps everything.
    func dmaUnmap(address: UInt64, size: UInt64, flags: UInt32 = 0) throws -> Reply {
        try call(.dmaUnmap, le32(24) + le32(flags) + le64(address) + le64(size))
    }
}

struct ClientError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
func le32(_ v: UInt32) -> [UInt8] { (0 ..< 4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
func le64(_ v: UInt64) -> [UInt8] { (0 ..< 8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

/// Guest RAM as QEMU's memory-backend-memfd makes it: a sealed memfd.
func sealedMemfd(size: Int, seal: Bool = true) -> Int32 {
    let fd = clinux_memfd_create("test-ram", 0x0002 /* MFD_ALLOW_SEALING */)
    ftruncate(fd, off_t(size))
    if seal { _ = fcntl(fd, 1024 + 9 /* F_ADD_SEALS */, Int32(0x0002 | 0x0004) /* SHRINK | GROW */) }
    return fd
}

/// An eventfd and a way to read how often it fired (0 when it did not within `seconds`:
/// interrupts reach the client from the server's signalling thread, a little later
/// than the reply to the access that raised them).
func makeEventFD() -> Int32 { eventfd(0, Int32(EFD_NONBLOCK)) }
/// What a hostile client does to an eventfd it shares with the server: clears O_NONBLOCK
/// (the open file is shared) and fills the counter, so the server's next write blocks.
/// False when either step failed.
func makeBlocking(_ fd: Int32) -> Bool {
    var full: UInt64 = 0xFFFF_FFFF_FFFF_FFFE
    return fcntl(fd, F_SETFL, 0) == 0 && write(fd, &full, 8) == 8
}
func drain(_ fd: Int32, within seconds: Double = 2) -> UInt64 {
    var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    guard poll(&ready, 1, Int32(seconds * 1000)) == 1 else { return 0 }
    var v: UInt64 = 0
    return read(fd, &v, 8) == 8 ? v : 0
}
