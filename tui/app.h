/* The terminal playground: what its files share.
 *
 *   screen.c    curses, colours, signals, teardown (the one owner of the terminal)
 *   grid.c      the frame being composed and the drawing primitives
 *   app.c       the main loop: keys, focus, Lua jobs, frames; the key table
 *   commands.c  the `:` commands, as data (name, alias, usage, help, exec)
 *   repl.c      GNU readline through its callback interface, history, Tab completion
 *   jobs.c      typed Lua and scripts run as coroutines that yield to the UI; Ctrl-C
 *   watch.c     the watched model: its blocks, the focused layer's probes, the token stream, metrics
 *   pane_*.c    the panes: layers, tokens, probes (the main view), metrics, log, help
 *
 * A pane is a struct of function pointers defined once as a const designated initializer (htop):
 * draw into the frame grid, on_key (returns PANE_* flags), resize, free. */
#ifndef PF_TUI_APP_H
#define PF_TUI_APP_H

#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <wchar.h>

#include "engine/tensor.h"
#include "tui/grid.h"

/* ---- panes ------------------------------------------------------------------------------------ */

typedef struct app  app;
typedef struct pane pane;

enum { PANE_IGNORED = 0, PANE_HANDLED = 1, PANE_REDRAW = 2, PANE_QUIT = 4 };

typedef struct pane_class {
    const char *name;
    void (*draw)(pane *p, app *a, tui_grid *g);
    int  (*on_key)(pane *p, app *a, wint_t key, int fn);   /* may be NULL */
    void (*resize)(pane *p, app *a);                      /* after x, y, w, h changed; may be NULL */
    void (*free)(pane *p);                                /* may be NULL */
} pane_class;

struct pane {
    const pane_class *cls;
    int   x, y, w, h;
    int   visible;
    void *data;
};

extern const pane_class pane_layers_class, pane_tokens_class, pane_probes_class, pane_metrics_class,
    pane_log_class, pane_help_class;

enum { PANE_LAYERS, PANE_TOKENS, PANE_PROBES, PANE_METRICS, PANE_LOG, PANE_HELP, N_PANES };

/* ---- the log ---------------------------------------------------------------------------------- */

typedef enum log_style { LOG_OUT, LOG_INPUT, LOG_RESULT, LOG_ERROR, LOG_INFO } log_style;

typedef struct log_line {
    char     *text;
    log_style style;
} log_line;

typedef struct tui_log {
    log_line *lines;        /* (cap) ring */
    int       cap, n, head; /* head: index of the oldest */
    int       scroll;       /* lines scrolled back from the bottom */
    char     *partial;      /* io.write text not yet ended by a newline */
} tui_log;

void log_add(app *a, log_style style, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* text with newlines: one log line each */
void log_text(app *a, log_style style, const char *text);
const log_line *log_get(const tui_log *lg, int i);   /* 0 = oldest */

/* ---- the watched model ------------------------------------------------------------------------ */

enum { WATCH_MAX_PROBES = 16, WATCH_HIST = 96, METRIC_CAP = 2048 };

typedef struct watch_block {
    char   kind[32];
    double params, flops, state_bytes;
    double step_s;          /* the layer's last step (host wall clock) */
    int    shares;          /* 1-based block it shares weights with, 0: none */
    int    n_probes;
    char   probe[WATCH_MAX_PROBES][32];
    char   shape[WATCH_MAX_PROBES][40];
} watch_block;

typedef struct probe_snap {
    char       name[32];
    pf_tensor *t;           /* NULL: no data (err says why) */
    char       err[160];
} probe_snap;

/* a ring of the last WATCH_HIST values of a small 1-D probe, one per stepped token */
typedef struct probe_hist {
    char   name[32];
    int    n;               /* vector length */
    int    len, head;       /* how many rows, the next row to write */
    float *rows;            /* (WATCH_HIST, n) */
} probe_hist;

typedef struct metric_series {
    float  v[METRIC_CAP];
    int    n;
    int    stride;          /* training steps a point stands for (halved when full) */
    double acc;             /* the partial point being averaged */
    int    acc_n;
} metric_series;

typedef struct watch {
    int          model_ref, task_ref;   /* registry refs, LUA_NOREF when none */
    const void  *model_ptr, *task_ptr;
    const void  *global_m;              /* _G.m when last looked at */
    char         title[160];            /* tostring(m) */
    int          vocab, dim;
    int          n_blocks;
    watch_block *blocks;                /* (n_blocks) */
    int          focus;                 /* 0-based focused block */
    int          probe_sel;             /* probe picked with p / P (the generic view and x) */

    probe_snap   snap[WATCH_MAX_PROBES];
    int          n_snap, snap_valid;
    probe_hist   hist[WATCH_MAX_PROBES];
    int          n_hist;

    /* the token stream */
    int          T;
    int32_t     *inputs, *targets, *pred;   /* (T) */
    float       *mask, *p_pred, *p_target;   /* (T) */
    int          pos;                        /* tokens stepped in this sequence */
    int          text;                       /* the task is text: show characters */
    char         task_name[32];
    uint64_t     rng[4];
    double       step_s;                     /* the last step's time */
    double       tokens;                     /* stepped in all */

    /* training metrics */
    metric_series loss, acc, aux;
    int          train_step, train_steps;
    double       tokens_per_s, lr, grad_norm, last_loss, last_acc, last_aux;
    int          training;                   /* a train step came in the last second */
    double       last_train_time;
} watch;

int  watch_set_model(app *a, int idx);       /* the pf.model at stack index idx */
void watch_set_task(app *a, int idx);        /* a pf.task at idx (nil: none) */
void watch_clear(app *a);
int  watch_step(app *a);                      /* one token; -1 with a message logged */
void watch_reset(app *a);
void watch_focus(app *a, int block);          /* clamps */
void watch_refresh(app *a);                   /* refetch the focused layer's probes when stale */
void watch_on_train(app *a, int info_idx);    /* m:train's info table at idx */
void watch_check_global(app *a);              /* follow _G.m when it changes */
const probe_snap *watch_probe(app *a, const char *name);   /* NULL when the layer lacks it */
const probe_hist *watch_hist(app *a, const char *name);
void watch_free(app *a);

/* ---- Lua jobs --------------------------------------------------------------------------------- */

typedef struct job {
    lua_State *co;
    int        ref;                 /* keeps co alive */
    char       name[64];
    int        print_results;
} job;

/* Start the function at the top of a->L (popped) as a job; name for messages. */
void jobs_start(app *a, const char *name, int print_results);
/* Resume every job once; each runs until it yields or its time slice (ms) is over. */
void jobs_run(app *a, double slice_ms);
void jobs_interrupt(app *a);         /* Ctrl-C: every job stops with "interrupted!" */
int  jobs_count(const app *a);
void jobs_open(app *a);              /* pf._yield, pf.watch, print, io.write, pf.tui */

/* ---- the REPL line ---------------------------------------------------------------------------- */

void repl_open(app *a);
void repl_close(app *a);
void repl_feed(app *a, wint_t key, int fn);   /* a key for readline */
void repl_prompt(app *a, const char *prompt);
const char *repl_prompt_text(void);
const char *repl_line(int *point);            /* the line being edited and the cursor (bytes) */
void repl_set_line(const char *text);

/* ---- commands --------------------------------------------------------------------------------- */

typedef struct tui_command {
    const char *name, *alias, *usage, *help;
    void (*exec)(app *a, const char *args);
} tui_command;

extern const tui_command tui_commands[];
void command_run(app *a, const char *line);   /* "step 3", "q", ... */

typedef struct tui_key {
    const char *keys;           /* as shown in help: "s, Space" */
    const char *help;
    int         in_prompt;      /* also works while typing Lua */
} tui_key;
extern const tui_key tui_keys[];

/* ---- the app ---------------------------------------------------------------------------------- */

typedef enum focus_mode { MODE_KEYS, MODE_LUA, MODE_COMMAND } focus_mode;

enum { SPEED_LEVELS = 7 };

struct app {
    lua_State  *L;
    tui_grid    grid;
    pane        panes[N_PANES];
    focus_mode  mode;
    int         quit;
    int         running;        /* stepping on its own (r) */
    int         speed;          /* index into the run speeds */
    double      run_credit;     /* tokens owed by the run clock */
    double      last_run;
    int         help;           /* the overlay is up */
    int         dirty;          /* a frame is due */
    int         full_redraw;
    double      last_frame;
    double      fps;            /* frames drawn per second, measured */
    tui_log     log;
    watch       w;
    job        *jobs;
    int         n_jobs, cap_jobs;
    double      slice_start;    /* when the running job was resumed */
    double      slice_ms;
    volatile int interrupt;     /* Ctrl-C seen while Lua ran */
    wint_t      keyq[64];       /* keys read while Lua ran, for the main loop */
    int         keyq_fn[64];
    int         keyq_n;
    char       *pending_chunk;  /* multi-line input so far */
    int         png_count;
    int         headless_frames; /* bench: draw without a terminal */
};

double app_clock(void);
void   app_layout(app *a);
void   app_draw(app *a, tui_grid *g);        /* compose the whole frame */
void   app_key(app *a, wint_t key, int fn);  /* one key, in the current mode */
void   app_set_mode(app *a, focus_mode m);
void   app_run_line(app *a, const char *line);   /* a line from readline */
void   app_png(app *a, const char *path);    /* export the focused view */
void   app_toggle_run(app *a);
const char *app_speed_name(const app *a);
void   app_poll_keys(app *a);                 /* read keys into keyq (from inside Lua) */

/* Colours of the UI */
#define UI_ACCENT TC_RGB(120, 200, 255)
#define UI_DIM    TC_RGB(140, 140, 150)
#define UI_ERROR  TC_RGB(255, 110, 100)
#define UI_GOOD   TC_RGB(120, 220, 120)
#define UI_WARN   TC_RGB(255, 200, 80)

/* The program's TUI entry (main.c calls it): runs script (NULL: none) in the UI; exit status. */
int tui_main(lua_State *L, const char *script, const char *script_name);
/* make bench: frames/s of a full redraw at w x h and stepping tokens/s live vs headless. */
int tui_bench(lua_State *L, const char *script, int w, int h);

#endif
