/* Per-thread error message of the engine (see error.h). */
#include "engine/error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char error_text[512];

int pf_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_text, sizeof error_text, fmt, ap);
    va_end(ap);
    return -1;
}

const char *pf_error_message(void) { return error_text; }

void pf_error_clear(void) { error_text[0] = '\0'; }
