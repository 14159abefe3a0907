/* A small library of the project's own for the wheel tests: it needs libgomp (not on the
 * manylinux whitelist, so auditwheel must graft the target's copy) and libm. */
#include <math.h>
#include <omp.h>

int nntc_demo_threads(void) { return omp_get_max_threads(); }

double nntc_demo_norm(const double* values, int count) {
  double sum = 0.0;
#pragma omp parallel for reduction(+ : sum)
  for (int i = 0; i < count; ++i) sum += values[i] * values[i];
  return sqrt(sum);
}
