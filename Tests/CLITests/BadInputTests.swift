import DeviceCatalog
import Foundation
import Testing

/// Bad input to `swiftvmm run`: exit status 2 and exactly one stderr line naming the problem.
@Suite(.enabled(if: CLIHost.hasExecutable, "needs the swiftvmm executable built next to the tests (swift build)"))
struct BadInputTests {
    private func expectOneLineError(_ arguments: [String], mentions: String...) throws {
        let r = try SwiftVMMProcess.run(arguments)
        #expect(r.status == 2, "\(arguments): status \(r.status), stderr: \(r.stderr)")
        #expect(r.errorLines.count == 1, "\(arguments): stderr was: \(r.stderr)")
        for m in mentions { #expect(r.stderr.contains(m), "\(arguments): '\(m)' not in: \(r.stderr)") }
        #expect(r.stderr.hasPrefix("swiftvmm: error: "))
    }

    @Test func missingKernel() throws {
        try expectOneLineError(["run"], mentions: "--kernel is required")
    }

    @Test func kernelFileDoesNotExist() throws {
        try expectOneLineError(["run", "--kernel", "/nonexistent/vmlinux"], mentions: "--kernel", "/nonexistent/vmlinux", "No such file")
    }

    @Test func kernelIsADirectory() throws {
        try expectOneLineError(["run", "--kernel", "/tmp"], mentions: "--kernel", "/tmp")
    }

    /// A FIFO is refused at once (opening one for reading waited for a writer for ever).
    @Test func kernelIsAFIFO() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-fifo-\(getpid())").path
        #expect(mkfifo(path, 0o600) == 0)
        defer { unlink(path) }
        try expectOneLineError(["run", "--kernel", path], mentions: "--kernel", path, "not a regular file")
    }

    /// A refused command line leaves `--serial file:` and a NIC's `capture=` as it found
    /// them: a new file is not created, an existing one keeps its contents (both were
    /// created or emptied on open).
    @Test func aRefusedCommandLineLeavesTheSerialFileAlone() throws {
        let kernel = try CLIHost.temporaryFile(MiniELF.spin)
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        let dir = FileManager.default.temporaryDirectory
        let fresh = dir.appendingPathComponent("swiftvmm-serial-new-\(getpid()).log").path
        let old = dir.appendingPathComponent("swiftvmm-serial-old-\(getpid()).log").path
        FileManager.default.createFile(atPath: old, contents: Data("keep".utf8))
        defer { unlink(fresh); unlink(old) }
        for path in [fresh, old] {
            try expectOneLineError(["run", "--kernel", kernel, "--serial", "file:" + path, "--device", "e1000,colour=blue"], mentions: "colour")
            #expect(!FileManager.default.fileExists(atPath: fresh))
            try expectOneLineError(["run", "--kernel", kernel, "--device", "e1000,net=user,capture=" + path, "--device", "e1000,colour=blue"],
                                   mentions: "colour")
        }
        #expect(!FileManager.default.fileExists(atPath: fresh))
        #expect(FileManager.default.contents(atPath: old) == Data("keep".utf8))
        // A symbolic link to a missing file: the file was created through the link and
        // never removed (the link existed, so the file counted as the user's). Refused now.
        let link = dir.appendingPathComponent("swiftvmm-dangling-\(getpid()).log").path
        #expect(symlink(fresh, link) == 0)
        defer { unlink(link) }
        try expectOneLineError(["run", "--kernel", kernel, "--serial", "file:" + link], mentions: "--serial", "symbolic link")
        try expectOneLineError(["run", "--kernel", kernel, "--device", "e1000,net=user,capture=" + link], mentions: "capture", "symbolic link")
        #expect(!FileManager.default.fileExists(atPath: fresh))
    }

    /// A FIFO as the console file is refused at once (opening it waited for a reader for
    /// ever, with SIGINT and SIGTERM blocked); so are a kernel or initrd larger than the
    /// guest's memory, before a byte of them is read (a 1 TiB sparse initrd trapped the
    /// allocation), and a memory size that is not whole pages.
    @Test func consoleFIFOsHugeImagesAndPartialPagesAreRefused() throws {
        let kernel = try CLIHost.temporaryFile(MiniELF.halt)
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        let fifo = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-serial-fifo-\(getpid())").path
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        try expectOneLineError(["run", "--kernel", kernel, "--serial", "file:" + fifo], mentions: "--serial file:" + fifo)
        let huge = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-huge-\(getpid())").path
        #expect(FileManager.default.createFile(atPath: huge, contents: nil))
        #expect(truncate(huge, 1 << 40) == 0)
        defer { unlink(huge) }
        try expectOneLineError(["run", "--kernel", kernel, "--memory", "32M", "--initrd", huge], mentions: "--initrd", "does not fit in guest memory")
        try expectOneLineError(["run", "--kernel", huge, "--memory", "32M"], mentions: "--kernel", "does not fit in guest memory")
        try expectOneLineError(["run", "--kernel", kernel, "--memory", "16385K"], mentions: "--memory '16385K'", "4 KiB pages")
    }

    /// A newline or other control character in what the user typed is written as an
    /// escape: the error stays one line. A parser error's list of choices is joined onto it.
    @Test func controlCharactersInInputStayOnOneLine() throws {
        try expectOneLineError(["run", "--kernel", "/no\nsuch"], mentions: "--kernel", "/no\\nsuch")
        try expectOneLineError(["qtest", "--device", "e1000,net=tap:a\nb"], mentions: "--device")
        try expectOneLineError(["run", "--log-level", "a\tb"], mentions: "--log-level", "a\\tb")
        try expectOneLineError(["sandbox-check", "main", "bogus"], mentions: "bogus", "tgkill-self")
    }

    /// Found by a review of every option: each of these named the wrong thing or said
    /// something else than the problem.
    @Test func eachErrorSaysWhatIsWrong() throws {
        try expectOneLineError(["run", "--kernel", "x", "--memory", "-1"], mentions: "--memory '-1'", "expected a size")
        try expectOneLineError(["run", "--kernel", "x", "--memory", "0"], mentions: "--memory '0'", "out of range")
        try expectOneLineError(["run", "--kernel", "x", "--memory", "+512"], mentions: "--memory '+512'", "expected a size")
        try expectOneLineError(["run", "--kernel", "x", "--memory", "18446744073709551616K"], mentions: "too large")
        try expectOneLineError(["qtest", "--device", "e1000", "--device", "e1000,slot=99"], mentions: "--device 'e1000,slot=99'")
        try expectOneLineError(["qtest", "--device", "e1000,id=dev1", "--device", "e1000"], mentions: "'id'", "devN")   // would name two devices
        try expectOneLineError(["run", "--kernel", "x", "--cpus", "-1"], mentions: "--cpus -1", "out of range")
        try expectOneLineError(["run", "--kernel", "x", "-s", "2,virtio-net,tap0"], mentions: "-s '2,virtio-net,tap0'")
        // The serial file is opened after the kernel is read.
        guard let kernel = CLIHost.miniGuest else { return }
        let fifo = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-fifo-\(UUID().uuidString.prefix(8))").path
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        try expectOneLineError(["run", "--kernel", kernel, "--serial", "file:\(fifo)"], mentions: "--serial", "not a regular file or a terminal")
    }

    /// One file given to two writers (two NICs' `capture=`, or a capture and
    /// `--serial file:`) would interleave into something no tool reads: refused, and
    /// nothing is created.
    @Test func oneOutputFileForTwoWritersIsRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-out-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pcap = dir + "/both.pcap"
        try expectOneLineError(["run", "--kernel", "x", "--device", "e1000,net=user,capture=\(pcap)",
                                "--device", "virtio-net,net=user,capture=\(dir)/../\((dir as NSString).lastPathComponent)/both.pcap"],
                               mentions: "names the same file as --device 'e1000")
        try expectOneLineError(["serve", "--socket", dir + "/a.sock", "--device", "e1000,net=user,capture=\(pcap)",
                                "--socket", dir + "/b.sock", "--device", "e1000,net=user,capture=\(pcap)"],
                               mentions: "names the same file as")
        // A capture, or the console, on a disk image or the kernel would empty it at start.
        let image = dir + "/disk.img"
        #expect(FileManager.default.createFile(atPath: image, contents: Data(repeating: 0x5A, count: 65536)))
        try expectOneLineError(["qtest", "--device", "virtio-blk,disk=\(image)", "--device", "e1000,net=user,capture=\(image)"],
                               mentions: "names the same file as --device 'virtio-blk")
        try expectOneLineError(["run", "--kernel", image, "--serial", "file:\(image)"], mentions: "--serial", "--kernel")
        #expect(FileManager.default.contents(atPath: image) == Data(repeating: 0x5A, count: 65536))
        try? FileManager.default.removeItem(atPath: image)
        #expect((try? FileManager.default.contentsOfDirectory(atPath: dir)) == [])
    }

    /// qtest's errors are one line naming the option, as run's; `--socket` refuses to
    /// replace a file that is not a socket (it was unlinked, whatever it held).
    @Test func qtestErrorsNameTheOptionAndKeepFiles() throws {
        try expectOneLineError(["qtest", "--device", "e1000,mac=zz"], mentions: "--device", "mac")
        try expectOneLineError(["qtest", "--memory", "0"], mentions: "--memory")
        let path = try CLIHost.temporaryFile(Array("precious".utf8))
        defer { try? FileManager.default.removeItem(atPath: path) }
        try expectOneLineError(["qtest", "--socket", path], mentions: "--socket", "not a socket")
        try expectOneLineError(["qtest", "--socket", ""], mentions: "--socket", "the socket path is empty")
        // disk= opens the named disk as under `run` (it was ignored for an in-memory disk).
        try expectOneLineError(["qtest", "--device", "virtio-blk,disk=/nonexistent/disk.img"], mentions: "--device", "/nonexistent/disk.img")
        let disk = try CLIHost.temporaryFile([UInt8](repeating: 0, count: 1 << 20))
        defer { try? FileManager.default.removeItem(atPath: disk) }
        let r = try SwiftVMMProcess.run(["qtest", "--device", "virtio-blk,disk=\(disk)"])   // stdin at EOF: the session ends
        #expect(r.status == 0, "stderr: \(r.stderr)")
        try expectOneLineError(["serve", "--socket", "", "--device", "e1000,net=user"], mentions: "--socket", "the socket path is empty")
        #expect(FileManager.default.contents(atPath: path) == Data("precious".utf8))
    }

    /// Two listeners, or a listener and an output file, on one path: the second failed with
    /// a message that blamed "another process", or "exists and is not a socket" for a file
    /// this run had made. Now the command line is refused first, naming both.
    @Test func oneSocketPathForTwoListenersIsRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-listen-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try expectOneLineError(["serve", "--socket", "\(dir)/a.sock", "--socket", "\(dir)/./a.sock", "--device", "e1000", "--device", "e1000"],
                               mentions: "--socket", "names the same file")
        try expectOneLineError(["serve", "--qmp", "unix:\(dir)/q.sock", "--socket", "\(dir)/q.sock", "--device", "e1000"],
                               mentions: "--qmp", "names the same file")
        try expectOneLineError(["run", "--kernel", "x", "--qmp", "unix:\(dir)/s.sock", "--device", "e1000,net=stream:unix:\(dir)/s.sock,server=on"],
                               mentions: "--qmp", "names the same file")
        try expectOneLineError(["run", "--kernel", "x", "--qmp", "unix:\(dir)/s.sock", "--device", "e1000,net=stream:unix:\(dir)/s.sock,server=yes"],
                               mentions: "--qmp", "names the same file")
        try expectOneLineError(["qtest", "--socket", "\(dir)/c.pcap", "--device", "e1000,capture=\(dir)/c.pcap"],
                               mentions: "--socket", "names the same file")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    /// A virtio-console's `chardev=file:` or `chardev=socket:` made before a later device is
    /// refused is removed again; one on the path of another listener is refused before
    /// anything is made.
    @Test func aRefusedCommandLineLeavesNoConsoleFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-console-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try expectOneLineError(["qtest", "--device", "virtio-console,chardev=file:\(dir)/c.log", "--device", "e1000,net=bogus"],
                               mentions: "net=bogus")
        try expectOneLineError(["serve", "--socket", "\(dir)/a.sock", "--device", "virtio-console,chardev=socket:\(dir)/c.sock",
                                "--socket", "\(dir)/b.sock", "--device", "e1000,net=bogus"], mentions: "net=bogus")
        try expectOneLineError(["qtest", "--socket", "\(dir)/q.sock", "--device", "virtio-console,chardev=socket:\(dir)/q.sock"],
                               mentions: "chardev", "names the same file")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    /// An option that takes one value, given twice: the last one won without a word
    /// (ArgumentParser's default), while a key repeated inside --device was refused.
    /// And a value with a blank line in it cut the parser's message short at that line.
    @Test func repeatedSingleValuedOptionsAndMultiLineValues() throws {
        try expectOneLineError(["run", "--kernel", "a", "--kernel", "b"], mentions: "--kernel", "more than once")
        try expectOneLineError(["run", "--kernel=a", "--memory", "64M", "--memory=128M"], mentions: "--memory", "more than once")
        try expectOneLineError(["serve", "--qmp", "unix:/tmp/a", "--qmp=unix:/tmp/b", "--socket", "/tmp/s", "--device", "e1000"],
                               mentions: "--qmp", "more than once")
        try expectOneLineError(["qtest", "--socket", "/tmp/a", "--socket", "/tmp/b"], mentions: "--socket", "more than once")
        try expectOneLineError(["run", "--kernel", "a", "--cpus", "1\n\n2"], mentions: "--cpus", "1\\n\\n2")
    }

    /// libvdeplug's hub, switch and multi plugins remove their directory when they close and
    /// cmd forks: under the sandbox (the default) that ended the process with SIGSYS at
    /// shutdown and left /tmp/vdenode_root, which made every later start fail. Refused up
    /// front now, with the way out.
    @Test func vdePluginsTheSandboxCannotRunAreRefused() throws {
        for url in ["hub://", "switch:///tmp/swiftvmm-no-switch", "multi://", "cmd://true"] {
            try expectOneLineError(["qtest", "--device", "e1000,net=vde:\(url)"], mentions: "net", "plugin", "--sandbox off")
        }
        // A plain path that is a file stands for the URL on its first line (libvdeplug's
        // vde_open_real), so it is no way around the check.
        let file = try CLIHost.temporaryFile(Array("hub:///tmp/swiftvmm-no-hub\n".utf8))
        defer { try? FileManager.default.removeItem(atPath: file) }
        try expectOneLineError(["qtest", "--device", "e1000,net=vde:\(file)"], mentions: "net", "hub plugin", "--sandbox off")
    }

    /// `serve` gives each device a bus of its own, but ids name devices across the process.
    @Test func serveRefusesADuplicateID() throws {
        let dir = FileManager.default.temporaryDirectory
        let a = dir.appendingPathComponent("swiftvmm-dup-a-\(getpid()).sock").path, b = dir.appendingPathComponent("swiftvmm-dup-b-\(getpid()).sock").path
        try expectOneLineError(["serve", "--socket", a, "--device", "e1000,id=n,net=user", "--socket", b, "--device", "e1000,id=n,net=user"],
                               mentions: "id", "another device already has this id")
        #expect(!FileManager.default.fileExists(atPath: a) && !FileManager.default.fileExists(atPath: b))
    }

    @Test func kernelIsNotAKernel() throws {
        let path = try CLIHost.temporaryFile(Array("#!/bin/sh\necho not a kernel\n".utf8))
        defer { try? FileManager.default.removeItem(atPath: path) }
        try expectOneLineError(["run", "--kernel", path], mentions: path, "is not a kernel")
    }

    @Test func truncatedELFKernel() throws {
        let path = try CLIHost.temporaryFile([0x7F, 0x45, 0x4C, 0x46, 1, 1, 1])
        defer { try? FileManager.default.removeItem(atPath: path) }
        try expectOneLineError(["run", "--kernel", path], mentions: path, "bad ELF kernel")
    }

    /// `run` and `qtest` read `--memory` alike (a bare number is MiB) and hold it to the
    /// PC layout's range.
    @Test(arguments: ["12Q", "abc", "", "-5M", "0"])
    func badMemorySize(_ size: String) throws {
        let kernel = try CLIHost.temporaryFile(MiniELF.halt)
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        try expectOneLineError(["run", "--kernel", kernel, "--memory=\(size)"], mentions: size.isEmpty ? "--memory" : "--memory '\(size)'")
        try expectOneLineError(["qtest", "--memory=\(size)"], mentions: size.isEmpty ? "--memory" : "--memory '\(size)'")
    }

    @Test(arguments: ["1M", "4096G", "99999999999999999999"])
    func memorySizeOutOfRange(_ size: String) throws {
        let kernel = try CLIHost.temporaryFile(MiniELF.halt)
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        try expectOneLineError(["run", "--kernel", kernel, "--memory=\(size)"], mentions: "--memory '\(size)'")
        try expectOneLineError(["qtest", "--memory=\(size)"], mentions: "--memory '\(size)'")
    }

    @Test func missingInitrd() throws {
        let kernel = try CLIHost.temporaryFile(MiniELF.halt)
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        try expectOneLineError(["run", "--kernel", kernel, "--initrd", "/nonexistent/initrd"], mentions: "--initrd", "/nonexistent/initrd")
    }

    @Test func unknownDeviceType() throws {
        let kernel = try CLIHost.temporaryFile(MiniELF.halt)
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        try expectOneLineError(["run", "--kernel", kernel, "--device", "frobnicator,speed=9"],
                               mentions: "--device 'frobnicator,speed=9'", "unknown device type 'frobnicator'")
        try expectOneLineError(["run", "--kernel", kernel, "-s", "3,frobnicator"], mentions: "-s '3,frobnicator'", "unknown device type")
    }

    @Test func duplicateSlot() throws {
        let kernel = try CLIHost.temporaryFile(MiniELF.halt)
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        try expectOneLineError(["run", "--kernel", kernel, "-s", "3,e1000", "-s", "3:0,virtio-net"],
                               mentions: "-s '3:0,virtio-net'", "slot 3:0 is used twice")
    }

    /// Functions 1-7 of a slot are seen only behind a function 0 (pci_scan_slot).
    @Test func aFunctionWithoutFunctionZeroIsRefused() throws {
        let kernel = try CLIHost.temporaryFile(MiniELF.halt)
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        try expectOneLineError(["run", "--kernel", kernel, "-s", "3:1,e1000"], mentions: "-s '3:1,e1000'", "slot 3 has no function 0")
        try expectOneLineError(["run", "--kernel", kernel, "-s", "4,e1000", "--device", "e1000,slot=3:2"],
                               mentions: "--device 'e1000,slot=3:2'", "slot 3 has no function 0")
    }

    @Test func duplicateSlotAcrossDeviceAndSlotSyntax() throws {
        let kernel = try CLIHost.temporaryFile(MiniELF.halt)
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        try expectOneLineError(["run", "--kernel", kernel, "-s", "4,e1000", "--device", "e1000,slot=4"],
                               mentions: "slot 4:0 is used twice")
        try expectOneLineError(["run", "--kernel", kernel, "--device", "e1000,slot=0"], mentions: "--device 'e1000,slot=0'", "slot=N")
    }

    @Test(arguments: ["40,e1000", "x,e1000", "3:9,e1000", "3", "0,e1000"])
    func badSlotSyntax(_ slot: String) throws {
        let kernel = try CLIHost.temporaryFile(MiniELF.halt)
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        try expectOneLineError(["run", "--kernel", kernel, "-s", slot], mentions: "-s '\(slot)'")
    }

    @Test func badSerialAndLogLevel() throws {
        let kernel = try CLIHost.temporaryFile(MiniELF.halt)
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        try expectOneLineError(["run", "--kernel", kernel, "--serial", "tty"], mentions: "--serial 'tty'")
        try expectOneLineError(["run", "--kernel", kernel, "--log-level", "loud"], mentions: "--log-level 'loud'")
        try expectOneLineError(["run", "--kernel", kernel, "--cpus", "0"], mentions: "--cpus 0")
    }

    @Test(.enabled(if: CLIHost.hasKVM, "needs /dev/kvm (read/write)"),
          .enabled(if: DeviceCatalog.registry.types.contains { $0.typeName == "e1000" }, "needs e1000 in DeviceCatalog"))
    func unknownDeviceOption() throws {
        let kernel = try CLIHost.temporaryFile(MiniELF.halt)
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        try expectOneLineError(["run", "--kernel", kernel, "--device", "e1000,bogus=1"], mentions: "--device 'e1000,bogus=1'", "bogus")
    }

    @Test func unknownFlagIsOneLine() throws {
        try expectOneLineError(["run", "--frobnicate"], mentions: "--frobnicate")
        try expectOneLineError(["run", "--cpus", "many"], mentions: "many")
    }

    @Test func devicesListsTheRegistry() throws {
        let r = try SwiftVMMProcess.run(["devices"])
        #expect(r.status == 0)
        for type in DeviceCatalog.registry.types { #expect(r.stdout.contains(type.typeName)) }
    }
}

/// Tiny PVH kernels for the CLI tests (ELF32, one PT_LOAD at 1 MiB, the Xen entry note).
enum MiniELF {
    static let halt = make(code: [0xF4])
    /// `jmp .`: runs until the VMM is told to stop.
    static let spin = make(code: [0xEB, 0xFE])

    static func make(code: [UInt8]) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: 0x100 + code.count)
        func put32(_ v: UInt32, _ at: Int) { for i in 0 ..< 4 { f[at + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
        func put16(_ v: UInt16, _ at: Int) { f[at] = UInt8(v & 0xFF); f[at + 1] = UInt8(v >> 8) }
        f[0 ..< 7] = [0x7F, 0x45, 0x4C, 0x46, 1, 1, 1]
        put16(2, 16); put16(3, 18); put32(1, 20); put32(0x10_0100, 24); put32(52, 28)
        put16(52, 40); put16(32, 42); put16(2, 44)
        put32(1, 52); put32(0, 56); put32(0x10_0000, 60); put32(0x10_0000, 64)
        put32(UInt32(f.count), 68); put32(UInt32(f.count), 72); put32(7, 76); put32(0x1000, 80)
        put32(4, 84); put32(116, 88); put32(20, 100); put32(20, 104)
        put32(4, 116); put32(4, 120); put32(18, 124)
        f[128 ..< 132] = [0x58, 0x65, 0x6E, 0]
        put32(0x10_0100, 132)
        f.replaceSubrange(0x100 ..< 0x100 + code.count, with: code)
        return f
    }
}
