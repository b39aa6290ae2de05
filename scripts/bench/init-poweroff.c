/* Baseline /init for scripts/bench-boot: reboot at once (with reboot=k the VMM sees a
 * reset), so a plain qemu boot measures kernel boot to /init and exit, nothing else. */
#include <sys/reboot.h>
#include <unistd.h>

int main(void)
{
	static const char msg[] = "baseline-init: reached /init\n";
	write(1, msg, sizeof msg - 1);
	reboot(RB_AUTOBOOT);
	return 0;
}
