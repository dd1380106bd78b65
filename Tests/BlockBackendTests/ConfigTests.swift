@testable import BlockBackends
import Testing
import VMMCore
import VMMTestKit

@Suite struct ConfigTests {
    private func parse(_ spec: String) throws -> DiskBackendConfig {
        var options = try DeviceSpec.parse(spec).options
        let config = try DiskBackendConfig.take(from: &options)
        try options.rejectUnknown()
        return config
    }

    private func error(_ spec: String) -> String? {
        do { _ = try parse(spec); return nil } catch { return "\(error)" }
    }

    @Test func files() throws {
        #expect(try parse("virtio-blk,disk=/var/d.img") == DiskBackendConfig(kind: .file(path: "/var/d.img", direct: false)))
        #expect(try parse("virtio-blk,disk=d.img,readonly=on,direct=on,block-size=4096")
            == DiskBackendConfig(kind: .file(path: "d.img", direct: true), readOnly: true, blockSize: 4096))
    }

    @Test func nbd() throws {
        #expect(try parse("virtio-blk,disk=nbd://host:10809/exp") == DiskBackendConfig(kind: .nbd(uri: "nbd://host:10809/exp", reconnectTimeout: 30, requestTimeout: 0)))
        #expect(try parse("virtio-blk,disk=nbd+unix:///e?socket=/tmp/s,reconnect-timeout=2.5,request-timeout=0")
            == DiskBackendConfig(kind: .nbd(uri: "nbd+unix:///e?socket=/tmp/s", reconnectTimeout: 2.5, requestTimeout: 0)))
        #expect(try parse("virtio-blk,disk=nbd://[::1]:10809/exp") == DiskBackendConfig(kind: .nbd(uri: "nbd://[::1]:10809/exp", reconnectTimeout: 30, requestTimeout: 0)))
        #expect(try parse("virtio-blk,disk=nbd://[::1]/exp") == DiskBackendConfig(kind: .nbd(uri: "nbd://[::1]/exp", reconnectTimeout: 30, requestTimeout: 0)))
    }

    @Test func badInputNamesTheOption() {
        #expect(error("virtio-blk") == "device virtio-blk needs option 'disk'")
        #expect(error("virtio-blk,disk=") == "bad value '' for option 'disk': needs a file name or an nbd:// URI")
        #expect(error("virtio-blk,disk=a,block-size=1024") == "bad value '1024' for option 'block-size': expected 512 or 4096")
        #expect(error("virtio-blk,disk=a,readonly=maybe") == "bad value 'maybe' for option 'readonly': expected on or off")
        #expect(error("virtio-blk,disk=a,disk=b") == "option 'disk' given more than once")
        #expect(error("virtio-blk,disk=a,reconnect-timeout=5")?.contains("applies to NBD disks only") == true)
        #expect(error("virtio-blk,disk=nbd://h/e,direct=on")?.contains("applies to disk files only") == true)
        #expect(error("virtio-blk,disk=nbd://h/e,reconnect-timeout=-1")?.contains("'reconnect-timeout'") == true)
        #expect(error("virtio-blk,disk=nbd://h/e,reconnect-timeout=nan")?.contains("'reconnect-timeout'") == true)
        #expect(error("virtio-blk,disk=nbd://h/e,request-timeout=3601") == "bad value '3601' for option 'request-timeout': expected seconds in 0...3600")
        #expect(error("virtio-blk,disk=a,request-timeout=5")?.contains("applies to NBD disks only") == true)
        #expect(error("virtio-blk,disk=nbds://h/e")?.contains("TLS is not supported") == true)
        #expect(error("virtio-blk,disk=http://h/e")?.contains("unknown URI scheme 'http'") == true)
        #expect(error("virtio-blk,disk=nbd+unix:///e")?.contains("socket=PATH") == true)
        #expect(error("virtio-blk,disk=nbd:///e")?.contains("nbd://HOST") == true)
        for port in ["0", "65536", "http", "", "-1"] {
            #expect(error("virtio-blk,disk=nbd://h:\(port)/e")?.contains("port '\(port)' is not a TCP port (1-65535)") == true)
        }
        #expect(error("virtio-blk,disk=nbd://[::1]:99999/e")?.contains("port '99999'") == true)
        #expect(error("virtio-blk,disk=a,bogus=1") == "unknown option 'bogus' for device virtio-blk")
    }

    @Test func factoryOpensAndFails() throws {
        let loop = try RunningLoop()
        let dir = TemporaryDirectory()
        let path = dir.file("f.img", size: 65536)
        var options = try DeviceSpec.parse("virtio-blk,disk=\(path),block-size=4096").options
        let backend = try DiskBackendFactory().makeBackend(options: &options, eventLoop: loop.loop)
        defer { backend.stop() }
        #expect(options.isEmpty)
        #expect(backend.geometry.logicalBlockSize == 4096)
        #expect(backend.description == "file \(path)")

        var missing = try DeviceSpec.parse("virtio-blk,disk=\(dir.path)/missing.img").options
        #expect(throws: DiskBackendError.self) { try DiskBackendFactory().makeBackend(options: &missing, eventLoop: loop.loop) }
        var noServer = try DeviceSpec.parse("virtio-blk,disk=nbd+unix:///?socket=\(dir.path)/none.sock").options
        #expect {
            try DiskBackendFactory().makeBackend(options: &noServer, eventLoop: loop.loop)
        } throws: { e in
            "\(e)".hasPrefix("option 'disk=nbd+unix:///?socket=\(dir.path)/none.sock': cannot connect to the NBD server")
        }
    }

    @Test func helpListsEveryOption() {
        let keys = Set(DiskBackendHelp.options.map(\.key))
        #expect(keys == ["disk", "readonly", "direct", "block-size", "reconnect-timeout", "request-timeout"])
    }
}
