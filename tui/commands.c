/* The `:` commands, as data (tmux): name, alias, usage, help and the function that does it. The
 * same table makes pf.tui.<name>(...) for Lua and the help overlay; keys that do the same things
 * are listed in tui_keys. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "tui/app.h"

static int int_arg(const char *args, int def)
{
    char *end;
    long v = strtol(args, &end, 10);
    return end == args ? def : (int)v;
}

static void cmd_step(app *a, const char *args)
{
    int n = int_arg(args, 1);
    for (int i = 0; i < n && i < 100000; i++)
        if (watch_step(a) < 0) break;
}

static void cmd_run(app *a, const char *args)
{
    (void)args;
    app_toggle_run(a);
}

static void cmd_reset(app *a, const char *args)
{
    (void)args;
    a->running = 0;
    watch_reset(a);
    log_add(a, LOG_INFO, "reset: the model's state is cleared, a new sequence starts");
}

static void cmd_layer(app *a, const char *args)
{
    if (!*args) {
        log_add(a, LOG_INFO, "layer %d of %d", a->w.focus + 1, a->w.n_blocks);
        return;
    }
    watch_focus(a, int_arg(args, a->w.focus + 1) - 1);
}

static void cmd_probe(app *a, const char *args)
{
    watch *w = &a->w;
    if (w->n_blocks == 0) return;
    const watch_block *b = &w->blocks[w->focus];
    if (!*args) {
        w->probe_sel = b->n_probes ? (w->probe_sel + 1) % b->n_probes : 0;
    } else {
        for (int i = 0; i < b->n_probes; i++)
            if (strcmp(b->probe[i], args) == 0) w->probe_sel = i;
    }
    a->dirty = 1;
}

static void cmd_png(app *a, const char *args) { app_png(a, *args ? args : NULL); }

static void cmd_speed(app *a, const char *args)
{
    if (strcmp(args, "+") == 0 || !*args) a->speed = a->speed + 1 < SPEED_LEVELS ? a->speed + 1 : a->speed;
    else if (strcmp(args, "-") == 0) a->speed = a->speed > 0 ? a->speed - 1 : 0;
    else a->speed = int_arg(args, a->speed + 1) - 1;
    if (a->speed < 0) a->speed = 0;
    if (a->speed >= SPEED_LEVELS) a->speed = SPEED_LEVELS - 1;
    log_add(a, LOG_INFO, "run speed: %s", app_speed_name(a));
}

static void cmd_clear(app *a, const char *args)
{
    (void)args;
    for (int i = 0; i < a->log.cap; i++) {
        free(a->log.lines[i].text);
        a->log.lines[i].text = NULL;
    }
    a->log.n = a->log.head = a->log.scroll = 0;
    a->dirty = 1;
}

static void cmd_help(app *a, const char *args)
{
    (void)args;
    a->help = !a->help;
    a->dirty = 1;
}

static void cmd_quit(app *a, const char *args)
{
    (void)args;
    a->quit = 1;
}

static void cmd_interrupt(app *a, const char *args)
{
    (void)args;
    jobs_interrupt(a);
}

const tui_command tui_commands[] = {
    {"step", "s", "step [N]", "step N tokens (1)", cmd_step},
    {"run", "r", "run", "run / pause stepping", cmd_run},
    {"speed", NULL, "speed [+|-|1-7]", "tokens a second when running", cmd_speed},
    {"reset", "R", "reset", "clear the model's state, start a new sequence", cmd_reset},
    {"layer", "l", "layer [N]", "focus layer N", cmd_layer},
    {"probe", "p", "probe [NAME]", "pick the probe for x and the generic view (next)", cmd_probe},
    {"png", "x", "png [PATH]", "write the focused view as a PNG", cmd_png},
    {"interrupt", NULL, "interrupt", "stop the running Lua (Ctrl-C)", cmd_interrupt},
    {"clear", NULL, "clear", "clear the log", cmd_clear},
    {"help", "?", "help", "show / hide the help", cmd_help},
    {"quit", "q", "quit", "leave postformer", cmd_quit},
    {NULL, NULL, NULL, NULL, NULL},
};

const tui_key tui_keys[] = {
    {"s, Space, F5", "step one token", 0},
    {"r, F6", "run / pause stepping", 0},
    {"+ / -", "run faster / slower", 0},
    {"j / k, Down / Up, Tab", "focus the next / previous layer", 0},
    {"p / P", "next / previous probe (generic view, x)", 0},
    {"R, 0", "reset the state, new sequence", 0},
    {"x", "export the focused view as PNG", 0},
    {"Enter", "type Lua (the prompt takes the keys)", 0},
    {":", "type a command (:step 10, :layer 2, :png f.png)", 0},
    {"Esc", "leave the prompt, back to these keys", 1},
    {"Tab (prompt)", "complete Lua names", 1},
    {"Up / Down (prompt)", "history", 1},
    {"Ctrl-C", "interrupt the running Lua (training too)", 1},
    {"PgUp / PgDn", "scroll the log", 1},
    {"?, F1", "this help (any key closes it)", 1},
    {"q, F10", "quit", 0},
    {NULL, NULL, 0},
};

void command_run(app *a, const char *line)
{
    while (isspace((unsigned char)*line) || *line == ':') line++;
    char name[32];
    size_t n = 0;
    while (line[n] && !isspace((unsigned char)line[n]) && n < sizeof name - 1) {
        name[n] = line[n];
        n++;
    }
    name[n] = '\0';
    const char *args = line + n;
    while (isspace((unsigned char)*args)) args++;
    if (!*name) return;
    for (const tui_command *c = tui_commands; c->name; c++) {
        if (strcmp(c->name, name) == 0 || (c->alias && strcmp(c->alias, name) == 0)) {
            c->exec(a, args);
            a->dirty = 1;
            return;
        }
    }
    log_add(a, LOG_ERROR, "unknown command ':%s' (:help lists them)", name);
}
