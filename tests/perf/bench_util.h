/*
 * bench_util.h - small helpers shared by the benchmarks in tests/perf/:
 * the clock, unaligned integers in payloads, and statistics over runs.
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>
#include <time.h>

#ifndef MAX_REPS
#define MAX_REPS 99
#endif

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void put_u64(void *p, uint64_t v)
{
	memcpy(p, &v, sizeof(v));
}

static inline uint64_t get_u64(const void *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static inline int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static inline int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static inline double median_dbl(const double *v, int n)
{
	double tmp[MAX_REPS];
	if (n <= 0)
		return 0.0;
	memcpy(tmp, v, (size_t)n * sizeof(*v));
	qsort(tmp, (size_t)n, sizeof(*tmp), cmp_dbl);
	return (n & 1) ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2.0;
}

static inline double min_dbl(const double *v, int n)
{
	double m = n > 0 ? v[0] : 0.0;
	for (int i = 1; i < n; i++)
		if (v[i] < m)
			m = v[i];
	return m;
}

static inline double max_dbl(const double *v, int n)
{
	double m = n > 0 ? v[0] : 0.0;
	for (int i = 1; i < n; i++)
		if (v[i] > m)
			m = v[i];
	return m;
}

static inline double tv_sec(struct timeval tv)
{
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}


/* How busy the machine was between two marks, minus our own CPU: the
 * benchmarks flag figures taken while other processes ran. */
struct load_mark {
	uint64_t t;      /* CLOCK_MONOTONIC ns */
	double busy;     /* machine busy CPU seconds (/proc/stat) */
	double own;      /* our CPU seconds: self + waited children */
};

static inline void load_sample(struct load_mark *m)
{
	unsigned long long v[8] = { 0 };
	struct rusage self, kids;
	long hz = sysconf(_SC_CLK_TCK);
	FILE *f = fopen("/proc/stat", "r");

	m->busy = -1.0;
	if (f) {
		/* user nice system idle iowait irq softirq steal */
		if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu",
		           &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
		           &v[7]) == 8 &&
		    hz > 0)
			m->busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6] +
			                   v[7]) /
			          (double)hz;
		fclose(f);
	}
	getrusage(RUSAGE_SELF, &self);
	getrusage(RUSAGE_CHILDREN, &kids);
	m->own = tv_sec(self.ru_utime) + tv_sec(self.ru_stime) +
	         tv_sec(kids.ru_utime) + tv_sec(kids.ru_stime);
	m->t = now_ns();
}

/* CPU used by everything but this benchmark, in % of the whole machine. */
static inline double load_other_pct(const struct load_mark *a,
                             const struct load_mark *b)
{
	double wall = (double)(b->t - a->t) / 1e9;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	double other;

	if (a->busy < 0 || b->busy < 0 || wall <= 0 || ncpu < 1)
		return -1.0;
	other = (b->busy - a->busy) - (b->own - a->own);
	if (other < 0)
		other = 0;
	return 100.0 * other / (wall * (double)ncpu);
}

#endif
