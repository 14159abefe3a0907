/*
 * Smoke test of a packaged libnnpack.so on its target (natively, or under QEMU through Meson's
 * exe_wrapper): initialise NNPACK, then run one convolution, one 2x2/2 max-pooling and one
 * fully-connected layer through NNPACK's public API with a thread pool, and compare each result
 * with a straightforward reference computed here. NNPACK's fast algorithms (Winograd, FFT) are
 * approximate, so results must agree within a relative tolerance, not exactly.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <nnpack.h>
#include <pthreadpool.h>

static float frand(unsigned *state) {
	*state = *state * 1103515245u + 12345u;
	return (float) ((*state >> 8) & 0xFFFF) / 65536.0f - 0.5f;
}

static void fill(float *data, size_t count, unsigned seed) {
	for (size_t i = 0; i < count; i++) data[i] = frand(&seed);
}

/* Largest |a-b| relative to the largest |b|; also counts non-finite values as failures. */
static double max_relative_error(const float *a, const float *b, size_t count) {
	double max_diff = 0.0, max_ref = 1e-6;
	for (size_t i = 0; i < count; i++) {
		if (!isfinite(a[i])) return INFINITY;
		const double diff = fabs((double) a[i] - (double) b[i]);
		if (diff > max_diff) max_diff = diff;
		if (fabs(b[i]) > max_ref) max_ref = fabs(b[i]);
	}
	return max_diff / max_ref;
}

static int report(const char *what, enum nnp_status status, double error, double tolerance) {
	const int ok = status == nnp_status_success && error <= tolerance;
	printf("%-28s status=%d max_rel_error=%.3g tolerance=%.0e %s\n", what, (int) status, error, tolerance,
		ok ? "OK" : "FAILED");
	return ok ? 0 : 1;
}

static int test_convolution(pthreadpool_t pool) {
	enum { IC = 8, OC = 16, H = 12, W = 12, K = 3, OH = H - K + 1 + 2, OW = W - K + 1 + 2 };
	const struct nnp_size input_size = {.width = W, .height = H};
	const struct nnp_padding padding = {.top = 1, .right = 1, .bottom = 1, .left = 1};
	const struct nnp_size kernel_size = {.width = K, .height = K};
	const struct nnp_size stride = {.width = 1, .height = 1};
	static float input[IC * H * W], kernel[OC * IC * K * K], bias[OC], output[OC * OH * OW], expected[OC * OH * OW];
	fill(input, IC * H * W, 1);
	fill(kernel, OC * IC * K * K, 2);
	fill(bias, OC, 3);
	for (int oc = 0; oc < OC; oc++)
		for (int y = 0; y < OH; y++)
			for (int x = 0; x < OW; x++) {
				double sum = bias[oc];
				for (int ic = 0; ic < IC; ic++)
					for (int ky = 0; ky < K; ky++)
						for (int kx = 0; kx < K; kx++) {
							const int iy = y + ky - 1, ix = x + kx - 1;
							if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
							sum += (double) input[(ic * H + iy) * W + ix] * kernel[((oc * IC + ic) * K + ky) * K + kx];
						}
				expected[(oc * OH + y) * OW + x] = (float) sum;
			}
	const enum nnp_status status = nnp_convolution_inference(
		nnp_convolution_algorithm_auto, nnp_convolution_transform_strategy_compute,
		IC, OC, input_size, padding, kernel_size, stride,
		input, kernel, bias, output,
		NULL, NULL, nnp_activation_identity, NULL, pool, NULL);
	return report("convolution 8->16 3x3 pad 1", status, max_relative_error(output, expected, OC * OH * OW), 1e-3);
}

static int test_max_pooling(pthreadpool_t pool) {
	enum { C = 4, H = 10, W = 10, OH = H / 2, OW = W / 2 };
	const struct nnp_size input_size = {.width = W, .height = H};
	const struct nnp_padding padding = {0, 0, 0, 0};
	const struct nnp_size pooling = {.width = 2, .height = 2};
	static float input[C * H * W], output[C * OH * OW], expected[C * OH * OW];
	fill(input, C * H * W, 4);
	for (int c = 0; c < C; c++)
		for (int y = 0; y < OH; y++)
			for (int x = 0; x < OW; x++) {
				float best = -INFINITY;
				for (int dy = 0; dy < 2; dy++)
					for (int dx = 0; dx < 2; dx++) {
						const float v = input[(c * H + 2 * y + dy) * W + 2 * x + dx];
						if (v > best) best = v;
					}
				expected[(c * OH + y) * OW + x] = best;
			}
	const enum nnp_status status = nnp_max_pooling_output(
		1, C, input_size, padding, pooling, pooling, input, output, pool);
	return report("max-pooling 2x2 stride 2", status, max_relative_error(output, expected, C * OH * OW), 0.0);
}

static int test_fully_connected(pthreadpool_t pool) {
	enum { IN = 64, OUT = 24 };
	static float input[IN], kernel[OUT * IN], output[OUT], expected[OUT];
	fill(input, IN, 5);
	fill(kernel, OUT * IN, 6);
	for (int o = 0; o < OUT; o++) {
		double sum = 0.0;
		for (int i = 0; i < IN; i++) sum += (double) input[i] * kernel[o * IN + i];
		expected[o] = (float) sum;
	}
	const enum nnp_status status = nnp_fully_connected_inference(IN, OUT, input, kernel, output, pool);
	return report("fully-connected 64->24", status, max_relative_error(output, expected, OUT), 1e-4);
}

int main(void) {
	const enum nnp_status init = nnp_initialize();
	if (init != nnp_status_success) {
		fprintf(stderr, "nnp_initialize failed with status %d (unsupported CPU?)\n", (int) init);
		return 1;
	}
	pthreadpool_t pool = pthreadpool_create(2);
	const int failures = test_convolution(pool) + test_max_pooling(pool) + test_fully_connected(pool);
	pthreadpool_destroy(pool);
	nnp_deinitialize();
	printf("%d of 3 layer checks failed\n", failures);
	return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
