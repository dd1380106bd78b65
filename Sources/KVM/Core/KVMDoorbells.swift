#if canImport(Glibc)
import Glibc
#endif
import CKVM
import CLinux
import Logging
import VMMCore

/// Doorbells on ioeventfd: a guest write to a registered notify address signals an eventfd
/// inside KVM (no exit to userspace); the I/O loop reads it and calls the device's handler.
public final class KVMDoorbells: DoorbellAccelerator, @unchecked Sendable {
    private let vm: KVMVirtualMachine
    private let loop: EventLoop
    private let logger: Logger

    final class Token {
        let eventFD: Int32
        let registration: IORegistration
        let space: AddressSpaceKind
        let address: UInt64
        let size: Int
        let value: UInt64?
        let handler: @Sendable () -> Void
        init(eventFD: Int32, registration: IORegistration, space: AddressSpaceKind, address: UInt64, size: Int, value: UInt64?,
             handler: @escaping @Sendable () -> Void) {
            self.eventFD = eventFD; self.registration = registration; self.space = space
            self.address = address; self.size = size; self.value = value; self.handler = handler
        }
    }

    public init(vm: KVMVirtualMachine, loop: EventLoop, logger: Logger) {
        self.vm = vm; self.loop = loop; self.logger = logger
    }

    public func attach(space: AddressSpaceKind, address: UInt64, size: Int, value: UInt64?,
                       handler: @escaping @Sendable () -> Void) -> AnyObject? {
        guard [1, 2, 4, 8].contains(size) else { return nil }
        let efd = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard efd >= 0 else { return nil }
        let registration: IORegistration
        do {
            registration = try loop.register(fd: efd, events: .readable) { _ in
                var count: UInt64 = 0
                if read(efd, &count, 8) == 8 { handler() }
            }
        } catch {
            close(efd)
            return nil
        }
        do {
            try vm.ioeventfd(eventFD: efd, space: space, address: address, size: size, value: value)
        } catch {
            logger.debug("doorbell at 0x\(String(address, radix: 16)) stays on the exit path: \(error)")
            loop.unregister(registration)
            close(efd)
            return nil
        }
        return Token(eventFD: efd, registration: registration, space: space, address: address, size: size, value: value,
                     handler: handler)
    }

    public func detach(_ token: AnyObject) {
        guard let t = token as? Token else { return }
        try? vm.ioeventfd(eventFD: t.eventFD, space: t.space, address: t.address, size: t.size, value: t.value, deassign: true)
        loop.unregister(t.registration)
        // A kick counted but not read yet is delivered, not lost with the eventfd. The fd
        // is closed on the loop, after any handler of the current epoll batch that may
        // still read it, so its number is not reused under that handler's feet.
        let efd = t.eventFD, handler = t.handler
        loop.execute {
            var count: UInt64 = 0
            let pending = read(efd, &count, 8) == 8
            close(efd)
            if pending { handler() }
        }
    }
}
