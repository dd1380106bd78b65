import VMMCore
import VMMTestKit

/// Guest memory as a driver sees it: host views of ranges the bench allocated, written
/// with plain little-endian stores (the guest side is not what is being measured).
package struct GuestView {
    package let address: GuestAddress
    package let host: UnsafeMutableRawPointer

    package init(machine: TestMachine, size: UInt64, align: UInt64 = 4096) throws {
        address = machine.allocator.alloc(size: size, align: align)
        guard let base = try machine.memory.hostRange(address, length: size).baseAddress else {
            throw BenchError.setup("no host mapping for guest range \(address.raw)+\(size)")
        }
        host = base
    }

    @inline(__always) package func store<T: FixedWidthInteger>(_ v: T, at offset: Int) {
        host.storeBytes(of: v.littleEndian, toByteOffset: offset, as: T.self)
    }

    @inline(__always) package func load<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        T(littleEndian: host.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    package func copy(_ bytes: [UInt8], at offset: Int) {
        bytes.withUnsafeBytes { (host + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    package func guestAddress(_ offset: Int) -> UInt64 { address.raw + UInt64(offset) }
}

package enum BenchError: Error, CustomStringConvertible {
    case setup(String)
    case usage(String)
    package var description: String {
        switch self {
        case let .setup(m): "setup failed: \(m)"
        case let .usage(m): m
        }
    }
}
