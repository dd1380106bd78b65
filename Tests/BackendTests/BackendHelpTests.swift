import Testing
@testable import NetBackends
import VMMNet

/// `swiftvmm backends` is generated from `NetBackendHelp`: an option the factory takes but
/// the help leaves out is one a user cannot find (`fault-reorder` was).
@Suite struct BackendHelpTests {
    @Test func everyFaultOptionIsListed() {
        let listed = Set(NetBackendHelp.backends.map(\.key) + NetBackendHelp.filters.map(\.key))
        for name in FaultConfig.optionNames { #expect(listed.contains(name), "\(name) is missing from swiftvmm backends") }
    }
}
