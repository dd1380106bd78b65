/* COM1 output (polled: port I/O costs an exit each, so nothing fancier) and the small
 * string helpers gcc may call even with -ffreestanding. */
#include "mini.h"

void putc(char c) {
    while (!(inb(COM1 + 5) & 0x20)) { } /* LSR.THRE */
    outb(COM1, (u8)c);
}

void puts(const char *s) {
    while (*s) {
        if (*s == '\n') putc('\r');
        putc(*s++);
    }
}

void puthex(u64 v, int digits) {
    static const char hex[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--) putc(hex[(v >> (4 * i)) & 0xf]);
}

void putdec(u32 v) {
    char buf[11];
    int n = 0;
    do { buf[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) putc(buf[--n]);
}

void putmac(const u8 *mac) {
    for (int i = 0; i < 6; i++) {
        if (i) putc(':');
        puthex(mac[i], 2);
    }
}

void *memset(void *d, int c, u32 n) {
    u8 *p = d;
    while (n--) *p++ = (u8)c;
    return d;
}

void *memcpy(void *d, const void *s, u32 n) {
    u8 *p = d;
    const u8 *q = s;
    while (n--) *p++ = *q++;
    return d;
}

u32 arp_request(u8 *f, const u8 *mac) {
    static const u8 head[] = { 0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01 };
    memset(f, 0, 60);
    memset(f, 0xff, 6);                 /* broadcast */
    memcpy(f + 6, mac, 6);
    memcpy(f + 12, head, sizeof head);  /* ARP, Ethernet/IPv4, request */
    memcpy(f + 22, mac, 6);             /* sender MAC */
    f[28] = 10; f[29] = 0; f[30] = 2; f[31] = 15;  /* sender IP 10.0.2.15 */
    f[38] = 10; f[39] = 0; f[40] = 2; f[41] = 2;   /* target IP 10.0.2.2 */
    return 60;
}

int is_arp_reply(const u8 *f, u32 len) {
    return len >= 42 && f[12] == 0x08 && f[13] == 0x06 && f[20] == 0 && f[21] == 2
        && f[28] == 10 && f[29] == 0 && f[30] == 2 && f[31] == 2;
}

int is_arp_request(const u8 *f, u32 len) {
    return len >= 42 && f[12] == 0x08 && f[13] == 0x06 && f[20] == 0 && f[21] == 1
        && f[38] == 10 && f[39] == 0 && f[40] == 2 && f[41] == 2;
}

u32 arp_reply(u8 *f, const u8 *mac, const u8 *request) {
    memset(f, 0, 60);
    memcpy(f, request + 6, 6);          /* to the asker */
    memcpy(f + 6, mac, 6);
    memcpy(f + 12, request + 12, 8);    /* ARP, Ethernet/IPv4, sizes */
    f[21] = 2;                          /* reply */
    memcpy(f + 22, mac, 6);             /* sender: us, 10.0.2.2 */
    memcpy(f + 28, request + 38, 4);
    memcpy(f + 32, request + 22, 10);   /* target: the asker's MAC and IP */
    return 60;
}
