/* Runs a parallel loop on 4 worker threads on the target (natively or under QEMU user
 * emulation) and checks every item was visited exactly once. */
#include <stdio.h>
#include <pthreadpool.h>

#define ITEMS 1000

static void visit(void *context, size_t i) {
	((int *) context)[i] += (int) i + 1;
}

int main(void) {
	static int seen[ITEMS];
	pthreadpool_t pool = pthreadpool_create(4);
	if (pool == NULL) {
		fprintf(stderr, "pthreadpool_create failed\n");
		return 1;
	}
	pthreadpool_parallelize_1d(pool, visit, seen, ITEMS, 0);
	const size_t threads = pthreadpool_get_threads_count(pool);
	pthreadpool_destroy(pool);
	long sum = 0;
	for (int i = 0; i < ITEMS; i++) {
		if (seen[i] != i + 1) {
			fprintf(stderr, "item %d visited wrongly (%d)\n", i, seen[i]);
			return 2;
		}
		sum += seen[i];
	}
	printf("threads: %zu sum: %ld\n", threads, sum);
	return sum == (long) ITEMS * (ITEMS + 1) / 2 ? 0 : 3;
}
