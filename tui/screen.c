/* The terminal (see screen.h): curses init, colours, signals, teardown, and presenting a frame. */
#include <curses.h>
#include <langinfo.h>
#include <locale.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <term.h>
#include <termios.h>
#include <unistd.h>

#include "tui/screen.h"

static struct {
    int           open;
    SCREEN       *scr;
    FILE         *out;          /* where curses writes */
    int           in_fd;
    struct termios saved;       /* the terminal as we found it, for the fatal-signal path */
    int           have_saved;
    screen_colors mode;
    int           pairs_max;    /* COLOR_PAIRS */
    int           pairs_used;
    /* (fg, bg) terminal colour numbers -> pair, open addressing */
    uint64_t     *keys;         /* (PAIR_SLOTS) key + 1, 0: empty */
    int          *vals;         /* (PAIR_SLOTS) */
    int           map_color[2][256];   /* colormap level -> terminal colour in this mode */
} S;

enum { PAIR_SLOTS = 1 << 17 };

/* ---- restoring the terminal ------------------------------------------------------------------ */

static const int fatal_signals[] = {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGTERM, SIGHUP};

static int out_char(int c) { return putc(c, S.out); }

static void restore_terminal(void)
{
    if (!S.open) return;
    S.open = 0;
    if (S.mode == SCREEN_PALETTE) {   /* the palette we redefined goes back to the terminal's own */
        char *oc = tigetstr("oc");
        if (oc && oc != (char *)-1) tputs(oc, 1, out_char);
    }
    endwin();
    if (S.have_saved) tcsetattr(S.in_fd, TCSANOW, &S.saved);
}

static void on_fatal(int sig)
{
    restore_terminal();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void at_exit(void) { screen_close(); }

void screen_close(void)
{
    if (!S.open) return;
    restore_terminal();
    if (S.scr) {
        delscreen(S.scr);
        S.scr = NULL;
    }
    free(S.keys);
    free(S.vals);
    S.keys = NULL;
    S.vals = NULL;
    for (size_t i = 0; i < sizeof fatal_signals / sizeof *fatal_signals; i++) signal(fatal_signals[i], SIG_DFL);
}

int screen_is_open(void) { return S.open; }

/* ---- colours --------------------------------------------------------------------------------- */

/* xterm's 256 palette: 16 system colours, a 6x6x6 cube, 24 greys */
static int nearest_256(pf_rgb c)
{
    static const int steps[6] = {0, 95, 135, 175, 215, 255};
    int q[3], v[3] = {c.r, c.g, c.b};
    for (int k = 0; k < 3; k++) {
        int best = 0;
        for (int i = 1; i < 6; i++)
            if (abs(steps[i] - v[k]) < abs(steps[best] - v[k])) best = i;
        q[k] = best;
    }
    int cube = 16 + 36 * q[0] + 6 * q[1] + q[2];
    long dc = 0;
    for (int k = 0; k < 3; k++) dc += (long)(steps[q[k]] - v[k]) * (steps[q[k]] - v[k]);
    int mean = (c.r + c.g + c.b) / 3;
    int gi = mean < 8 ? 0 : mean > 238 ? 23 : (mean - 8) / 10;
    int gv = 8 + 10 * gi;
    long dg = (long)(gv - c.r) * (gv - c.r) + (long)(gv - c.g) * (gv - c.g) + (long)(gv - c.b) * (gv - c.b);
    return dg < dc ? 232 + gi : cube;
}

/* the 8 ANSI colours (and their bright versions when there are 16) */
static int nearest_ansi(pf_rgb c, int n)
{
    static const pf_rgb ansi[16] = {{0, 0, 0},       {205, 0, 0},     {0, 205, 0},     {205, 205, 0},
                                    {0, 0, 238},     {205, 0, 205},   {0, 205, 205},   {229, 229, 229},
                                    {127, 127, 127}, {255, 0, 0},     {0, 255, 0},     {255, 255, 0},
                                    {92, 92, 255},   {255, 0, 255},   {0, 255, 255},   {255, 255, 255}};
    int best = 0;
    long bd = -1;
    for (int i = 0; i < n; i++) {
        long d = (long)(ansi[i].r - c.r) * (ansi[i].r - c.r) + (long)(ansi[i].g - c.g) * (ansi[i].g - c.g) +
                 (long)(ansi[i].b - c.b) * (ansi[i].b - c.b);
        if (bd < 0 || d < bd) {
            bd = d;
            best = i;
        }
    }
    return best;
}

enum { PALETTE_LEVELS = 120 };   /* per colormap, in colours 16..135 and 136..255 */

static int rgb_color(pf_rgb c)
{
    switch (S.mode) {
    case SCREEN_DIRECT: {
        int v = (c.r << 16) | (c.g << 8) | c.b;
        return v < 8 ? 8 : v;    /* direct terminfo treats 0..7 as the ANSI colours */
    }
    case SCREEN_256: return nearest_256(c);
    case SCREEN_PALETTE: return nearest_ansi(c, 16);
    case SCREEN_8: return nearest_ansi(c, COLORS >= 16 ? 16 : 8);
    default: return -1;
    }
}

static int term_color(tui_color c)
{
    if (c == TC_DEFAULT) return -1;
    if (TC_IS_MAP(c)) return S.map_color[TC_MAP_OF(c) == PF_CMAP_DIVERGING][TC_LEVEL(c)];
    return rgb_color((pf_rgb){(unsigned char)(c >> 16), (unsigned char)(c >> 8), (unsigned char)c});
}

static int truecolor_env(void)
{
    const char *ct = getenv("COLORTERM");
    return ct && (strcmp(ct, "truecolor") == 0 || strcmp(ct, "24bit") == 0);
}

static void setup_colors(void)
{
    const char *nc = getenv("NO_COLOR");
    S.mode = SCREEN_MONO;
    if ((nc && *nc) || !has_colors()) return;
    start_color();
    use_default_colors();
    if (COLORS >= 0x1000000 || tigetflag("RGB") > 0) S.mode = SCREEN_DIRECT;
    else if (truecolor_env() && can_change_color() && COLORS >= 256) S.mode = SCREEN_PALETTE;
    else if (COLORS >= 256) S.mode = SCREEN_256;
    else if (COLORS >= 8) S.mode = SCREEN_8;
    else return;
    S.pairs_max = COLOR_PAIRS;
    S.keys = calloc(PAIR_SLOTS, sizeof *S.keys);
    S.vals = calloc(PAIR_SLOTS, sizeof *S.vals);
    if (!S.keys || !S.vals) {
        S.mode = SCREEN_MONO;
        return;
    }
    S.pairs_used = 0;
    for (int m = 0; m < 2; m++)
        for (int lv = 0; lv < 256; lv++) {
            pf_rgb c = pf_colormap(m ? PF_CMAP_DIVERGING : PF_CMAP_SEQUENTIAL, lv / 255.0);
            if (S.mode == SCREEN_PALETTE) {
                int k = lv * (PALETTE_LEVELS - 1) / 255;
                S.map_color[m][lv] = 16 + m * PALETTE_LEVELS + k;
            } else {
                S.map_color[m][lv] = rgb_color(c);
            }
        }
    if (S.mode == SCREEN_PALETTE) {
        for (int m = 0; m < 2; m++)
            for (int k = 0; k < PALETTE_LEVELS; k++) {
                pf_rgb c = pf_colormap(m ? PF_CMAP_DIVERGING : PF_CMAP_SEQUENTIAL, (double)k / (PALETTE_LEVELS - 1));
                init_extended_color(16 + m * PALETTE_LEVELS + k, c.r * 1000 / 255, c.g * 1000 / 255, c.b * 1000 / 255);
            }
    }
}

screen_colors screen_color_mode(void) { return S.mode; }

const char *screen_color_name(void)
{
    static const char *const names[] = {"mono", "8 colours", "256 colours", "24-bit (palette)", "24-bit"};
    return names[S.mode];
}

static void reset_pairs(void)
{
    memset(S.keys, 0, PAIR_SLOTS * sizeof *S.keys);
    S.pairs_used = 0;
}

/* the pair for (fg, bg), made on first use; 0 (default colours) when the table is full */
static int pair_for(int fg, int bg)
{
    if (S.mode == SCREEN_MONO || (fg == -1 && bg == -1)) return 0;
    uint64_t key = ((uint64_t)(uint32_t)fg << 32 | (uint32_t)bg) + 1;
    size_t h = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 47) & (PAIR_SLOTS - 1);
    for (;;) {
        if (S.keys[h] == key) return S.vals[h];
        if (S.keys[h] == 0) break;
        h = (h + 1) & (PAIR_SLOTS - 1);
    }
    if (S.pairs_used + 1 >= S.pairs_max || S.pairs_used + 1 >= PAIR_SLOTS / 2) return 0;
    int p = ++S.pairs_used;
    init_extended_pair(p, fg, bg);
    S.keys[h] = key;
    S.vals[h] = p;
    return p;
}

/* ---- open ------------------------------------------------------------------------------------ */

static int utf8_locale(void)
{
    const char *cs = nl_langinfo(CODESET);
    return cs && (strcmp(cs, "UTF-8") == 0 || strcmp(cs, "utf8") == 0);
}

int screen_open(FILE *in, FILE *out, const char *term)
{
    if (S.open) return 0;
    setlocale(LC_ALL, "");
    if (!utf8_locale()) setlocale(LC_CTYPE, "C.UTF-8");
    in = in ? in : stdin;
    out = out ? out : stdout;
    S.in_fd = fileno(in);
    S.out = out;
    S.have_saved = tcgetattr(S.in_fd, &S.saved) == 0;
    S.scr = newterm(term, out, in);
    if (!S.scr) {
        fprintf(stderr, "postformer: cannot start the terminal UI (TERM=%s)\n", term ? term : getenv("TERM"));
        return -1;
    }
    set_term(S.scr);
    S.open = 1;
    static int registered;
    if (!registered) {
        atexit(at_exit);
        registered = 1;
    }
    for (size_t i = 0; i < sizeof fatal_signals / sizeof *fatal_signals; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_fatal;
        sa.sa_flags = SA_RESETHAND | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(fatal_signals[i], &sa, NULL);
    }
    raw();
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    nodelay(stdscr, TRUE);
    set_escdelay(25);
    leaveok(stdscr, FALSE);
    setup_colors();
    return 0;
}

/* ---- frames ---------------------------------------------------------------------------------- */

void screen_size(int *w, int *h)
{
    *w = COLS;
    *h = LINES;
}

void screen_set_size(int w, int h) { resizeterm(h, w); }

void screen_present(tui_grid *g, int full)
{
    if (!S.open) return;
    if (S.mode != SCREEN_MONO && S.pairs_used > S.pairs_max / 2 && S.pairs_used > 1024) reset_pairs();
    int rows = g->h < LINES ? g->h : LINES, cols = g->w < COLS ? g->w : COLS;
    for (int y = 0; y < rows; y++) {
        const tui_cell *c = &g->cells[(size_t)y * (size_t)g->w];
        for (int x = 0; x < cols; x++, c++) {
            wchar_t wc[2] = {(wchar_t)c->ch, 0};
            attr_t a = 0;
            if (c->attr & TA_BOLD) a |= A_BOLD;
            if (c->attr & TA_REVERSE) a |= A_REVERSE;
            if (c->attr & TA_DIM) a |= A_DIM;
            if (c->attr & TA_UNDERLINE) a |= A_UNDERLINE;
            int pair = pair_for(term_color(c->fg), term_color(c->bg));
            cchar_t cc;
            setcchar(&cc, wc, a, 0, &pair);
            mvadd_wch(y, x, &cc);
        }
    }
    if (g->cx >= 0 && g->cy >= 0 && g->cx < COLS && g->cy < LINES) {
        curs_set(1);
        move(g->cy, g->cx);
    } else {
        curs_set(0);
    }
    if (full) clearok(curscr, TRUE);
    wnoutrefresh(stdscr);
    doupdate();
}

/* ---- input ----------------------------------------------------------------------------------- */

int screen_key(wint_t *key, int *fn)
{
    if (!S.open) return 0;
    int r = get_wch(key);
    if (r == ERR) return 0;
    *fn = r == KEY_CODE_YES;
    return 1;
}

int screen_wait(int ms)
{
    struct pollfd p = {.fd = S.in_fd, .events = POLLIN};
    int r = poll(&p, 1, ms);
    return r > 0;
}
