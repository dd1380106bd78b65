import VMMCore
import VMMNet

/// One device in a `TestMachine`, driven through the machine's buses as a guest does.
public final class TestDevice: @unchecked Sendable {
    public unowned let machine: TestMachine
    public let function: PCIFunction
    /// The backend the device was given (nil if the test supplied its own factory).
    public let endpoint: InMemoryEndpoint?
    public private(set) var barAddresses: [Int: UInt64] = [:]

    init(machine: TestMachine, function: PCIFunction, endpoint: InMemoryEndpoint?) {
        self.machine = machine
        self.function = function
        self.endpoint = endpoint
    }

    public var slot: Int { function.slot }

    /// Sizes and places the BARs through config cycles and turns on decode + bus mastering.
    public func enable() { barAddresses = machine.place(slot: slot) }

    // MARK: Config space through 0xCF8/0xCFC

    public func configRead(_ offset: Int, size: Int = 4) -> UInt32 {
        machine.ports.read(slot: slot, offset: offset, size: size)
    }

    public func configWrite(_ offset: Int, size: Int = 4, value: UInt32) {
        machine.ports.write(slot: slot, offset: offset, size: size, value: value)
    }

    /// Walks the capability list; returns the offset of capability `id`.
    public func capability(_ id: UInt8) -> Int? {
        var p = Int(configRead(0x34, size: 1)) & 0xFC
        var hops = 0
        while p != 0 && hops < 48 {
            if UInt8(configRead(p, size: 1)) == id { return p }
            p = Int(configRead(p + 1, size: 1)) & 0xFC
            hops += 1
        }
        return nil
    }

    // MARK: BAR access through the address spaces

    private func space(_ bar: Int) -> AddressSpace {
        function.config.bars[bar]?.isIO == true ? machine.pio : machine.mmio
    }

    /// Address of BAR `bar` as currently programmed.
    public func barAddress(_ bar: Int) -> UInt64 { function.config.barAddress(bar) ?? 0 }

    public func read(bar: Int, offset: UInt64, size: Int) -> UInt64 {
        space(bar).read(barAddress(bar) + offset, size: size)
    }

    public func write(bar: Int, offset: UInt64, size: Int, value: UInt64) {
        space(bar).write(barAddress(bar) + offset, size: size, value: value)
    }

    public func read8(bar: Int, offset: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: read(bar: bar, offset: offset, size: 1)) }
    public func read16(bar: Int, offset: UInt64) -> UInt16 { UInt16(truncatingIfNeeded: read(bar: bar, offset: offset, size: 2)) }
    public func read32(bar: Int, offset: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: read(bar: bar, offset: offset, size: 4)) }
    public func read64(bar: Int, offset: UInt64) -> UInt64 { read(bar: bar, offset: offset, size: 8) }
    public func write8(bar: Int, offset: UInt64, _ v: UInt8) { write(bar: bar, offset: offset, size: 1, value: UInt64(v)) }
    public func write16(bar: Int, offset: UInt64, _ v: UInt16) { write(bar: bar, offset: offset, size: 2, value: UInt64(v)) }
    public func write32(bar: Int, offset: UInt64, _ v: UInt32) { write(bar: bar, offset: offset, size: 4, value: UInt64(v)) }
    public func write64(bar: Int, offset: UInt64, _ v: UInt64) { write(bar: bar, offset: offset, size: 8, value: v) }

    // MARK: MSI-X as a driver programs it

    /// Programs MSI-X entry `vector` with `address`/`data`, unmasked; enables MSI-X.
    public func programMSIX(vector: Int, address: UInt64 = 0xFEE0_0000, data: UInt32) {
        guard let cap = capability(0x11) else { return }
        let tableInfo = configRead(cap + 4)
        let bar = Int(tableInfo & 7)
        let base = UInt64(tableInfo & ~7) + UInt64(vector) * 16
        write32(bar: bar, offset: base, UInt32(truncatingIfNeeded: address))
        write32(bar: bar, offset: base + 4, UInt32(truncatingIfNeeded: address >> 32))
        write32(bar: bar, offset: base + 8, data)
        write32(bar: bar, offset: base + 12, 0)
        let control = configRead(cap + 2, size: 2)
        configWrite(cap + 2, size: 2, value: (control | 0x8000) & ~0x4000)
    }
}
