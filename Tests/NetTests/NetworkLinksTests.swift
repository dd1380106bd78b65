import Synchronization
import Testing
import VMMNet
import VMMTestKit

@Suite struct NetworkLinksTests {
    /// QEMU's throttling of NIC_RX_FILTER_CHANGED (virtio_net's rxfilter_notify_enabled):
    /// one event per NIC until the client reads that NIC's filter.
    @Test func receiveFilterChangesAreThrottledUntilQueried() {
        let links = NetworkLinks()
        let a = LinkControl(wrapping: InMemoryEndpoint()), b = LinkControl(wrapping: InMemoryEndpoint())
        links.register("a", a)
        links.register("b", b)
        let events = Mutex<[String]>([])
        links.onReceiveFilterChanged { name in events.withLock { $0.append(name) } }
        for _ in 0 ..< 100 { a.receiveFilterChanged() }   // Linux rewrites 128 MTA registers at once
        b.receiveFilterChanged()
        #expect(events.withLock { $0 } == ["a", "b"])
        links.receiveFilterQueried("a")
        a.receiveFilterChanged()
        b.receiveFilterChanged()
        #expect(events.withLock { $0 } == ["a", "b", "a"])
    }
}
