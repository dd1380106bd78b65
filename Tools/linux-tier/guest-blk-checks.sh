#!/bin/sh
# Runs inside the Linux guest of the driver tier (Tools/linux-tier/run.py) as
# `swiftvmm.run=swiftvmm-blk-checks,IMPL`: Linux's virtio_blk driver against one
# virtio-blk disk (serial tier-disk, 64 MiB, an ext4 file system made on the host),
# Linux's virtio_rng driver against one virtio-rng device, and Linux's virtio_console
# against one console whose port goes to a Unix socket the host connects to.
# Prints "CHECK NAME PASS|FAIL detail" and "METRIC NAME VALUE"; "BLOCK-RESIZE" asks the
# host to grow the disk to 96 MiB over QMP (block_resize).
impl=${1:-swiftvmm}
check() { if [ "$2" = 0 ]; then echo "CHECK $1 PASS $3"; else echo "CHECK $1 FAIL $3"; fi; }
D=/sys/block/vda

check disk-present $([ -d $D ]; echo $?) "$(ls /sys/block | tr '\n' ' ')"
[ -d $D ] || { echo "CHECKS-DONE"; exit 1; }
drv=$(basename "$(readlink $D/device/driver)")
check driver $([ "$drv" = virtio_blk ]; echo $?) "$drv"
check serial $([ "$(cat $D/serial)" = tier-disk ]; echo $?) "$(cat $D/serial)"
check capacity $([ "$(cat $D/size)" = 131072 ]; echo $?) "$(cat $D/size) sectors"
check logical-block-size $([ "$(cat $D/queue/logical_block_size)" = 512 ]; echo $?) "$(cat $D/queue/logical_block_size)"

# CONFIG_WCE: the driver reads the cache mode and may change it (cache_type_store).
check cache-write-back $([ "$(cat $D/cache_type)" = "write back" ]; echo $?) "$(cat $D/cache_type)"
echo "write through" > $D/cache_type
check cache-write-through $([ "$(cat $D/cache_type)" = "write through" ]; echo $?) "$(cat $D/cache_type)"
echo "write back" > $D/cache_type

mkdir -p /mnt
check mount $(mount -t ext4 /dev/vda /mnt; echo $?) "$(dmesg | grep -i 'ext4' | tail -1)"
dd if=/dev/urandom of=/mnt/pattern bs=1M count=8 2>/dev/null
sum=$(md5sum /mnt/pattern | cut -d' ' -f1)
sync
umount /mnt
echo 3 > /proc/sys/vm/drop_caches
mount -t ext4 /dev/vda /mnt
again=$(md5sum /mnt/pattern | cut -d' ' -f1)
check data-roundtrip $([ -n "$sum" ] && [ "$sum" = "$again" ]; echo $?) "$sum / $again"
echo "METRIC pattern-md5 $sum"
check fstrim $(fstrim /mnt >/dev/null 2>&1; echo $?) "discard through VIRTIO_BLK_T_DISCARD"
umount /mnt

start=$(cut -d' ' -f1 /proc/uptime)
dd if=/dev/vda of=/dev/null bs=1M count=64 2>/dev/null
end=$(cut -d' ' -f1 /proc/uptime)
echo "METRIC read-64MiB-seconds $(echo "$start $end" | awk '{print $2 - $1}')"

# A config change: the host grows the disk; virtblk_config_changed_work re-reads capacity.
echo "BLOCK-RESIZE"
i=0; while [ $i -lt 100 ] && [ "$(cat $D/size)" != 196608 ]; do sleep 0.1; i=$((i+1)); done
check resize-seen $([ "$(cat $D/size)" = 196608 ]; echo $?) "$(cat $D/size) sectors"

# virtio-rng: the driver registers virtio_rng.0 with the hw_random core, which makes it
# current (quality 1000) and reads it from /dev/hwrng (virtio_read: one 64-byte request
# at a time).
R=/sys/class/misc/hw_random
rdrv=$(ls /sys/bus/virtio/drivers/virtio_rng 2>/dev/null | grep virtio | head -1)
check rng-driver $([ -n "$rdrv" ]; echo $?) "$(ls /sys/bus/virtio/drivers 2>/dev/null | tr '\n' ' ')"
check rng-current $(grep -q '^virtio_rng' $R/rng_current 2>/dev/null; echo $?) "$(cat $R/rng_current 2>/dev/null) of $(cat $R/rng_available 2>/dev/null)"
start=$(cut -d' ' -f1 /proc/uptime)
one=$(dd if=/dev/hwrng bs=64 count=256 2>/dev/null | md5sum | cut -d' ' -f1)
end=$(cut -d' ' -f1 /proc/uptime)
two=$(dd if=/dev/hwrng bs=64 count=256 2>/dev/null | md5sum | cut -d' ' -f1)
size=$(dd if=/dev/hwrng bs=64 count=16 2>/dev/null | wc -c | tr -d ' ')
zero=$(dd if=/dev/zero bs=64 count=256 2>/dev/null | md5sum | cut -d' ' -f1)
check rng-read $([ "$size" = 1024 ] && [ "$one" != "$two" ] && [ "$one" != "$zero" ]; echo $?) "$size bytes; 16 KiB twice: $one $two"
echo "METRIC hwrng-16KiB-seconds $(echo "$start $end" | awk '{print $2 - $1}')"

# virtio-console: without MULTIPORT, virtio_console makes the one port hvc0 (virtcons_probe,
# add_port). "HVC-READY" has the host connect to the port's socket and say HOST-HELLO (the
# receive queue); the guest answers with a marker the host must read (the transmit queue,
# hvc's put_chars) and says "HVC-SENT".
cdrv=$(ls /sys/bus/virtio/drivers/virtio_console 2>/dev/null | grep virtio | head -1)
check console-driver $([ -n "$cdrv" ]; echo $?) "$(ls /sys/bus/virtio/drivers 2>/dev/null | tr '\n' ' ')"
if [ -c /dev/hvc0 ]; then
    exec 3<>/dev/hvc0
    stty -F /dev/hvc0 -echo 2>/dev/null
    echo "HVC-READY"
    line=""
    read -t 20 line <&3
    check console-in $([ "$line" = HOST-HELLO ]; echo $?) "read '$line' from hvc0"
    echo "TIER-HVC0-$impl" >&3
    echo "HVC-SENT"
    exec 3>&-
else
    check console-in 1 "no /dev/hvc0: $(ls /dev | tr '\n' ' ')"
fi

bad=$(dmesg | grep -iE "I/O error|blk_update_request|buffer i/o|EXT4-fs error" | head -3)
check dmesg-clean $([ -z "$bad" ]; echo $?) "$bad"
echo "CHECKS-DONE"
