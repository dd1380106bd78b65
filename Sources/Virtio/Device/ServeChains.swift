import VMMCore

extension VirtioDeviceContext {
    /// The kick handler of a device that answers each chain at once (virtio-rng,
    /// virtio-console's transmit queue): takes queue `index`'s chains and hands each to
    /// `serveOne`, which returns the used length, until none are left, the action's budget
    /// is spent (`continuation` finishes from the I/O loop) or `canContinue` says stop (a
    /// rate limit). With the queue empty it asks for the next kick and looks once more
    /// (§2.7.10); the used entries go out together, with one interrupt. A broken ring puts
    /// the device in its error state (`VirtioTransport.fail`).
    public func serveChains(of index: Int, into chain: inout DescriptorChain, continuation: DeferredAction,
                            while canContinue: () -> Bool = { true }, _ serveOne: (DescriptorChain) -> UInt32) {
        guard transport.isLive, let queue = transport.queue(index) else { return }
        do {
            while true {
                while !cost.shouldDefer, canContinue(), try queue.pop(into: &chain) {
                    cost.descriptors(chain.descriptorCount)
                    try queue.addUsed(head: chain.head, length: serveOne(chain))
                }
                if cost.shouldDefer || !canContinue() { break }
                guard queue.enableNotifications() else { break }
            }
        } catch {
            transport.fail(queue, error)
            return
        }
        transport.completeUsed(queue)
        if cost.shouldDefer { continuation.schedule() }
    }
}
