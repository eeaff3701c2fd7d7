/* Errors: the engine never exits or prints. A failing function returns -1 (or NULL) and leaves a
 * message here, per thread, for the caller (the Lua binding) to turn into a Lua error. */
#ifndef PF_ERROR_H
#define PF_ERROR_H

#if defined(__GNUC__)
#define PF_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define PF_PRINTF(a, b)
#endif

/* Set the current thread's error message; always returns -1 so that `return pf_error(...)` works. */
int pf_error(const char *fmt, ...) PF_PRINTF(1, 2);
/* Prepend context to the current message ("layer 2 (mamba): " + message); returns -1. */
int pf_error_prefix(const char *fmt, ...) PF_PRINTF(1, 2);
/* The last message set on this thread ("" when none). */
const char *pf_error_message(void);
void pf_error_clear(void);

/* Propagate: evaluate an int-returning call and return -1 from the caller when it failed. */
#define PF_TRY(call) do { if ((call) < 0) return -1; } while (0)

#endif
