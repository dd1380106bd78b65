#if canImport(Glibc)
import Glibc
#endif
import Testing
import QTest
import VMMCore

/// The stdio transport: requests on one fd, responses on another, partial lines buffered.
@Suite(.timeLimit(.minutes(1))) struct TransportTests {
    @Test func servesLinesUntilEndOfFile() throws {
        let machine = try QTestMachine(devices: ["ticker,slot=2"], registry: PCIDeviceRegistry([TickerDevice.self]))
        defer { machine.shutdown() }
        var toServer: [Int32] = [0, 0], fromServer: [Int32] = [0, 0]
        #expect(pipe(&toServer) == 0 && pipe(&fromServer) == 0)
        // Requests split at odd places, CRLF on one, then end of file.
        for chunk in ["outl 0xcf8 0x8", "0001000\ninl 0xc", "fc\r\nendianness\n", "readb 0x10"] {
            _ = Array(chunk.utf8).withUnsafeBytes { write(toServer[1], $0.baseAddress, $0.count) }
        }
        close(toServer[1])
        QTestTransport.serve(machine: machine, input: toServer[0], output: fromServer[1])
        close(toServer[0])
        close(fromServer[1])
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 256)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fromServer[0], $0.baseAddress, $0.count) }
            guard n > 0 else { break }
            out += buffer[0 ..< n]
        }
        close(fromServer[0])
        // The unterminated last request is not a request.
        #expect(String(decoding: out, as: UTF8.self) == "OK\nOK 0xf11b36\nOK little\n")
    }
}
