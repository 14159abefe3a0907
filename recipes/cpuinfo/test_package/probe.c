/* Initialises cpuinfo on the target (natively or under QEMU user emulation) and checks that it
 * found at least one processor and the ISA features NNPACK's fast backend dispatches on. */
#include <stdio.h>
#include <cpuinfo.h>

int main(void) {
	if (!cpuinfo_initialize()) {
		fprintf(stderr, "cpuinfo_initialize failed\n");
		return 1;
	}
	const unsigned count = cpuinfo_get_processors_count();
	printf("processors: %u\n", count);
	if (count == 0) return 2;
#if defined(__aarch64__) || defined(__ARM_NEON__) || defined(__ARM_NEON)
	printf("neon: %d\n", (int) cpuinfo_has_arm_neon());
	if (!cpuinfo_has_arm_neon()) return 3;
#elif defined(__x86_64__)
	printf("avx2: %d fma3: %d\n", (int) cpuinfo_has_x86_avx2(), (int) cpuinfo_has_x86_fma3());
#endif
	cpuinfo_deinitialize();
	return 0;
}
