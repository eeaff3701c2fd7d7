/* Per-thread error message of the engine (see error.h). */
#include "engine/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char error_text[2048];   /* room to list missing checkpoint tensors */

int pf_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_text, sizeof error_text, fmt, ap);
    va_end(ap);
    return -1;
}

int pf_error_prefix(const char *fmt, ...)
{
    char prefix[256], rest[sizeof error_text];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(rest, error_text, sizeof rest);
    size_t n = strlen(prefix);
    memcpy(error_text, prefix, n);
    size_t room = sizeof error_text - 1 - n;
    size_t len = strnlen(rest, room);
    memcpy(error_text + n, rest, len);
    error_text[n + len] = '\0';
    return -1;
}

const char *pf_error_message(void) { return error_text; }

void pf_error_clear(void) { error_text[0] = '\0'; }
