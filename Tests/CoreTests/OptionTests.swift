import Testing
import VMMCore
import VMMTestKit

/// User input: device specs and options. Every error names the key and the problem.
@Suite struct OptionTests {
    @Test func specParsesNameAndPairsKeepingRepeats() throws {
        let spec = try DeviceSpec.parse("e1000,net=user,hostfwd=tcp::2222-:22,hostfwd=udp::53-:53,mac=52:54:00:00:00:01")
        #expect(spec.name == "e1000")
        var o = spec.options
        #expect(o.takeAll("hostfwd") == ["tcp::2222-:22", "udp::53-:53"])
        #expect(try o.take("net") == "user")
        #expect(try o.takeMAC() == MACAddress([0x52, 0x54, 0, 0, 0, 1]))
        #expect(o.isEmpty)
        #expect(try DeviceSpec.parse(" sample ").name == "sample")
        #expect(try DeviceSpec.parse("sample,a=x=y").options.pairs.first?.value == "x=y")
    }

    @Test func malformedSpecs() {
        #expect(throws: OptionError.emptySpec) { try DeviceSpec.parse("") }
        #expect(throws: OptionError.emptySpec) { try DeviceSpec.parse(",mac=1") }
        #expect(throws: OptionError.missingValue(key: "mac")) { try DeviceSpec.parse("e1000,mac") }
        #expect(throws: OptionError.badValue(key: "=5", value: "5", reason: "empty option name")) {
            try DeviceSpec.parse("e1000,=5")
        }
    }

    @Test func unknownKeyIsNamedWithTheDevice() throws {
        let machine = try TestMachine()
        let error = #expect(throws: OptionError.self) { try machine.add(SampleDevice.self, options: "msi=1,colour=red") }
        #expect(error == .unknownOption(device: "sample", key: "colour"))
        #expect(error?.description == "unknown option 'colour' for device sample")
        // The failed device did not take a slot.
        #expect(machine.bus.functions.isEmpty)
    }

    @Test func badValuesNameKeyValueAndExpectation() throws {
        let machine = try TestMachine()
        #expect(throws: OptionError.badValue(key: "msi", value: "64", reason: "expected an integer in 0...32")) {
            try machine.add(SampleDevice.self, options: "msi=64")
        }
        #expect(throws: OptionError.badValue(key: "msi", value: "-1", reason: "expected an integer in 0...32")) {
            try machine.add(SampleDevice.self, options: "msi=-1")
        }
        #expect(throws: OptionError.badValue(key: "vendor", value: "0x1_0000", reason: "expected an integer in 0...65535")) {
            try machine.add(SampleDevice.self, options: "vendor=0x1_0000")
        }
        #expect(throws: OptionError.badValue(key: "intx", value: "maybe", reason: "expected on or off")) {
            try machine.add(SampleDevice.self, options: "intx=maybe")
        }
        let dup = #expect(throws: OptionError.self) { try machine.add(SampleDevice.self, options: "msi=1,msi=2") }
        #expect(dup == .duplicate(key: "msi"))
        #expect(dup?.description == "option 'msi' given more than once")
        let e = OptionError.badValue(key: "msi", value: "x", reason: "expected an integer in 0...32")
        #expect(e.description == "bad value 'x' for option 'msi': expected an integer in 0...32")
    }

    @Test func integersAcceptDecimalAndHex() throws {
        var o = try DeviceSpec.parse("x,a=0x1F,b=31,c=0x,d=").options
        #expect(try o.takeInteger("a", in: 0 ... 255) == 31)
        #expect(try o.takeInteger("b", in: 0 ... 255) == 31)
        #expect(throws: OptionError.self) { try o.takeInteger("c", in: 0 ... 255) }
        #expect(throws: OptionError.self) { try o.takeInteger("d", in: 0 ... 255) }
        #expect(try o.takeInteger("missing", in: 0 ... 1) == nil)
    }

    @Test func booleans() throws {
        var o = try DeviceSpec.parse("x,a=on,b=OFF,c=true,d=0").options
        #expect(try o.takeBool("a") == true)
        #expect(try o.takeBool("b") == false)
        #expect(try o.takeBool("c") == true)
        #expect(try o.takeBool("d") == false)
    }

    @Test func macAddresses() throws {
        #expect(MACAddress("52:54:00:12:34:56")?.description == "52:54:00:12:34:56")
        #expect(MACAddress("52:54:00:AB:cd:EF")?.array == [0x52, 0x54, 0, 0xAB, 0xCD, 0xEF])
        for bad in ["52:54:00:12:34", "52:54:00:12:34:56:78", "52-54-00-12-34-56", "5:54:00:12:34:56",
                    "52:54:00:12:34:5g", "", "52:54:00:12:34:+5", "525400123456"] {
            #expect(MACAddress(bad) == nil, "\(bad)")
        }
        var o = try DeviceSpec.parse("x,mac=01:00:5e:00:00:01").options
        #expect(throws: OptionError.badValue(key: "mac", value: "01:00:5e:00:00:01",
                                             reason: "a NIC's address must be unicast (first byte even)")) {
            try o.takeMAC()
        }
        var z = try DeviceSpec.parse("x,mac=00:00:00:00:00:00").options
        #expect(throws: OptionError.badValue(key: "mac", value: "00:00:00:00:00:00",
                                             reason: "a NIC's address cannot be all zeros")) { try z.takeMAC() }
        var p = try DeviceSpec.parse("x,mac=zz").options
        #expect(throws: OptionError.badValue(key: "mac", value: "zz",
                                             reason: "expected a MAC address like 52:54:00:12:34:56")) { try p.takeMAC() }
        #expect(MACAddress.defaultNIC(index: 1).description == "52:54:00:12:34:57")
        #expect(MACAddress.broadcast.isMulticast)
        let machine = try TestMachine()
        #expect(throws: OptionError.self) { try machine.add(SampleDevice.self, options: "mac=ff:ff:ff:ff:ff:ff") }
        let (_, s) = try SampleRig.add(to: machine, options: "mac=52:54:00:00:00:09")
        #expect(s.mac?.description == "52:54:00:00:00:09")
    }

    @Test func registryLookupListsKnownTypes() {
        let registry = PCIDeviceRegistry([SampleDevice.self])
        #expect(throws: OptionError.unknownDevice("nic", known: ["sample"])) { try registry.lookup("nic") }
        #expect(OptionError.unknownDevice("nic", known: ["a", "b"]).description == "unknown device type 'nic' (known: a, b)")
    }
}
