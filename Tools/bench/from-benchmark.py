#!/usr/bin/env python3
"""Turns package-benchmark's JMH export of the SwiftVMMBenchmarks suite (the in-memory
datapath and the micro-benchmarks, Benchmarks/Benchmarks/SwiftVMMBenchmarks) into the
`BENCH key value` lines report.py reads, so those suites sit in the same results table
as the raw-C and QEMU comparisons.

Usage: from-benchmark.py BASELINE.jmh.json >> bench.txt

Every benchmark runs 1,000 operations per sample (scalingFactor .kilo), so a sample's
wall clock in µs is the ns per operation. Per benchmark it prints
  <name>.ns      median (p50) ns per operation
  <name>.allocs  malloc calls per operation at p90 of the samples (the percentile the
                 thresholds check; 0 on an allocation-free path)
  <name>.ops     operations per second at the median
  <name>.gbps    Gbit/s at the median, for the paths that move a frame
and the e1000 TX descriptor costs the old micro suite printed, derived from the
datapath runs: micro.e1000.txd.legacy (= one 1514-byte packet, one descriptor) and
micro.e1000.txd.tso (a 64 KiB TSO send over its 17 descriptors).
"""
import json
import sys

OPS_PER_SAMPLE = 1000
PREFIX = "package.benchmark.SwiftVMMBenchmarks."
LENGTHS = {"64": 64, "1500": 1514, "9000": 9014, "tso64k": 65534, "tso64k-sw": 65534}
TSO_DESCRIPTORS = (65534 + 4095) // 4096 + 1   # 16 data descriptors and the context descriptor


def frame_bytes(name):
    """Bytes one operation moves, for Gbit/s; None when it is not a data path."""
    parts = name.split(".")
    if name.startswith("mem."):
        return LENGTHS.get(parts[-1])
    if name.startswith("micro.checksum."):
        return int(parts[-1])
    if name in ("micro.pcap", "micro.pcap-file"):
        return 1514
    return None


def fmt(v):
    if v == 0:
        return "0"
    digits = 0 if abs(v) >= 100 else 2 if abs(v) >= 1 else 4
    return f"{v:.{digits}f}"


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    ns, allocs = {}, {}
    for element in json.load(open(sys.argv[1])):
        name = element["benchmark"]
        name = name[len(PREFIX):] if name.startswith(PREFIX) else name.rsplit(".", 1)[-1]
        metrics = element.get("secondaryMetrics", {})
        wall = metrics.get("Time (wall clock)")
        if wall is None:
            continue
        # JMH scores time in µs: µs per 1,000 operations = ns per operation.
        per_op = wall["scorePercentiles"]["50.0"] * 1000 / OPS_PER_SAMPLE
        ns[name] = per_op
        print(f"BENCH {name}.ns {fmt(per_op)}")
        malloc = metrics.get("Malloc (total)")
        if malloc is not None:
            allocs[name] = malloc["scorePercentiles"]["90.0"] / OPS_PER_SAMPLE
            print(f"BENCH {name}.allocs {fmt(allocs[name])}")
        if per_op > 0:
            print(f"BENCH {name}.ops {fmt(1e9 / per_op)}")
            size = frame_bytes(name)
            if size:
                print(f"BENCH {name}.gbps {fmt(size * 8 / per_op)}")
    for source, key, descriptors in [("mem.e1000.tx.1500", "micro.e1000.txd.legacy", 1),
                                     ("mem.e1000.tx.tso64k", "micro.e1000.txd.tso", TSO_DESCRIPTORS)]:
        if source in ns:
            print(f"BENCH {key}.ns {fmt(ns[source] / descriptors)}")
        if source in allocs:
            print(f"BENCH {key}.allocs {fmt(allocs[source] / descriptors)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
