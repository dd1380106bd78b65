import VMMCore

/// What a device does with a virtqueue, whatever its layout (split §2.7 or packed §2.8):
/// take chains, give them back, and manage notifications both ways. The transport owns
/// the queues; a device gets the active one with `VirtioPCITransport.queue(_:)`.
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

extension SplitVirtqueue: Virtqueue {}

extension GuestMemory {
    /// A ring area the driver placed at `address`: aligned as the spec requires (§2.7 table
    /// "Virtqueue Part Alignment", §2.8.10) and wholly inside one RAM region, or an error
    /// naming the part, which puts the device in NEEDS_RESET.
    func mapRing(_ part: String, _ address: GuestAddress, length: UInt64, align: UInt64) throws(VirtqueueError) -> UnsafeMutableRawBufferPointer {
        guard address.raw & (align - 1) == 0 else { throw .misaligned(part: part, address: address.raw) }
        do {
            return try hostRange(address, length: length)
        } catch {
            throw .ringNotInRAM(part: part, address: address.raw, length: length)
        }
    }
}

/// Ring fields are little-endian in virtio 1.x (§2.4), whatever the host's byte order.
func ringLoad16(_ ring: UnsafeMutableRawBufferPointer, _ offset: Int) -> UInt16 {
    UInt16(littleEndian: ring.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
}

func ringStore16(_ ring: UnsafeMutableRawBufferPointer, _ offset: Int, _ value: UInt16) {
    ring.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt16.self)
}
