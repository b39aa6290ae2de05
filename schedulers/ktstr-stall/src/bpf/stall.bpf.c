// SPDX-License-Identifier: GPL-2.0-only
/*
 * ktstr-stall: a sched_ext scheduler that works until it is told to stop.
 *
 * Every task goes to the kernel's global DSQ (a FIFO every CPU consumes). Once
 * `stall_at_ns` has passed, enqueue drops tasks instead: they stay runnable but are
 * never dispatched, and the kernel's watchdog ejects the scheduler after
 * `sched_ext_ops.timeout_ms` ("runnable task stall"). ops.exit records why the kernel
 * ended it so the loader can print it.
 *
 * No headers at all (no vmlinux.h, no libbpf headers): libbpf matches struct_ops members
 * by name against the running kernel's BTF, kfuncs by name and prototype, and the exit
 * info fields by CO-RE relocation, so these local declarations only need the kernel's
 * names and sizes. The loader (src/main.rs) writes `timeout_ms` before loading and
 * `stall_at_ns` once attached; keep `struct sched_ext_ops` below in sync with its offsets.
 */

typedef unsigned long long u64;
typedef long long s64;
typedef unsigned int u32;
typedef int s32;
typedef _Bool bool;

#define SEC(name) __attribute__((section(name), used))
#define __ksym __attribute__((section(".ksyms")))
#define __weak __attribute__((weak))
#define bpf_ksym_exists(sym) (!!(sym))

/* include/linux/sched/ext.h (SCX_DSQ_FLAG_BUILTIN | 1) and SCX_SLICE_DFL (20 ms). */
#define SCX_DSQ_GLOBAL 0x8000000000000001ULL
#define SCX_SLICE_DFL 20000000ULL

/* Helper ids from include/uapi/linux/bpf.h. */
static u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_probe_read_kernel_str)(void *dst, u32 size, const void *src) = (void *)115;

/* A definition, not a declaration: libbpf only finds a kfunc compatible when its pointer
 * arguments point to the same kind (a struct, not a forward declaration). */
struct task_struct {
	int pid;
} __attribute__((preserve_access_index));

/* v6.19+: returns bool; v6.13-v6.18: void. libbpf ignores the ___ suffixes. */
extern bool scx_bpf_dsq_insert___v2___compat(struct task_struct *p, u64 dsq_id, u64 slice,
					     u64 enq_flags) __ksym __weak;
extern void scx_bpf_dsq_insert___v1(struct task_struct *p, u64 dsq_id, u64 slice,
				    u64 enq_flags) __ksym __weak;

enum scx_exit_kind { SCX_EXIT_NONE };

struct scx_exit_info {
	enum scx_exit_kind kind;
	s64 exit_code;
	const char *reason;
	char *msg;
} __attribute__((preserve_access_index));

char _license[] SEC("license") = "GPL";

/* Monotonic time (CLOCK_MONOTONIC = bpf_ktime_get_ns) after which tasks are dropped;
 * 0 = never. Alone in its own map, so the loader can set it after attach. */
u64 stall_at_ns SEC(".data.stall") = 0;

/* Everything userspace reads back, in one .bss object (offsets in src/main.rs). */
struct stall_state {
	u64 enqueued;
	u64 dropped;
	s32 exit_kind;
	u32 exited;
	char exit_reason[128];
	char exit_msg[1024];
};
struct stall_state state;

SEC("struct_ops/select_cpu")
s32 stall_select_cpu(u64 *ctx)
{
	/* Stay on the previous CPU and never insert directly into a local DSQ, so every
	 * wake-up goes through enqueue (where the stall happens). */
	return (s32)ctx[1];
}

SEC("struct_ops/enqueue")
void stall_enqueue(u64 *ctx)
{
	struct task_struct *p = (void *)ctx[0];
	u64 enq_flags = ctx[1];

	if (stall_at_ns && bpf_ktime_get_ns() >= stall_at_ns) {
		__sync_fetch_and_add(&state.dropped, 1);
		return;
	}
	__sync_fetch_and_add(&state.enqueued, 1);
	if (bpf_ksym_exists(scx_bpf_dsq_insert___v2___compat))
		scx_bpf_dsq_insert___v2___compat(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
	else
		scx_bpf_dsq_insert___v1(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC("struct_ops/exit")
void stall_exit(u64 *ctx)
{
	struct scx_exit_info *ei = (void *)ctx[0];

	state.exit_kind = ei->kind;
	bpf_probe_read_kernel_str(state.exit_reason, sizeof(state.exit_reason), ei->reason);
	bpf_probe_read_kernel_str(state.exit_msg, sizeof(state.exit_msg), ei->msg);
	state.exited = 1;
}

/* Only names and sizes matter to libbpf; the order is ours (see src/main.rs). */
struct sched_ext_ops {
	s32 (*select_cpu)(struct task_struct *p, s32 prev_cpu, u64 wake_flags);
	void (*enqueue)(struct task_struct *p, u64 enq_flags);
	void (*exit)(struct scx_exit_info *ei);
	u64 flags;
	u32 timeout_ms;
	char name[128];
};

SEC(".struct_ops.link")
struct sched_ext_ops ktstr_stall_ops = {
	.select_cpu = (void *)stall_select_cpu,
	.enqueue = (void *)stall_enqueue,
	.exit = (void *)stall_exit,
	.timeout_ms = 0,
	.name = "ktstr_stall",
};
