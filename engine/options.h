/* Layer options as data: each layer kind declares a table of pf_option (name, type, default, range,
 * help). pf_config holds the values of one layer; setting a value checks it against the table, so
 * every kind rejects unknown or out-of-range options with the same message naming the option. */
#ifndef PF_OPTIONS_H
#define PF_OPTIONS_H

#define PF_MAX_OPTIONS 16

typedef enum pf_option_type {
    PF_OPT_INT,        /* an integer in [min, max] */
    PF_OPT_NUMBER,     /* a number in [min, max] */
    PF_OPT_BOOL,       /* true/false, stored as 0/1 */
    PF_OPT_CHOICE,     /* one of the '|'-separated words in choices; stored as its index */
    PF_OPT_INT_AUTO,   /* an integer in [min, max] or "auto", stored as 0 */
} pf_option_type;

typedef struct pf_option {
    const char    *name;
    pf_option_type type;
    double         def;       /* default value (a choice index for PF_OPT_CHOICE; 0 for "auto") */
    double         min, max;
    const char    *choices;   /* PF_OPT_CHOICE: "gelu|swiglu" */
    const char    *help;      /* one line, with what the default means */
} pf_option;

typedef struct pf_config {
    const pf_option *options;     /* (n_options) the schema these values follow */
    int              n_options;
    double           value[PF_MAX_OPTIONS];
    unsigned         set_mask;    /* bit i: option i was given explicitly */
} pf_config;

void pf_config_init(pf_config *c, const pf_option *options, int n_options);
/* -1 and pf_error naming the option (and what is valid) when unknown, mistyped or out of range.
 * `what` names the owner in messages ("attention"). */
int  pf_config_set_number(pf_config *c, const char *what, const char *name, double v);
int  pf_config_set_string(pf_config *c, const char *what, const char *name, const char *s);
int  pf_config_set_bool(pf_config *c, const char *what, const char *name, int b);

/* Lookups by name (the option must exist in the schema). */
double      pf_config_get(const pf_config *c, const char *name);
int         pf_config_int(const pf_config *c, const char *name);
int         pf_config_is_set(const pf_config *c, const char *name);
/* The word of a PF_OPT_CHOICE value written into buf. */
const char *pf_config_choice(const pf_config *c, const char *name, char *buf, int n);
int         pf_option_index(const pf_option *options, int n_options, const char *name);

#endif
