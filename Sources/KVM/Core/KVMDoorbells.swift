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

    public init(vm: KVMVirtualMachine, loop: EventLoop, logger: Logger) {
        self.vm = vm; self.loop = loop; self.logger = logger
    }

    public func makeDoorbell(size: Int, value: UInt64?, handler: @escaping @Sendable () -> Void) -> AcceleratedDoorbell? {
        guard [1, 2, 4, 8].contains(size) else { return nil }
        let made = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard made >= 0 else { return nil }
        let eventFD = OwnedEventFD(made)
        do {
            // The loop's handler holds the eventfd: it is closed when the last of the
            // doorbell and a handler still running in the loop's batch lets go, never
            // under that handler's feet.
            let registration = try loop.register(fd: made, events: .readable) { _ in
                var count: UInt64 = 0
                if read(eventFD.fd, &count, 8) == 8 { handler() }
            }
            return KVMDoorbell(vm: vm, loop: loop, logger: logger, eventFD: eventFD, registration: registration,
                               size: size, value: value)
        } catch {
            return nil
        }
    }
}

/// An eventfd closed when its last holder lets go.
final class OwnedEventFD: Sendable {
    let fd: Int32
    init(_ fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}

/// One ioeventfd-backed doorbell; it moves between addresses with its eventfd (and any
/// kick counted in it) kept.
final class KVMDoorbell: AcceleratedDoorbell, @unchecked Sendable {
    // Held, not borrowed: the doorbell is taken off KVM's bus and the loop when its
    // function goes, which may be after the bus let go of the accelerator. Neither holds a
    // doorbell back (the loop's handler holds only the eventfd and the device's handler).
    private let vm: KVMVirtualMachine
    private let loop: EventLoop
    private let logger: Logger
    private let eventFD: OwnedEventFD
    private let registration: IORegistration
    private let size: Int
    private let value: UInt64?
    /// Where KVM signals this doorbell now (nil: nowhere). Moved only under the device's lock.
    private var place: DoorbellPlace?

    init(vm: KVMVirtualMachine, loop: EventLoop, logger: Logger, eventFD: OwnedEventFD, registration: IORegistration,
         size: Int, value: UInt64?) {
        self.vm = vm; self.loop = loop; self.logger = logger
        self.eventFD = eventFD; self.registration = registration; self.size = size; self.value = value
    }

    func move(to new: DoorbellPlace?) -> Bool {
        guard new != place else { return true }
        if let old = place {
            try? vm.ioeventfd(eventFD: eventFD.fd, space: old.space, address: old.address, size: size, value: value, deassign: true)
            place = nil
        }
        guard let new else { return true }
        do {
            try vm.ioeventfd(eventFD: eventFD.fd, space: new.space, address: new.address, size: size, value: value)
            place = new
            return true
        } catch {
            logger.debug("doorbell at 0x\(String(new.address, radix: 16)) stays on the exit path: \(error)")
            // EEXIST: another device's doorbell has not left this place yet.
            if case let .ioctl(_, errno: e) = error, e == EEXIST { return false }
            return true
        }
    }

    deinit {
        if let old = place {
            try? vm.ioeventfd(eventFD: eventFD.fd, space: old.space, address: old.address, size: size, value: value, deassign: true)
        }
        loop.unregister(registration)
    }
}
