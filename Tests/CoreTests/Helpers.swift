import Testing
import VMMCore
import VMMTestKit

/// A test machine with one sample device, and the device object itself for white-box checks.
struct SampleRig {
    let machine: TestMachine
    let device: TestDevice
    let sample: SampleDevice

    init(options: String = "", slot: Int? = nil, enable: Bool = true) throws {
        machine = try TestMachine()
        (device, sample) = try Self.add(to: machine, options: options, slot: slot, enable: enable)
    }

    static func add(to machine: TestMachine, options: String = "", slot: Int? = nil,
                    enable: Bool = true) throws -> (TestDevice, SampleDevice) {
        let dev = try machine.add(SampleDevice.self, options: options, slot: slot, enable: enable)
        let sample = try #require(dev.function.device as? SampleDevice)
        return (dev, sample)
    }

    var command: UInt32 { device.configRead(0x04, size: 2) }
    func setCommand(_ value: UInt32) { device.configWrite(0x04, size: 2, value: value) }
}

let memoryDecode: UInt32 = 1 << 1, ioDecode: UInt32 = 1 << 0, busMaster: UInt32 = 1 << 2
let interruptDisable: UInt32 = 1 << 10
