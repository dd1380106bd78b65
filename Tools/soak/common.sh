# Tools/soak/common.sh — shared by Tools/soak/run and Tools/soak/faults (sourced, not run).
# Builds swiftvmm-bench (release, .build-soak), and samples a process: RSS, open fds and
# per-thread CPU time from /proc, so a leak or a spinning thread shows in numbers.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bench="$root/.build-soak/release/SwiftVMMBench"

build_bench() {
  echo "== building swiftvmm-bench (release, .build-soak)" >&2
  swift build --package-path "$root/Benchmarks" -c release --scratch-path "$root/.build-soak" --product SwiftVMMBench >&2
}

need_root() {
  if [ "$(id -u)" -ne 0 ]; then echo "$1: needs root (network namespace, TAP, vde_switch)" >&2; exit 2; fi
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
fd_count() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
# CPU time (utime+stime, clock ticks) of the whole process.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# "tid-name:ticks" for each thread (comm may hold spaces: take the fields after the ')').
thread_ticks() {
  local t
  for t in /proc/"$1"/task/*; do
    local comm stat
    comm=$(tr ' ' '_' < "$t/comm" 2>/dev/null) || continue
    stat=$(sed 's/.*) //' "$t/stat" 2>/dev/null) || continue
    echo "$(basename "$t")-$comm:$(echo "$stat" | awk '{print $12 + $13}')"
  done
}
ticks_per_second=$(getconf CLK_TCK)

# sample_loop PID INTERVAL FILE: one line "elapsed rss_kib fds cpu_ticks" per INTERVAL
# while PID lives.
sample_loop() {
  local pid=$1 interval=$2 file=$3 start
  start=$(date +%s)
  while kill -0 "$pid" 2>/dev/null; do
    echo "$(( $(date +%s) - start )) $(rss_kib "$pid") $(fd_count "$pid") $(cpu_ticks "$pid")" >> "$file"
    sleep "$interval"
  done
}

# summarize FILE: first/last/max of RSS and fd count (skipping empty samples).
summarize() {
  awk '$2 > 0 { n++; if (n == 1) { r0 = $2; f0 = $3 } r = $2; f = $3; if ($2 > rm) rm = $2; if ($3 > fm) fm = $3 }
       END { printf "samples %d\nrss_kib first %d last %d max %d\nfds first %d last %d max %d\n", n, r0, r, rm, f0, f, fm }' "$1"
}

# per_thread_cpu PID SECONDS: CPU seconds each thread used over a window of SECONDS.
per_thread_cpu() {
  local pid=$1 seconds=$2 before after
  before=$(thread_ticks "$pid" | sort)
  sleep "$seconds"
  after=$(thread_ticks "$pid" | sort)
  join -t: <(echo "$before") <(echo "$after") | \
    awk -F: -v hz="$ticks_per_second" -v s="$seconds" '{ printf "  thread %-16s %.2f CPU-s in %s s\n", $1, ($3 - $2) / hz, s }'
}

# tap_namespace NS: a network namespace with two TAPs, swsk0 (10.77.0.1/24, for the
# virtio-net) and swsk1 (10.78.0.1/24, for the e1000), static neighbours for the NICs'
# MACs, no IPv6: router solicitations and MLD reports would be multicast that the
# e1000's receive filter (no MPE) rightly drops uncounted, blurring the accounting.
# Sets inns (command prefix), taps, macs; `spec I` prints NIC I's soak argument.
tap_namespace() {
  ns=$1
  inns=(ip netns exec "$ns")
  ip netns add "$ns"
  "${inns[@]}" ip link set lo up
  "${inns[@]}" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  macs=(52:54:00:50:00:01 52:54:00:50:00:02)
  taps=(swsk0 swsk1)
  local i
  for i in 0 1; do
    "${inns[@]}" ip tuntap add dev "${taps[$i]}" mode tap
    "${inns[@]}" ip addr add "10.7$((7 + i)).0.1/24" dev "${taps[$i]}"
    "${inns[@]}" ip link set "${taps[$i]}" up
    "${inns[@]}" ip neigh replace "10.7$((7 + i)).0.2" lladdr "${macs[$i]}" dev "${taps[$i]}" nud permanent
  done
}
spec() {
  local peer
  peer=$("${inns[@]}" cat "/sys/class/net/${taps[$1]}/address")
  echo "tap:${taps[$1]}@${macs[$1]},10.7$((7 + $1)).0.2,$peer,10.7$((7 + $1)).0.1"
}
