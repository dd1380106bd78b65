#ifndef SWIFTVMM_MALLOC_COUNTER_H
#define SWIFTVMM_MALLOC_COUNTER_H
/* Allocation calls (malloc, calloc, realloc, memalign family) made by any thread of this
 * process since it started. Read it before and after a measured loop. */
unsigned long mallocCounterValue(void);
#endif
