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
        let out = readToEnd(fromServer[0])
        // The unterminated last request is not a request.
        #expect(String(decoding: out, as: UTF8.self) == "OK\nOK 0xf11b36\nOK little\n")
    }

    /// 16 MiB of one-letter words with no newline, in 4 KiB reads: each read is searched
    /// once and the line split at most 8 times (rescanning the buffer per read and
    /// splitting every word took minutes for 4 MiB). The suite's time limit is the check.
    @Test func aLongLineOfManyWordsIsHandledInOnePass() throws {
        let machine = try QTestMachine(devices: [], registry: PCIDeviceRegistry([TickerDevice.self]))
        defer { machine.shutdown() }
        let path = "/tmp/swiftvmm-qtest-long-\(getpid()).txt"
        let input = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        #expect(input >= 0)
        defer { close(input); unlink(path) }
        let chunk = [UInt8](repeating: 0, count: 1 << 20).enumerated().map { $0.offset % 2 == 0 ? UInt8(ascii: "a") : UInt8(ascii: " ") }
        for _ in 0 ..< 16 { _ = chunk.withUnsafeBytes { write(input, $0.baseAddress, $0.count) } }
        _ = Array("\nendianness\n".utf8).withUnsafeBytes { write(input, $0.baseAddress, $0.count) }
        lseek(input, 0, SEEK_SET)
        var fromServer: [Int32] = [0, 0]
        #expect(pipe(&fromServer) == 0)
        QTestTransport.serve(machine: machine, input: input, output: fromServer[1])
        close(fromServer[1])
        let out = readToEnd(fromServer[0])
        let lines = String(decoding: out, as: UTF8.self).split(separator: "\n")
        #expect(lines.count == 2 && lines.first?.hasPrefix("FAIL") == true && lines.last == "OK little")
    }

    /// A socket client that asks for 8 MiB of answers and stops reading: the answer
    /// stalls, and after `stallLimit` seconds without progress the session ends instead
    /// of the thread blocking in write(2) for good (an IRQ report from the I/O loop would
    /// have blocked it too, with the device lock held).
    @Test func aClientThatStopsReadingEndsTheSession() throws {
        let machine = try QTestMachine(devices: [], registry: PCIDeviceRegistry([TickerDevice.self]))
        defer { machine.shutdown() }
        var pair: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        defer { close(pair[0]); close(pair[1]) }
        let request = Array("read 0x0 0x400000\nread 0x0 0x400000\n".utf8)
        _ = request.withUnsafeBytes { write(pair[1], $0.baseAddress, $0.count) }
        // Returns: the stalled answer ends the session (the client never reads or closes).
        QTestTransport.serve(machine: machine, input: pair[0], output: pair[0])
        var byte: UInt8 = 0
        var drained = 0
        while read(pair[1], &byte, 1) == 1 && drained < 100 { drained += 1 }
        #expect(drained > 0)   // part of the answer went out before the stall
    }
}

/// Everything left to read on `fd`, which is then closed.
private func readToEnd(_ fd: Int32) -> [UInt8] {
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 256)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { break }
        out += buffer[0 ..< n]
    }
    close(fd)
    return out
}
