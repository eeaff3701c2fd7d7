/* The help overlay (? or F1): every key and every `:` command, from their tables. */
#include <string.h>

#include "tui/app.h"

static void draw(pane *p, app *a, tui_grid *g)
{
    (void)a;
    grid_fill(g, p->x, p->y, p->w, p->h, ' ', TC_DEFAULT, TC_RGB(20, 22, 32), 0);
    grid_box(g, p->x, p->y, p->w, p->h, "Help: keys (any key closes)", 1);
    int y = p->y + 1, w = p->w - 4, bottom = p->y + p->h - 1;
    tui_color bg = TC_RGB(20, 22, 32);
    grid_text(g, p->x + 2, y++, w, UI_DIM, bg, 0, "KEYS mode: the keys act on the views. Enter opens the Lua prompt,");
    grid_text(g, p->x + 2, y++, w, UI_DIM, bg, 0, "':' a command line; Esc (or Ctrl-D on an empty line) comes back.");
    for (const tui_key *k = tui_keys; k->keys && y < bottom; k++, y++) {
        grid_text(g, p->x + 2, y, 24, UI_ACCENT, bg, TA_BOLD, k->keys);
        grid_printf(g, p->x + 27, y, w - 25, TC_DEFAULT, bg, 0, "%s%s", k->help, k->in_prompt ? "  (any mode)" : "");
    }
    int n_cmd = 0;
    for (const tui_command *c = tui_commands; c->name; c++) n_cmd++;
    if (y < bottom) y++;
    if (y < bottom) grid_text(g, p->x + 2, y++, w, UI_DIM, bg, 0, "Commands (:name, or pf.tui.name(...) from Lua):");
    if (bottom - y >= n_cmd) {
        for (const tui_command *c = tui_commands; c->name && y < bottom; c++, y++) {
            grid_printf(g, p->x + 2, y, 24, UI_ACCENT, bg, TA_BOLD, ":%s%s%s", c->usage, c->alias ? "  :" : "",
                        c->alias ? c->alias : "");
            grid_text(g, p->x + 27, y, w - 25, TC_DEFAULT, bg, 0, c->help);
        }
        return;
    }
    /* short of room: the usages as a paragraph */
    int x = 0;
    for (const tui_command *c = tui_commands; c->name && y < bottom; c++) {
        int len = (int)strlen(c->usage) + 3;
        if (x + len > w) {
            x = 0;
            y++;
            if (y >= bottom) break;
        }
        grid_printf(g, p->x + 2 + x, y, w - x, UI_ACCENT, bg, 0, ":%s", c->usage);
        x += len;
    }
}

const pane_class pane_help_class = {.name = "help", .draw = draw};
