/// A device's own counts — what it served, and what it dropped or refused and why — for
/// QMP's `x-swiftvmm-counters`, so that drops a device counts are seen (a NIC's are its
/// link's). Read with the device's lock held; names are kebab-case, as QMP's.
public protocol DeviceCounters: AnyObject {
    var counters: [(name: String, value: UInt64)] { get }
}
