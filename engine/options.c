/* Option tables and their validation (see options.h). */
#include "engine/options.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/error.h"

void pf_config_init(pf_config *c, const pf_option *options, int n_options)
{
    memset(c, 0, sizeof *c);
    c->options = options;
    c->n_options = n_options;
    for (int i = 0; i < n_options && i < PF_MAX_OPTIONS; i++) c->value[i] = options[i].def;
}

int pf_option_index(const pf_option *options, int n_options, const char *name)
{
    for (int i = 0; i < n_options; i++)
        if (strcmp(options[i].name, name) == 0) return i;
    return -1;
}

static int unknown(const pf_config *c, const char *what, const char *name)
{
    char list[256] = "";
    size_t len = 0;
    for (int i = 0; i < c->n_options; i++) {
        int w = snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", c->options[i].name);
        if (w < 0 || (size_t)w >= sizeof list - len) break;
        len += (size_t)w;
    }
    return pf_error("%s: unknown option '%s' (valid: %s)", what, name, c->n_options ? list : "none");
}

/* index of word s in "a|b|c", or -1 */
static int choice_index(const char *choices, const char *s)
{
    size_t n = strlen(s);
    int idx = 0;
    for (const char *p = choices; p && *p; idx++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, s, n) == 0) return idx;
        p = bar ? bar + 1 : NULL;
    }
    return -1;
}

int pf_config_set_number(pf_config *c, const char *what, const char *name, double v)
{
    int i = pf_option_index(c->options, c->n_options, name);
    if (i < 0) return unknown(c, what, name);
    const pf_option *o = &c->options[i];
    switch (o->type) {
    case PF_OPT_CHOICE:
        return pf_error("%s: option '%s' must be one of %s, got the number %g", what, name, o->choices, v);
    case PF_OPT_BOOL:
        return pf_error("%s: option '%s' must be true or false, got the number %g", what, name, v);
    case PF_OPT_INT:
    case PF_OPT_INT_AUTO:
        if (!isfinite(v) || v != floor(v))
            return pf_error("%s: option '%s' must be an integer in [%g, %g]%s, got %g", what, name,
                            o->min, o->max, o->type == PF_OPT_INT_AUTO ? " or \"auto\"" : "", v);
        /* fallthrough */
    case PF_OPT_NUMBER:
        if (!isfinite(v) || v < o->min || v > o->max)
            return pf_error("%s: option '%s' must be in [%g, %g], got %g", what, name, o->min, o->max, v);
        break;
    }
    c->value[i] = v;
    c->set_mask |= 1u << i;
    return 0;
}

int pf_config_set_string(pf_config *c, const char *what, const char *name, const char *s)
{
    int i = pf_option_index(c->options, c->n_options, name);
    if (i < 0) return unknown(c, what, name);
    const pf_option *o = &c->options[i];
    if (o->type == PF_OPT_INT_AUTO && strcmp(s, "auto") == 0) {
        c->value[i] = 0;
    } else if (o->type == PF_OPT_CHOICE) {
        int k = choice_index(o->choices, s);
        if (k < 0) return pf_error("%s: option '%s' must be one of %s, got \"%s\"", what, name, o->choices, s);
        c->value[i] = k;
    } else {
        return pf_error("%s: option '%s' must be %s, got the string \"%s\"", what, name,
                        o->type == PF_OPT_BOOL ? "true or false" : "a number", s);
    }
    c->set_mask |= 1u << i;
    return 0;
}

int pf_config_set_bool(pf_config *c, const char *what, const char *name, int b)
{
    int i = pf_option_index(c->options, c->n_options, name);
    if (i < 0) return unknown(c, what, name);
    if (c->options[i].type != PF_OPT_BOOL)
        return pf_error("%s: option '%s' is not a boolean", what, name);
    c->value[i] = b ? 1 : 0;
    c->set_mask |= 1u << i;
    return 0;
}

double pf_config_get(const pf_config *c, const char *name)
{
    int i = pf_option_index(c->options, c->n_options, name);
    return i < 0 ? 0 : c->value[i];
}

int pf_config_int(const pf_config *c, const char *name) { return (int)pf_config_get(c, name); }

int pf_config_is_set(const pf_config *c, const char *name)
{
    int i = pf_option_index(c->options, c->n_options, name);
    return i >= 0 && (c->set_mask >> i & 1u);
}

const char *pf_config_choice(const pf_config *c, const char *name, char *buf, int n)
{
    int i = pf_option_index(c->options, c->n_options, name);
    buf[0] = '\0';
    if (i < 0 || !c->options[i].choices) return buf;
    int want = (int)c->value[i], idx = 0;
    for (const char *p = c->options[i].choices; p && *p; idx++) {
        const char *bar = strchr(p, '|');
        int len = bar ? (int)(bar - p) : (int)strlen(p);
        if (idx == want) {
            snprintf(buf, (size_t)n, "%.*s", len, p);
            break;
        }
        p = bar ? bar + 1 : NULL;
    }
    return buf;
}
