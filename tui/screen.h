/* The terminal: the one module that initialises curses, owns the colours and restores the terminal
 * (at close, atexit, and on SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGTERM, SIGHUP before re-raising with
 * the default action). It takes a finished tui_grid and puts it on the terminal in one update. */
#ifndef PF_TUI_SCREEN_H
#define PF_TUI_SCREEN_H

#include <stdio.h>
#include <wchar.h>

#include "tui/grid.h"

typedef enum screen_colors {
    SCREEN_MONO,        /* NO_COLOR set, or a terminal without colours */
    SCREEN_8,           /* 8 or 16 colours */
    SCREEN_256,         /* the xterm 256-colour palette */
    SCREEN_PALETTE,     /* COLORTERM=truecolor and redefinable colours: the colormaps in the palette */
    SCREEN_DIRECT,      /* 24-bit colour (terminfo RGB / direct colour) */
} screen_colors;

/* Start curses on the terminal (in, out; NULL: stdin, stdout) of type term (NULL: $TERM). 0 or -1
 * with a message on stderr. Sets the locale from the environment (UTF-8 needed for the glyphs). */
int  screen_open(FILE *in, FILE *out, const char *term);
void screen_close(void);             /* idempotent; also what atexit and the fatal signals run */
int  screen_is_open(void);
screen_colors screen_color_mode(void);
const char   *screen_color_name(void);

void screen_size(int *w, int *h);    /* the terminal's size now */
void screen_set_size(int w, int h);  /* resize curses' idea of it (for the bench's virtual screen) */
/* Put g on the terminal (one doupdate); full = 1 repaints every cell (after a resize). */
void screen_present(tui_grid *g, int full);

/* Keys: the next key without waiting. Returns 1 with *key a character (*fn = 0) or a KEY_* code
 * (*fn = 1, KEY_RESIZE after a resize), 0 when there is none. */
int  screen_key(wint_t *key, int *fn);
/* Wait up to ms (-1: forever) for input; 1 when there is some, 0 on timeout or a signal. */
int  screen_wait(int ms);

#endif
