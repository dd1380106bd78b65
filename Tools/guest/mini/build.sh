#!/bin/sh
# Builds the mini guest (a freestanding 32-bit PVH ELF) into $1 (default: guest-out/mini, gitignored).
# Needs only gcc with -m32 code generation (no 32-bit libc: nothing is linked in).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../../../guest-out/mini}
mkdir -p "$out"
gcc -m32 -march=i686 -ffreestanding -fno-pic -fno-pie -fno-stack-protector -fno-asynchronous-unwind-tables \
    -nostdlib -static -no-pie -O2 -Wall -Wextra -Werror \
    -Wl,-T,"$here/link.ld" -Wl,--build-id=none -Wl,--no-warn-rwx-segments \
    -o "$out/mini.elf" "$here"/entry.S "$here"/*.c
echo "$out/mini.elf"
