#if canImport(Glibc)
import Glibc
#endif

/// A property a fuzz target checks beyond "did not crash": when it fails, the input is a
/// finding, so abort (libFuzzer saves the input as a crash artifact).
@inline(never)
public func fuzzCheck(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
                      file: StaticString = #fileID, line: UInt = #line) {
    guard !condition() else { return }
    let text = "fuzz check failed at \(file):\(line): \(message())\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
    abort()
}
