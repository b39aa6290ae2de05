/* ktstr-vmm self-test guest: a freestanding x86-64 program run on every vCPU.
 *
 * Each vCPU reads its CPUID topology leaves into its slot and checks in. The boot vCPU
 * (index 0) walks the ACPI tables (RSDP in the BIOS area -> XSDT -> MADT, SRAT, SLIT,
 * checksums verified), waits for every CPU the MADT lists, then writes what it saw into
 * the SHM ring (protocol.md frames, kind 3, JSON payloads, CRC-32 computed here), prints
 * progress on COM1 and resets the machine through the i8042.
 *
 * Built with -mgeneral-regs-only and without SSE/AVX/XSAVE/INT3, so KVM's instruction
 * emulator (KVM-PVM) can run it. No libc: everything it needs is below.
 */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

#define MAX_CPUS 1024
#define COM1 0x3f8
#define FRAME_MAGIC 0x464b
#define KIND_SELF_TEST 3
#define SHM_MAGIC 0x4d4853525453544bUL /* the bytes "KTSTRSHM" */
/* CPU arrival wait, in TSC cycles (about 20 s at 2.5 GHz). */
#define WAIT_CYCLES (50UL * 1000 * 1000 * 1000)

/* CPUID leaves reported per CPU: (leaf, subleaf). */
static const u32 leaves[][2] = {
    {0, 0}, {1, 0}, {4, 0}, {4, 1}, {4, 2}, {4, 3}, {4, 4},
    {0xb, 0}, {0xb, 1}, {0xb, 2}, {0x1f, 0}, {0x1f, 1}, {0x1f, 2},
    {0x80000000, 0}, {0x80000001, 0}, {0x80000006, 0}, {0x80000008, 0},
    {0x8000001d, 0}, {0x8000001d, 1}, {0x8000001d, 2}, {0x8000001d, 3}, {0x8000001d, 4},
    {0x8000001e, 0}, {0x80000026, 0},
};
#define NLEAVES (sizeof(leaves) / sizeof(leaves[0]))

struct cpu_slot {
    volatile u32 done;
    u32 regs[NLEAVES][4];
};

static struct cpu_slot slots[MAX_CPUS];
static volatile u32 arrived;

/* ---- freestanding helpers (gcc may emit calls to these) ---- */
void *memset(void *d, int c, u64 n) {
    u8 *p = d;
    while (n--) *p++ = (u8)c;
    return d;
}
void *memcpy(void *d, const void *s, u64 n) {
    u8 *p = d;
    const u8 *q = s;
    while (n--) *p++ = *q++;
    return d;
}

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void cpuid(u32 leaf, u32 sub, u32 r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}
static inline u64 rdtsc(void) {
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}
static inline void pause(void) { __asm__ volatile("pause" ::: "memory"); }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline u64 ld64(const void *p) { return *(const volatile u64 *)p; }
static inline u32 ld32(const void *p) { return *(const volatile u32 *)p; }
static inline void st64(void *p, u64 v) { barrier(); *(volatile u64 *)p = v; barrier(); }

static void puts_serial(const char *s) {
    while (*s) outb(COM1, (u8)*s++);
}

static void puthex_serial(u64 v) {
    outb(COM1, '0');
    outb(COM1, 'x');
    for (int i = 60; i >= 0; i -= 4) outb(COM1, (u8)"0123456789abcdef"[(v >> i) & 0xf]);
}

/* i8042 reset; where there is no i8042 (qemu microvm), a triple fault: an empty IDT and ud2. */
static void reset(void) {
    outb(0x64, 0xfe);
    static const struct { u16 limit; u64 base; } __attribute__((packed)) no_idt = {0, 0};
    __asm__ volatile("lidt %0; ud2" ::"m"(no_idt));
    for (;;) __asm__ volatile("cli; hlt");
}

/* ---- JSON text buffer ---- */
static char buf[128 * 1024];
static u64 blen;
static int overflow;

static void put(const char *s) {
    while (*s) {
        if (blen + 1 >= sizeof(buf)) { overflow = 1; return; }
        buf[blen++] = *s++;
    }
}
static void putu(u64 v) {
    char t[24];
    int n = 0;
    do { t[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) {
        if (blen + 1 >= sizeof(buf)) { overflow = 1; return; }
        buf[blen++] = t[--n];
    }
}
static void putsig(const u8 *s) {
    char t[5];
    for (int i = 0; i < 4; i++) t[i] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\') ? (char)s[i] : '?';
    t[4] = 0;
    put("\""); put(t); put("\"");
}

/* ---- CRC-32 (IEEE, reflected 0xEDB88320), table-driven ---- */
static u32 crc_table[256];
static void crc_init(void) {
    for (u32 i = 0; i < 256; i++) {
        u32 c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}
static u32 crc_update(u32 crc, const u8 *p, u64 n) {
    while (n--) crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

/* ---- SHM ring writer (docs/protocol.md) ---- */
static u8 *shm;
static u64 ring_off, ring_size;
static u32 seq;

static void ring_copy(u64 pos, const u8 *src, u64 n) {
    for (u64 i = 0; i < n; i++) shm[ring_off + ((pos + i) & (ring_size - 1))] = src[i];
}

/* Writes `buf[0..blen)` as one frame of kind 3. Waits (counting) while the ring is full. */
static void emit(void) {
    u64 len = blen;
    u64 fbytes = 16 + ((len + 7) & ~7UL);
    u64 wp = ld64(shm + 64);
    if (fbytes > ring_size) return;
    if (wp + fbytes - ld64(shm + 128) > ring_size) {
        st64(shm + 80, ld64(shm + 80) + 1);
        while (wp + fbytes - ld64(shm + 128) > ring_size) pause();
    }
    u8 hdr[16];
    u16 magic = FRAME_MAGIC, kind = KIND_SELF_TEST;
    u32 plen = (u32)len;
    memcpy(hdr, &magic, 2);
    memcpy(hdr + 2, &kind, 2);
    memcpy(hdr + 4, &plen, 4);
    memcpy(hdr + 8, &seq, 4);
    u32 crc = crc_update(0xffffffffu, hdr, 12);
    crc = crc_update(crc, (const u8 *)buf, len) ^ 0xffffffffu;
    memcpy(hdr + 12, &crc, 4);
    ring_copy(wp, hdr, 16);
    ring_copy(wp + 16, (const u8 *)buf, len);
    static const u8 zeros[8];
    ring_copy(wp + 16 + len, zeros, fbytes - 16 - len);
    seq++;
    st64(shm + 72, ld64(shm + 72) + 1);
    st64(shm + 64, wp + fbytes); /* publish (x86 stores are ordered: release) */
}

/* ---- command line: ktstr.shm=<base>,<size> ---- */
static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}
static const char *parse_num(const char *s, u64 *out) {
    u64 v = 0;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        s += 2;
        while (hexval(*s) >= 0) v = v * 16 + (u64)hexval(*s++);
    } else {
        while (*s >= '0' && *s <= '9') v = v * 10 + (u64)(*s++ - '0');
    }
    *out = v;
    return s;
}
/* Returns a pointer to the value of `key` (e.g. "ktstr.selftest=") in cmd, or 0. */
static const char *find_arg(const char *cmd, const char *key) {
    for (const char *p = cmd; *p; p++) {
        int i = 0;
        while (key[i] && p[i] == key[i]) i++;
        if (!key[i]) return p + i;
    }
    return 0;
}
static int word_is(const char *v, const char *w) {
    if (!v) return 0;
    while (*w && *v == *w) { v++; w++; }
    return !*w && (*v == 0 || *v == ' ');
}

static int find_shm(const char *cmd, u64 *base, u64 *size) {
    static const char key[] = "ktstr.shm=";
    for (const char *p = cmd; *p; p++) {
        int i = 0;
        while (key[i] && p[i] == key[i]) i++;
        if (key[i]) continue;
        const char *q = parse_num(p + i, base);
        if (*q != ',') return 0;
        parse_num(q + 1, size);
        return 1;
    }
    return 0;
}

/* ---- ACPI ---- */
static int sum_ok(const u8 *p, u64 n) {
    u8 s = 0;
    for (u64 i = 0; i < n; i++) s = (u8)(s + p[i]);
    return s == 0;
}
static int sig_is(const u8 *p, const char *s) {
    return p[0] == (u8)s[0] && p[1] == (u8)s[1] && p[2] == (u8)s[2] && p[3] == (u8)s[3];
}

static const u8 *madt, *srat, *slit;

/* Appends the ACPI report to buf; returns the number of enabled CPUs in the MADT. */
static u32 acpi_report(void) {
    const u8 *rsdp = 0;
    for (u64 a = 0xe0000; a < 0x100000; a += 16) {
        const u8 *p = (const u8 *)a;
        if (p[0] == 'R' && p[1] == 'S' && p[2] == 'D' && p[3] == ' ' && p[4] == 'P' && p[5] == 'T' &&
            p[6] == 'R' && p[7] == ' ') { rsdp = p; break; }
    }
    put("{\"t\":\"acpi\",\"rsdp\":");
    if (!rsdp) { put("null}"); return 0; }
    putu((u64)rsdp);
    put(",\"rsdp_ok\":");
    put(sum_ok(rsdp, 20) && sum_ok(rsdp, 36) ? "true" : "false");
    const u8 *xsdt = (const u8 *)ld64(rsdp + 24);
    u32 xlen = ld32(xsdt + 4);
    put(",\"tables\":[[");
    putsig(xsdt); put(",");
    putu(xlen); put(","); put(sum_ok(xsdt, xlen) ? "true" : "false"); put("]");
    u32 n = (xlen - 36) / 8;
    for (u32 i = 0; i < n && i < 64; i++) {
        const u8 *t = (const u8 *)ld64(xsdt + 36 + 8 * i);
        u32 len = ld32(t + 4);
        put(",["); putsig(t); put(","); putu(len); put(","); put(sum_ok(t, len) ? "true" : "false"); put("]");
        if (sig_is(t, "APIC")) madt = t;
        if (sig_is(t, "SRAT")) srat = t;
        if (sig_is(t, "SLIT")) slit = t;
        if (sig_is(t, "FACP")) {
            const u8 *dsdt = (const u8 *)ld64(t + 140);
            u32 dl = ld32(dsdt + 4);
            put(",["); putsig(dsdt); put(","); putu(dl); put(","); put(sum_ok(dsdt, dl) ? "true" : "false"); put("]");
        }
    }
    /* MADT CPU entries: [type, uid, apic id, flags]; IOAPICs: [1, id, address, gsi base]. */
    u32 enabled = 0;
    put("],\"madt\":[");
    if (madt) {
        u32 len = ld32(madt + 4), first = 1;
        for (u32 o = 44; o + 2 <= len;) {
            const u8 *e = madt + o;
            u32 el = e[1];
            if (el < 2) break;
            if (!first) put(",");
            first = 0;
            put("["); putu(e[0]); put(",");
            if (e[0] == 0) {
                putu(e[2]); put(","); putu(e[3]); put(","); putu(ld32(e + 4));
                if (ld32(e + 4) & 1) enabled++;
            } else if (e[0] == 9) {
                putu(ld32(e + 12)); put(","); putu(ld32(e + 4)); put(","); putu(ld32(e + 8));
                if (ld32(e + 8) & 1) enabled++;
            } else if (e[0] == 1) {
                putu(e[2]); put(","); putu(ld32(e + 4)); put(","); putu(ld32(e + 8));
            } else {
                put("0,0,0");
            }
            put("]");
            o += el;
        }
    }
    /* SRAT: cpus [apic, domain], mem [domain, base, len]. */
    put("],\"srat_cpu\":[");
    u32 firstc = 1;
    if (srat) {
        u32 len = ld32(srat + 4);
        for (u32 o = 48; o + 2 <= len;) {
            const u8 *e = srat + o;
            u32 el = e[1];
            if (el < 2) break;
            if (e[0] == 0 || e[0] == 2) {
                if (!firstc) put(",");
                firstc = 0;
                if (e[0] == 0) {
                    u32 dom = e[2] | (u32)e[9] << 8 | (u32)e[10] << 16 | (u32)e[11] << 24;
                    put("["); putu(e[3]); put(","); putu(dom); put("]");
                } else {
                    put("["); putu(ld32(e + 8)); put(","); putu(ld32(e + 4)); put("]");
                }
            }
            o += el;
        }
    }
    put("],\"srat_mem\":[");
    u32 firstm = 1;
    if (srat) {
        u32 len = ld32(srat + 4);
        for (u32 o = 48; o + 2 <= len;) {
            const u8 *e = srat + o;
            u32 el = e[1];
            if (el < 2) break;
            if (e[0] == 1) {
                if (!firstm) put(",");
                firstm = 0;
                put("["); putu(ld32(e + 2)); put(","); putu(ld64(e + 8)); put(","); putu(ld64(e + 16)); put("]");
            }
            o += el;
        }
    }
    put("],\"slit\":[");
    if (slit) {
        u64 nn = ld64(slit + 36);
        for (u64 i = 0; i < nn * nn && i < 64 * 64; i++) {
            if (i) put(",");
            putu(slit[44 + i]);
        }
    }
    put("]}");
    return enabled;
}

/* ---- entry ---- */
void guest_main(u64 idx, const u8 *boot_params) {
    if (idx < MAX_CPUS) {
        struct cpu_slot *s = &slots[idx];
        for (u32 i = 0; i < NLEAVES; i++) cpuid(leaves[i][0], leaves[i][1], s->regs[i]);
        barrier();
        s->done = 1;
        __atomic_fetch_add(&arrived, 1, __ATOMIC_SEQ_CST);
    }
    if (idx != 0) return; /* start.S halts */

    puts_serial("ktstr-selftest: boot vCPU up\n");
    /* No boot_params when entered through PVH (qemu): empty command line, so no SHM. */
    const char *cmd = boot_params ? (const char *)(u64)ld32(boot_params + 0x228) : "";
    u64 base = 0, size = 0;
    /* Failure-path modes for the VMM's own tests: ktstr.selftest=ud2|hang. */
    const char *mode = find_arg(cmd, "ktstr.selftest=");
    if (word_is(mode, "ud2")) {
        puts_serial("ktstr-selftest: executing ud2 with no IDT (expect a triple fault)\n");
        __asm__ volatile("ud2");
    }
    if (!find_shm(cmd, &base, &size)) {
        puts_serial("ktstr-selftest: no ktstr.shm= on the command line\n");
        reset();
    }
    shm = (u8 *)base;
    if (ld64(shm) != SHM_MAGIC || ld32(shm + 8) != 1) {
        puts_serial("ktstr-selftest: bad SHM header magic/version at ");
        puthex_serial(base);
        puts_serial(": magic ");
        puthex_serial(ld64(shm));
        puts_serial("\n");
        reset();
    }
    ring_off = ld64(shm + 24);
    ring_size = ld64(shm + 32);
    if (ring_size < 4096 || (ring_size & (ring_size - 1)) || ring_off + ring_size > size) {
        puts_serial("ktstr-selftest: bad SHM ring geometry\n");
        reset();
    }
    seq = (u32)ld64(shm + 72);
    crc_init();

    blen = 0;
    u32 expected = acpi_report();
    emit();
    puts_serial("ktstr-selftest: ACPI tables read\n");

    u64 t0 = rdtsc();
    int timed_out = 0;
    while (arrived < expected) {
        if (rdtsc() - t0 > WAIT_CYCLES) { timed_out = 1; break; }
        pause();
    }
    u32 reported = 0;
    for (u32 c = 0; c < MAX_CPUS; c++) {
        if (!slots[c].done) continue;
        blen = 0;
        put("{\"t\":\"cpu\",\"i\":"); putu(c); put(",\"l\":[");
        for (u32 i = 0; i < NLEAVES; i++) {
            if (i) put(",");
            put("["); putu(leaves[i][0]); put(","); putu(leaves[i][1]);
            for (int r = 0; r < 4; r++) { put(","); putu(slots[c].regs[i][r]); }
            put("]");
        }
        put("]}");
        emit();
        reported++;
    }
    blen = 0;
    put("{\"t\":\"done\",\"arrived\":"); putu(arrived);
    put(",\"expected\":"); putu(expected);
    put(",\"reported\":"); putu(reported);
    put(",\"timed_out\":"); put(timed_out ? "true" : "false");
    put(",\"overflow\":"); put(overflow ? "true" : "false");
    put("}");
    emit();
    if (word_is(mode, "hang")) {
        puts_serial("ktstr-selftest: report written, halting forever (hang mode)\n");
        for (;;) __asm__ volatile("cli; hlt");
    }
    puts_serial("ktstr-selftest: report written, resetting\n");
    reset();
}
