import Virtio
import VMMBlock
import VMMCore

/// One request between `pop` and its return to the guest.
struct InFlightRequest {
    let id: UInt64
    let head: UInt16
    /// nil for a chain without a status byte: it goes back unused (length 0).
    let statusByte: UnsafeMutableRawPointer?
    let writtenOnSuccess: UInt32
    /// In write-through mode a write is followed by a flush before it completes.
    var flushAfter: Bool
    /// The write is done and its flush waits for room in the backend (`flushesWaiting`).
    var flushWaiting = false
    /// nil while the backend works on it.
    var status: VirtioBlkStatus?
    /// `GuestMemory.removals` when the buffers were resolved, and where the status byte is
    /// in guest memory: if memory is unmapped while the request is out (a vfio-user
    /// client's DMA_UNMAP), its host pointers may point at retired pages, so the request
    /// fails and its status is written where the byte is now.
    var removals: UInt64 = 0
    var statusAddress: GuestAddress?
}

extension VirtioBlk {
    /// Takes the queue's available requests and hands them to the backend. Bounded: at
    /// most the queue's size are in flight, and past the per-action budget the rest
    /// continues from the I/O loop (Docs/robustness.md).
    func process(queue index: Int) {
        guard transport.isLive, index >= 0, index < inFlight.count, let queue = transport.queue(index) else { return }
        let cost = context.cost
        let limits = VirtioBlkLimits(capacityBytes: geometry.size, logicalBlockSize: UInt64(geometry.logicalBlockSize),
                                     readOnly: geometry.readOnly, canDiscard: geometry.canDiscard,
                                     canWriteZeroes: geometry.canWriteZeroes,
                                     maxDiscardSectors: Self.maxRangeSectors, maxWriteZeroesSectors: Self.maxRangeSectors)
        func canTake() -> Bool { inFlight[index].count < Int(queue.size) && !waitingForBackend }
        do {
            while true {
                while canTake(), !cost.shouldDefer, try queue.pop(into: &chain) {
                    cost.descriptors(chain.descriptorCount)
                    start(chain, on: queue, index: index, limits: limits)
                }
                if cost.shouldDefer { break } // the continuation below picks up the rest
                // Ask for a kick when the driver adds more (with EVENT_IDX this writes
                // avail_event: Linux's virtqueue_kick_prepare kicks only past it), and look
                // once more for chains added meanwhile.
                guard queue.enableNotifications(), canTake() else { break }
            }
        } catch {
            transport.fail(queue, error)
            return
        }
        complete(queue: index)
        if cost.shouldDefer { processContinuations.schedule(index) }
    }

    private func start(_ chain: DescriptorChain, on queue: any Virtqueue, index: Int, limits: VirtioBlkLimits) {
        let request: VirtioBlkParsedRequest
        do {
            request = try parser.parse(chain, memory: context.memory, limits: limits)
        } catch {
            badRequests &+= 1
            context.guestLog.warning("virtio-blk.bad-chain", "queue \(index): request without a status byte in RAM (\(error)); returned unused")
            admit(InFlightRequest(id: nextID(), head: chain.head, statusByte: nil, writtenOnSuccess: 0,
                                 flushAfter: false, status: .ioError), to: index)
            return
        }
        let id = nextID()
        var entry = InFlightRequest(id: id, head: chain.head, statusByte: request.status, writtenOnSuccess: request.writtenOnSuccess,
                                    flushAfter: request.isWrite && !writeback, status: nil)
        entry.removals = context.memory.removals
        // The parser's status byte: the last byte of the last non-empty writable buffer.
        if let last = chain.writable.last(where: { $0.length > 0 }) {
            entry.statusAddress = last.address.checkedAdd(UInt64(last.length) - 1)
        }
        switch request.operation {
        case let .immediate(status):
            if status != .ok { badRequests &+= 1 }
            entry.status = status
            admit(entry, to: index)
        case let .identify(buffers):
            // NUL-padded, no terminator when the serial is 20 bytes (§5.2.6 GET_ID); the
            // 20 bytes go over the driver's buffers in order.
            var id = Array(configuration.serial.utf8.prefix(virtioBlkIDBytes))
            id += [UInt8](repeating: 0, count: virtioBlkIDBytes - id.count)
            var written = 0
            for buffer in buffers where written < id.count {
                let n = min(buffer.count, id.count - written)
                id[written ..< written + n].withUnsafeBytes { buffer.copyMemory(from: $0) }
                written += n
            }
            entry.status = .ok
            admit(entry, to: index)
        case let .backend(blockRequest):
            admit(entry, to: index)
            if !submit(blockRequest, queue: index, id: id) {
                // The backend's queue is full: give the chain back and retry after a completion.
                inFlight[index].removeLast()
                context.memory.giveBack()
                queue.unpop(1)
                waitingForBackend = true
            }
        }
    }

    /// A request joins the queue's list. Its status byte and buffers are host pointers the
    /// device holds across lock releases (and a backend thread uses): lent out of guest
    /// memory until the request leaves the list (`GuestMemory.lentOut`).
    private func admit(_ entry: InFlightRequest, to index: Int) {
        inFlight[index].append(entry)
        context.memory.lend()
    }

    private func submit(_ request: BlockRequest, queue index: Int, id: UInt64) -> Bool {
        let generation = self.generation
        // The backend uses the request's buffers until it completes, even after a reset.
        let memory = context.memory
        memory.lend()
        let accepted = backend.submit(request) { [weak self] result in
            guard let self else { memory.giveBack(); return }
            self.completed(queue: index, id: id, generation: generation, result: result)
        }
        if accepted { backendPending += 1 } else { memory.giveBack() }
        return accepted
    }

    /// A backend completion, on the I/O loop.
    private func completed(queue index: Int, id: UInt64, generation: UInt64, result: BlockResult) {
        context.lock.withLock {
            defer { context.memory.giveBack() }   // what `submit` lent
            backendPending -= 1
            guard generation == self.generation, index < inFlight.count,
                  let slot = inFlight[index].firstIndex(where: { $0.id == id }) else {
                // A request from before a reset left the backend: room there again,
                // which the new driver's first requests may be waiting for (they were
                // refused while the old ones filled the backend's queue).
                resumeAfterBackendRoom(orQueue: nil)
                return
            }
            switch result {
            case .ok where inFlight[index][slot].flushAfter:
                inFlight[index][slot].flushAfter = false
                if submit(.flush, queue: index, id: id) { return }
                // The backend is full: other completions freed its slot first and later
                // requests took it. The write succeeded; its flush waits for the next room,
                // which a request still in the backend will make. With nothing there
                // (a stopped backend) it cannot be made durable: do not claim it is.
                guard backendPending > 0 else {
                    inFlight[index][slot].status = .ioError
                    break
                }
                inFlight[index][slot].flushWaiting = true
                waitingForBackend = true
                return
            case .ok: inFlight[index][slot].status = .ok
            case .ioError: inFlight[index][slot].status = .ioError
            case .unsupported: inFlight[index][slot].status = .unsupported
            }
            complete(queue: index)
            resumeAfterBackendRoom(orQueue: index)
        }
    }

    /// Room again: takes what the driver added while the queue was full or the backend
    /// pushed back (every queue when one waited for the backend, else `index`'s).
    private func resumeAfterBackendRoom(orQueue index: Int?) {
        if waitingForBackend {
            waitingForBackend = false
            guard submitWaitingFlushes() else { return }
            // Starting from a different queue each time: the first takes the room.
            let count = inFlight.count
            let first = nextQueueToResume % max(count, 1)
            nextQueueToResume = (first + 1) % max(count, 1)
            for step in 0 ..< count { process(queue: (first + step) % count) }
        } else if let index {
            process(queue: index)
        }
    }

    /// Sends the flushes of write-through writes that found the backend full, before any
    /// new request (they are older). False when the backend is full again.
    private func submitWaitingFlushes() -> Bool {
        for i in inFlight.indices {
            for slot in inFlight[i].indices where inFlight[i][slot].flushWaiting {
                guard submit(.flush, queue: i, id: inFlight[i][slot].id) else {
                    waitingForBackend = true
                    return false
                }
                inFlight[i][slot].flushWaiting = false
            }
        }
        return true
    }

    /// Returns finished requests from the front of the queue's list, in order, writing
    /// each status byte before its used element (virtio 1.2 §2.7.8: the device writes the
    /// buffer before the used index moves).
    func complete(queue index: Int) {
        guard let queue = transport.queue(index) else {
            dropFinished(queue: index)
            return
        }
        // With bus mastering off the function may not write memory (PCI 3.0 §6.2.2; Linux
        // clears it before kexec): finished requests wait in the list for the driver's
        // next kick once it is back on (`process` ends here), or leave at its reset.
        guard transport.isLive else { return }
        var done = 0
        do {
            for request in inFlight[index] {
                guard let status = request.status else { break }
                guard let statusByte = request.statusByte else {
                    try queue.addUsed(head: request.head, length: 0)
                    done += 1
                    continue
                }
                guard request.removals == context.memory.removals else {
                    // Memory was unmapped while it was out: the data may have gone to retired pages.
                    let now = request.statusAddress.flatMap { try? context.memory.hostRange($0, length: 1).baseAddress }
                    now?.storeBytes(of: VirtioBlkStatus.ioError.rawValue, as: UInt8.self)
                    try queue.addUsed(head: request.head, length: now == nil ? 0 : 1)
                    done += 1
                    continue
                }
                statusByte.storeBytes(of: status.rawValue, as: UInt8.self)
                try queue.addUsed(head: request.head, length: status == .ok ? request.writtenOnSuccess : 1)
                done += 1
            }
        } catch {
            transport.fail(queue, error)
        }
        inFlight[index].removeFirst(done)
        context.memory.giveBack(done)
        if done > 0 { transport.completeUsed(queue) }
    }

    /// The queue is gone (the device needs a reset after a ring error): finished requests
    /// can never be returned, so they leave the list and give back the guest memory they
    /// held; otherwise mappings a vfio-user client unmapped stay retired for good
    /// (`GuestMemory.lentOut`). Requests still in the backend leave when they finish.
    private func dropFinished(queue index: Int) {
        guard index >= 0, index < inFlight.count else { return }
        let before = inFlight[index].count
        inFlight[index].removeAll { $0.status != nil }
        context.memory.giveBack(before - inFlight[index].count)
    }

    private func nextID() -> UInt64 {
        nextRequestID &+= 1
        return nextRequestID
    }
}
