import VMMCore

/// What a device does with a virtqueue, whatever its layout (split §2.7 or packed §2.8):
/// take chains, give them back, and manage notifications both ways. The transport builds
/// the ring when the driver enables the queue; a device gets it with
/// `VirtioTransport.queue(_:)`.
public protocol Virtqueue: AnyObject {
    var index: Int { get }
    /// Entries in the ring as the driver configured it.
    var size: UInt16 { get }
    var isEnabled: Bool { get }
    /// Used entries added but not yet visible to the driver.
    var pendingUsed: UInt16 { get }
    /// Takes the next available chain into `chain`; false when there is none. Throws when
    /// the ring is broken (the transport then sets DEVICE_NEEDS_RESET).
    func pop(into chain: inout DescriptorChain) throws(VirtqueueError) -> Bool
    /// Takes the next chain when it is a single device-writable descriptor (no NEXT, no
    /// INDIRECT), the shape Linux's virtio-net posts to its receive queues
    /// (`add_recvbuf_mergeable`, `add_recvbuf_small`): its head and buffer, with no walk
    /// into a `DescriptorChain`. Nil, and nothing taken, when no chain is available or the
    /// next has another shape; `pop(into:)` then takes it, with every check of a walk.
    func popWritableBuffer() throws(VirtqueueError) -> (head: UInt16, buffer: GuestBuffer)?
    /// The same for a single device-readable descriptor: the shape of Linux's virtio-net
    /// transmit chain for a linear packet, header pushed in front of the frame in one
    /// buffer (virtio_net.c `xmit_skb`, `can_push`; a packet with page fragments goes as
    /// an indirect table, or a chain without INDIRECT_DESC, which `pop(into:)` walks).
    func popReadableBuffer() throws(VirtqueueError) -> (head: UInt16, buffer: GuestBuffer)?
    /// Gives back the last `count` chains taken and not yet returned.
    func unpop(_ count: UInt16)
    /// Returns the chain `head` (its buffer ID for packed rings) with `length` bytes
    /// written, in the order chains were taken; visible at `publishUsed()`.
    func addUsed(head: UInt16, length: UInt32) throws(VirtqueueError)
    /// Makes the added used entries visible to the driver.
    func publishUsed()
    /// Whether the driver wants an interrupt for what was published since the last one.
    func needsNotification() -> Bool
    /// Asks for driver notifications again; true when chains arrived meanwhile.
    func enableNotifications() -> Bool
    /// Asks to be notified only when the driver adds chains beyond those available now
    /// (which were too few for the device's need); true when some arrived meanwhile. A
    /// device that gave chains back with `unpop` waits with this, or it would see its own
    /// chains as new ones and spin (QEMU's virtqueue_avail_bytes serves the same end).
    func enableNotificationsForMore() -> Bool
    /// Tells the driver that notifications are not needed for now.
    func disableNotifications()
}

/// A ring as the transport holds it: a virtqueue it can also stop.
protocol TransportRing: Virtqueue {
    /// Stops using the rings after an error, until the driver resets the device.
    func disable()
}

extension SplitVirtqueue: TransportRing {}
extension PackedVirtqueue: TransportRing {}
