/* The model: embedding -> pre-norm residual blocks -> final norm -> head; forward, backward,
 * stepping, and the AdamW training step (see model.h).
 *
 * Letters: B batch, T tokens, rows = B * T, C model width, V vocabulary, L blocks. */
#include "engine/model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/error.h"

/* ---- structure --------------------------------------------------------------------------------- */

typedef struct block {
    pf_layer *layer;
    int       share_with;      /* -1, or the block whose weights this one uses */
    size_t    layer_offset;    /* where the layer's parameters start in the flat buffer */
    double    step_seconds;    /* the layer's last step, host wall clock */
    float    *norm_w, *norm_b; /* (C) views; norm_b only for LayerNorm */
    float    *dnorm_w, *dnorm_b;
} block;

/* a run of parameters with the same weight-decay setting, updated by one AdamW call */
typedef struct segment {
    size_t offset, numel;
    int    decay;
} segment;

struct pf_model {
    pf_model_config cfg;
    const pf_backend *be;
    block  *blocks;            /* (L) */
    int     n_blocks, cap_blocks;
    int     built;

    /* parameters: views into params/grads */
    float *wte, *dwte;         /* (V, C) token embedding */
    float *lnf_w, *lnf_b;      /* (C) final norm */
    float *dlnf_w, *dlnf_b;
    float *head, *dhead;       /* (V, C); the embedding when tied */
    float *params, *grads;     /* (n_params) flat, device */
    float *adam_m, *adam_v;    /* (n_params) AdamW moments, device */
    size_t n_params;
    segment *segments;
    int     n_segments;
    int     steps_taken;

    /* activations of the last forward, for rows_cap rows */
    size_t  rows_cap;
    float  *x;                 /* (L + 1, rows, C) residual stream entering each block, then the last */
    float  *xn;                /* (L, rows, C) normed input of each block */
    float  *stats;             /* (L + 1, 2, rows) mean and rstd of each norm */
    float  *xf;                /* (rows, C) final normed */
    float  *logits;            /* (rows, V); dlogits in place during backward */
    float  *y;                 /* (rows, C) layer output */
    float  *dx, *dxn, *dtmp;   /* (rows, C) backward scratch */
    float  *loss, *correct;    /* (rows) */
    float  *mask;              /* (rows) */
    int32_t *tokens, *targets; /* (rows) */

    /* stepping */
    int     position;
    float  *sx;                /* (n_blocks + 1, C) step: the residual stream entering each block, then after the last */
    float  *sxn, *sy;          /* (C) */
    float  *sstats;            /* (2) */
    float  *slogits;           /* (V) */
    int32_t *stoken;           /* (1) */
};

void pf_train_config_default(pf_train_config *c)
{
    c->lr = 3e-3f;
    c->min_lr_ratio = 0.1f;
    c->warmup = 0;
    c->total_steps = 0;
    c->weight_decay = 0.0f;
    c->beta1 = 0.9f;
    c->beta2 = 0.95f;
    c->eps = 1e-8f;
    c->clip = 1.0f;
    c->schedule_step = 0;
}

pf_model *pf_model_new(const pf_model_config *cfg)
{
    if (cfg->vocab < 2 || cfg->vocab > (1 << 24)) {
        pf_error("model: vocab must be in [2, %d], got %d", 1 << 24, cfg->vocab);
        return NULL;
    }
    if (cfg->dim < 1 || cfg->dim > (1 << 16)) {
        pf_error("model: dim must be in [1, %d], got %d", 1 << 16, cfg->dim);
        return NULL;
    }
    if (!cfg->be) {
        pf_error("model: no device");
        return NULL;
    }
    pf_model *m = calloc(1, sizeof *m);
    if (!m) {
        pf_error("model: out of memory");
        return NULL;
    }
    m->cfg = *cfg;
    if (m->cfg.norm_eps <= 0) m->cfg.norm_eps = 1e-5f;
    m->be = cfg->be;
    return m;
}

int pf_model_add_layer(pf_model *m, const pf_layer_kind *kind, const pf_config *cfg, int share_with)
{
    if (m->built) return pf_error("model: layers cannot be added after build");
    if (share_with >= m->n_blocks)
        return pf_error("model: block %d cannot share the weights of block %d, which does not exist yet",
                        m->n_blocks + 1, share_with + 1);
    if (share_with >= 0) {
        const pf_layer *src = m->blocks[share_with].layer;
        if (src->kind != kind)
            return pf_error("model: block %d (%s) cannot share the weights of block %d (%s)",
                            m->n_blocks + 1, kind->name, share_with + 1, src->kind->name);
    }
    if (m->n_blocks == m->cap_blocks) {
        int cap = m->cap_blocks ? 2 * m->cap_blocks : 8;
        block *b = realloc(m->blocks, (size_t)cap * sizeof *b);
        if (!b) return pf_error("model: out of memory");
        m->blocks = b;
        m->cap_blocks = cap;
    }
    uint64_t seed = m->cfg.seed * 1000003ULL + (uint64_t)m->n_blocks + 1;
    pf_layer *l = pf_layer_create(kind, cfg, m->cfg.dim, m->be, seed);
    if (!l) {
        return pf_error_prefix("layer %d (%s): ", m->n_blocks + 1, kind->name);
    }
    if (share_with >= 0 && l->numel != m->blocks[share_with].layer->numel) {
        pf_layer_destroy(l);
        return pf_error("model: block %d (%s) has other options than block %d and cannot share its weights",
                        m->n_blocks + 1, kind->name, share_with + 1);
    }
    block *b = &m->blocks[m->n_blocks];
    memset(b, 0, sizeof *b);
    b->layer = l;
    b->share_with = share_with;
    return m->n_blocks++;
}

static int add_segment(pf_model *m, size_t offset, size_t numel, int decay)
{
    if (m->n_segments > 0) {
        segment *last = &m->segments[m->n_segments - 1];
        if (last->decay == decay && last->offset + last->numel == offset) {
            last->numel += numel;
            return 0;
        }
    }
    segment *s = realloc(m->segments, (size_t)(m->n_segments + 1) * sizeof *s);
    if (!s) return pf_error("model: out of memory");
    m->segments = s;
    m->segments[m->n_segments++] = (segment){offset, numel, decay};
    return 0;
}

/* Lay out the flat buffer: [wte] [per distinct block: norm, layer] [final norm] [head].
 * With P == NULL this only counts and records the AdamW segments; otherwise it points every view
 * into P (and the gradient views into G). */
static int layout(pf_model *m, float *P, float *G)
{
    size_t C = (size_t)m->cfg.dim, V = (size_t)m->cfg.vocab, off = 0;
    int ln = m->cfg.norm == PF_NORM_LAYER;
#define VIEW(val, grad, n, decay)                                   \
    do {                                                            \
        if (P) { (val) = P + off; (grad) = G + off; }               \
        else PF_TRY(add_segment(m, off, (n), (decay)));             \
        off += (n);                                                 \
    } while (0)
    VIEW(m->wte, m->dwte, V * C, 1);
    for (int i = 0; i < m->n_blocks; i++) {
        block *b = &m->blocks[i];
        pf_layer *l = b->layer;
        if (b->share_with >= 0) {
            const block *src = &m->blocks[b->share_with];
            b->layer_offset = src->layer_offset;
            b->norm_w = src->norm_w; b->dnorm_w = src->dnorm_w;
            b->norm_b = src->norm_b; b->dnorm_b = src->dnorm_b;
            if (P) pf_layer_bind(l, P + b->layer_offset, G + b->layer_offset);
            continue;
        }
        VIEW(b->norm_w, b->dnorm_w, C, 0);
        if (ln) VIEW(b->norm_b, b->dnorm_b, C, 0);
        b->layer_offset = off;
        if (P) pf_layer_bind(l, P + off, G + off);
        else
            for (int p = 0; p < l->n_params; p++)
                PF_TRY(add_segment(m, off + l->params[p].offset, l->params[p].numel, l->params[p].decay));
        off += l->numel;
    }
    VIEW(m->lnf_w, m->dlnf_w, C, 0);
    if (ln) VIEW(m->lnf_b, m->dlnf_b, C, 0);
    if (m->cfg.tie_embeddings) {
        m->head = m->wte;
        m->dhead = m->dwte;
    } else {
        VIEW(m->head, m->dhead, V * C, 1);
    }
#undef VIEW
    m->n_params = off;
    return 0;
}

int pf_model_build(pf_model *m)
{
    if (m->built) return pf_error("model: already built");
    if (m->n_blocks == 0) return pf_error("model: no layers (give layers = { ... })");
    /* every shared block must point at a distinct (non-shared) block */
    for (int i = 0; i < m->n_blocks; i++)
        while (m->blocks[i].share_with >= 0 && m->blocks[m->blocks[i].share_with].share_with >= 0)
            m->blocks[i].share_with = m->blocks[m->blocks[i].share_with].share_with;
    PF_TRY(layout(m, NULL, NULL));
    const pf_backend *be = m->be;
    size_t bytes = m->n_params * sizeof(float);
    m->params = be->alloc(bytes);
    m->grads = be->alloc(bytes);
    m->adam_m = be->alloc(bytes);
    m->adam_v = be->alloc(bytes);
    float *host = calloc(m->n_params, sizeof(float));
    if (!m->params || !m->grads || !m->adam_m || !m->adam_v || !host) {
        free(host);
        return pf_error("model: out of memory for %zu parameters", m->n_params);
    }
    /* point the views at the host staging buffer to initialise in place, then at the device */
    layout(m, host, host);
    pf_rng rng;
    pf_rng_seed(&rng, m->cfg.seed);
    size_t C = (size_t)m->cfg.dim, V = (size_t)m->cfg.vocab;
    for (size_t i = 0; i < V * C; i++) m->wte[i] = (float)(0.02 * pf_rng_normal(&rng));
    for (int i = 0; i < m->n_blocks; i++) {
        block *b = &m->blocks[i];
        if (b->share_with >= 0) continue;
        for (size_t c = 0; c < C; c++) b->norm_w[c] = 1.0f;
        pf_layer_init_params(b->layer, host + b->layer_offset, &rng);
    }
    for (size_t c = 0; c < C; c++) m->lnf_w[c] = 1.0f;
    if (!m->cfg.tie_embeddings)
        for (size_t i = 0; i < V * C; i++) m->head[i] = (float)(0.02 * pf_rng_normal(&rng));
    be->upload(m->params, host, bytes);
    free(host);
    layout(m, m->params, m->grads);

    m->sx = be->alloc((size_t)(m->n_blocks + 1) * C * sizeof(float));
    m->sxn = be->alloc(C * sizeof(float));
    m->sy = be->alloc(C * sizeof(float));
    m->sstats = be->alloc(2 * sizeof(float));
    m->slogits = be->alloc(V * sizeof(float));
    m->stoken = be->alloc(sizeof(int32_t));
    if (!m->sx || !m->sxn || !m->sy || !m->sstats || !m->slogits || !m->stoken)
        return pf_error("model: out of memory");
    m->built = 1;
    return 0;
}

static void free_activations(pf_model *m)
{
    const pf_backend *be = m->be;
    float **bufs[] = {&m->x, &m->xn, &m->stats, &m->xf, &m->logits, &m->y, &m->dx, &m->dxn,
                      &m->dtmp, &m->loss, &m->correct, &m->mask};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (*bufs[i]) be->free(*bufs[i]);
        *bufs[i] = NULL;
    }
    if (m->tokens) be->free(m->tokens);
    if (m->targets) be->free(m->targets);
    m->tokens = m->targets = NULL;
    m->rows_cap = 0;
}

void pf_model_free(pf_model *m)
{
    if (!m) return;
    const pf_backend *be = m->be;
    free_activations(m);
    void *bufs[] = {m->params, m->grads, m->adam_m, m->adam_v, m->sx, m->sxn, m->sy, m->sstats,
                    m->slogits, m->stoken};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->free(bufs[i]);
    for (int i = 0; i < m->n_blocks; i++) pf_layer_destroy(m->blocks[i].layer);
    free(m->blocks);
    free(m->segments);
    free(m);
}

int pf_model_n_layers(const pf_model *m) { return m->n_blocks; }
pf_layer *pf_model_layer(pf_model *m, int i) { return i >= 0 && i < m->n_blocks ? m->blocks[i].layer : NULL; }
const pf_model_config *pf_model_config_of(const pf_model *m) { return &m->cfg; }
size_t pf_model_n_params(const pf_model *m) { return m->n_params; }
int pf_model_steps_taken(const pf_model *m) { return m->steps_taken; }
int pf_model_position(const pf_model *m) { return m->position; }
float *pf_model_params(pf_model *m) { return m->params; }
float *pf_model_grads(pf_model *m) { return m->grads; }
float *pf_model_adam(pf_model *m, int which) { return which ? m->adam_v : m->adam_m; }
void pf_model_set_steps_taken(pf_model *m, int steps) { m->steps_taken = steps; }

static void named(pf_named_param *out, int cap, int *n, size_t offset, int ndim, const int *shape,
                  const char *fmt, ...) PF_PRINTF(7, 8);

static void named(pf_named_param *out, int cap, int *n, size_t offset, int ndim, const int *shape,
                  const char *fmt, ...)
{
    if (*n < cap) {
        pf_named_param *p = &out[*n];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->name, sizeof p->name, fmt, ap);
        va_end(ap);
        p->ndim = ndim;
        memcpy(p->shape, shape, (size_t)ndim * sizeof *shape);
        p->offset = offset;
        p->numel = pf_shape_numel(ndim, shape);
    }
    (*n)++;
}

int pf_model_named_params(const pf_model *m, pf_named_param *out, int cap)
{
    int n = 0, C = m->cfg.dim, V = m->cfg.vocab, ln = m->cfg.norm == PF_NORM_LAYER;
    const int vc[2] = {V, C}, c1[1] = {C};
#define OFF(view) ((size_t)((view) - m->params))
    named(out, cap, &n, OFF(m->wte), 2, vc, "embed.weight");
    for (int i = 0; i < m->n_blocks; i++) {
        const block *b = &m->blocks[i];
        if (b->share_with >= 0) continue;
        named(out, cap, &n, OFF(b->norm_w), 1, c1, "layers.%d.norm.weight", i);
        if (ln) named(out, cap, &n, OFF(b->norm_b), 1, c1, "layers.%d.norm.bias", i);
        const pf_layer *l = b->layer;
        for (int p = 0; p < l->n_params; p++)
            named(out, cap, &n, b->layer_offset + l->params[p].offset, l->params[p].ndim, l->params[p].shape,
                  "layers.%d.mixer.%s", i, l->params[p].name);
    }
    named(out, cap, &n, OFF(m->lnf_w), 1, c1, "norm.weight");
    if (ln) named(out, cap, &n, OFF(m->lnf_b), 1, c1, "norm.bias");
    if (!m->cfg.tie_embeddings) named(out, cap, &n, OFF(m->head), 2, vc, "head.weight");
#undef OFF
    return n;
}

void pf_model_block_info(const pf_model *m, int i, pf_block_info *out)
{
    memset(out, 0, sizeof *out);
    if (i < 0 || i >= m->n_blocks) return;
    const block *b = &m->blocks[i];
    const pf_layer *l = b->layer;
    out->kind = l->kind;
    out->share_with = b->share_with;
    out->step_seconds = b->step_seconds;
    out->params = b->share_with >= 0 ? 0
                : l->numel + (size_t)m->cfg.dim * (m->cfg.norm == PF_NORM_LAYER ? 2 : 1);
    if (l->kind->describe) l->kind->describe(l, &out->info);
}

/* ---- forward and backward ------------------------------------------------------------------------ */

static int reserve_rows(pf_model *m, size_t rows)
{
    if (rows <= m->rows_cap) return 0;
    free_activations(m);
    const pf_backend *be = m->be;
    size_t C = (size_t)m->cfg.dim, V = (size_t)m->cfg.vocab, L = (size_t)m->n_blocks;
    m->x = be->alloc((L + 1) * rows * C * sizeof(float));
    m->xn = be->alloc(L * rows * C * sizeof(float));
    m->stats = be->alloc((L + 1) * 2 * rows * sizeof(float));
    m->xf = be->alloc(rows * C * sizeof(float));
    m->logits = be->alloc(rows * V * sizeof(float));
    m->y = be->alloc(rows * C * sizeof(float));
    m->dx = be->alloc(rows * C * sizeof(float));
    m->dxn = be->alloc(rows * C * sizeof(float));
    m->dtmp = be->alloc(rows * C * sizeof(float));
    m->loss = be->alloc(rows * sizeof(float));
    m->correct = be->alloc(rows * sizeof(float));
    m->mask = be->alloc(rows * sizeof(float));
    m->tokens = be->alloc(rows * sizeof(int32_t));
    m->targets = be->alloc(rows * sizeof(int32_t));
    if (!m->x || !m->xn || !m->stats || !m->xf || !m->logits || !m->y || !m->dx || !m->dxn ||
        !m->dtmp || !m->loss || !m->correct || !m->mask || !m->tokens || !m->targets) {
        free_activations(m);
        return pf_error("model: out of memory for activations of %zu tokens (try a smaller batch)", rows);
    }
    m->rows_cap = rows;
    return 0;
}

static void norm_forward(const pf_model *m, float *out, float *stats, const float *in, const float *w,
                         const float *b, int rows)
{
    const pf_backend *be = m->be;
    if (m->cfg.norm == PF_NORM_LAYER)
        be->layernorm_forward(out, stats, stats + rows, in, w, b, rows, m->cfg.dim, m->cfg.norm_eps);
    else
        be->rmsnorm_forward(out, stats + rows, in, w, rows, m->cfg.dim, m->cfg.norm_eps);
}

static void norm_backward(const pf_model *m, float *din, float *dw, float *db, const float *dout,
                          const float *in, const float *w, const float *stats, int rows)
{
    const pf_backend *be = m->be;
    if (m->cfg.norm == PF_NORM_LAYER)
        be->layernorm_backward(din, dw, db, dout, in, w, stats, stats + rows, rows, m->cfg.dim);
    else
        be->rmsnorm_backward(din, dw, dout, in, w, stats + rows, rows, m->cfg.dim);
}

static int check_tokens(const pf_model *m, const int32_t *tokens, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab)
            return pf_error("%s: token %d at position %zu is outside the vocabulary [0, %d)", what,
                            (int)tokens[i], i + 1, m->cfg.vocab);
    return 0;
}

/* Name the first block whose output is not finite (NaN or inf), from the residual streams kept in
 * `stream`: the embedding's (rows, C), then each block's after it (the forward's m->x, or a step's
 * m->sx with rows = 1). */
static int blame_non_finite(pf_model *m, const float *stream, int rows, const char *when)
{
    size_t RC = (size_t)rows * m->cfg.dim;
    const pf_backend *be = m->be;
    PF_TRY(be->sync()); /* a device fault reads as NaN: report the fault, not a layer */
    if (!isfinite(be->sumsq(stream, RC)))
        return pf_error("the embedding produced a non-finite value in %s", when);
    for (int i = 0; i < m->n_blocks; i++)
        if (!isfinite(be->sumsq(stream + (size_t)(i + 1) * RC, RC)))
            return pf_error("layer %d (%s) produced a non-finite value (NaN or inf) in %s", i + 1,
                            m->blocks[i].layer->kind->name, when);
    return pf_error("the final norm or head produced a non-finite value in %s", when);
}

/* Embedding, blocks, final norm, head over m->tokens; logits left in m->logits. */
static int forward(pf_model *m, int B, int T, int train)
{
    const pf_backend *be = m->be;
    int rows = B * T, C = m->cfg.dim, V = m->cfg.vocab;
    size_t RC = (size_t)rows * C;
    be->embedding_forward(m->x, m->tokens, m->wte, rows, C);
    for (int i = 0; i < m->n_blocks; i++) {
        block *b = &m->blocks[i];
        float *x = m->x + i * RC, *xn = m->xn + i * RC, *next = x + RC;
        norm_forward(m, xn, m->stats + (size_t)i * 2 * rows, x, b->norm_w, b->norm_b, rows);
        b->layer->train = train;
        b->layer->aux_loss = 0;
        if (b->layer->kind->forward(b->layer, m->y, xn, B, T) < 0) {
            return pf_error_prefix("layer %d (%s): ", i + 1, b->layer->kind->name);
        }
        be->add(next, x, m->y, RC);
    }
    float *xlast = m->x + (size_t)m->n_blocks * RC;
    norm_forward(m, m->xf, m->stats + (size_t)m->n_blocks * 2 * rows, xlast, m->lnf_w, m->lnf_b, rows);
    be->gemm(0, 1, rows, V, C, 1.0f, m->xf, C, m->head, C, 0.0f, m->logits, V);
    return 0;
}

/* Backward from m->logits holding dlogits; gradients accumulate into m->grads. */
static int backward(pf_model *m, int B, int T)
{
    const pf_backend *be = m->be;
    int rows = B * T, C = m->cfg.dim, V = m->cfg.vocab;
    size_t RC = (size_t)rows * C;
    /* logits = xf head^T */
    be->gemm(1, 0, V, C, rows, 1.0f, m->logits, V, m->xf, C, 1.0f, m->dhead, C);
    be->gemm(0, 0, rows, C, V, 1.0f, m->logits, V, m->head, C, 0.0f, m->dxn, C);
    float *xlast = m->x + (size_t)m->n_blocks * RC;
    norm_backward(m, m->dx, m->dlnf_w, m->dlnf_b, m->dxn, xlast, m->lnf_w,
                  m->stats + (size_t)m->n_blocks * 2 * rows, rows);
    for (int i = m->n_blocks - 1; i >= 0; i--) {
        block *b = &m->blocks[i];
        float *x = m->x + i * RC, *xn = m->xn + i * RC;
        /* x_next = x + layer(norm(x)): dx flows straight through and into the layer */
        if (b->layer->kind->backward(b->layer, m->dxn, m->dx, xn, B, T) < 0) {
            return pf_error_prefix("layer %d (%s) backward: ", i + 1, b->layer->kind->name);
        }
        norm_backward(m, m->dtmp, b->dnorm_w, b->dnorm_b, m->dxn, x, b->norm_w,
                      m->stats + (size_t)i * 2 * rows, rows);
        be->axpy(m->dx, m->dtmp, 1.0f, RC);
    }
    be->embedding_backward(m->dwte, m->dx, m->tokens, rows, C);
    return 0;
}

int pf_model_forward(pf_model *m, const int32_t *tokens, int B, int T, pf_tensor **logits)
{
    *logits = NULL;
    if (!m->built) return pf_error("model: not built");
    if (B < 1 || T < 1) return pf_error("forward: empty batch (%d sequences of %d tokens)", B, T);
    size_t rows = (size_t)B * T;
    PF_TRY(check_tokens(m, tokens, rows, "forward"));
    PF_TRY(reserve_rows(m, rows));
    m->be->upload(m->tokens, tokens, rows * sizeof(int32_t));
    PF_TRY(forward(m, B, T, 0));
    pf_tensor *out = pf_tensor_new3(B, T, m->cfg.vocab);
    if (!out) return -1;
    m->be->download(out->data, m->logits, rows * (size_t)m->cfg.vocab * sizeof(float));
    PF_TRY(m->be->sync());
    for (size_t i = 0; i < pf_tensor_numel(out); i++)
        if (!isfinite(out->data[i])) {
            pf_tensor_free(out);
            return blame_non_finite(m, m->x, (int)rows, "forward");
        }
    *logits = out;
    return 0;
}

int pf_model_step(pf_model *m, int token, pf_tensor **logits)
{
    *logits = NULL;
    if (!m->built) return pf_error("model: not built");
    if (token < 0 || token >= m->cfg.vocab)
        return pf_error("step: token %d is outside the vocabulary [0, %d)", token, m->cfg.vocab);
    const pf_backend *be = m->be;
    int C = m->cfg.dim, V = m->cfg.vocab;
    int32_t t = token;
    be->upload(m->stoken, &t, sizeof t);
    be->embedding_forward(m->sx, m->stoken, m->wte, 1, C);
    /* No check between blocks: on a GPU each would be a round trip to the host. The stream of every
     * block is kept (sx), so non-finite logits are blamed afterwards on the first block that made them. */
    for (int i = 0; i < m->n_blocks; i++) {
        block *b = &m->blocks[i];
        float *x = m->sx + (size_t)i * C;
        norm_forward(m, m->sxn, m->sstats, x, b->norm_w, b->norm_b, 1);
        b->layer->train = 0;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int rc = b->layer->kind->step(b->layer, m->sy, m->sxn);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        b->step_seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (rc < 0) {
            return pf_error_prefix("layer %d (%s) step: ", i + 1, b->layer->kind->name);
        }
        be->add(x + C, x, m->sy, (size_t)C);
    }
    norm_forward(m, m->sxn, m->sstats, m->sx + (size_t)m->n_blocks * C, m->lnf_w, m->lnf_b, 1);
    be->gemm(0, 1, 1, V, C, 1.0f, m->sxn, C, m->head, C, 0.0f, m->slogits, V);
    pf_tensor *out = pf_tensor_new1(V);
    if (!out) return -1;
    be->download(out->data, m->slogits, (size_t)V * sizeof(float));
    if (be->sync() < 0) {
        pf_tensor_free(out);
        return -1;
    }
    for (int v = 0; v < V; v++)
        if (!isfinite(out->data[v])) {
            pf_tensor_free(out);
            /* the layers' states now hold the value too: later steps fail as well until a reset */
            char when[48];
            snprintf(when, sizeof when, "step at position %d", m->position + 1);
            return blame_non_finite(m, m->sx, 1, when);
        }
    m->position++;
    *logits = out;
    return 0;
}

void pf_model_reset(pf_model *m)
{
    for (int i = 0; i < m->n_blocks; i++) m->blocks[i].layer->kind->reset(m->blocks[i].layer);
    m->position = 0;
}

/* ---- training ------------------------------------------------------------------------------------ */

static double schedule_lr(const pf_train_config *c, int step)
{
    double lr = c->lr;
    if (c->warmup > 0 && step <= c->warmup) return lr * step / c->warmup;
    if (c->total_steps <= c->warmup) return lr;
    double p = (double)(step - c->warmup) / (c->total_steps - c->warmup);
    if (p > 1) p = 1;
    double lo = lr * c->min_lr_ratio;
    return lo + 0.5 * (lr - lo) * (1 + cos(M_PI * p));
}

/* Loss and accuracy of m->logits against the uploaded targets and mask; dlogits in place when
 * grad is set. */
static int score(pf_model *m, int rows, int grad, double *loss, double *acc, double *weight)
{
    const pf_backend *be = m->be;
    float *host = malloc((size_t)rows * sizeof(float) * 3);   /* mask, loss, correct (rows each) */
    if (!host) return pf_error("model: out of memory");
    float *hmask = host, *hloss = host + rows, *hcorrect = host + 2 * rows;
    be->download(hmask, m->mask, (size_t)rows * sizeof(float));
    double w = 0;
    for (int i = 0; i < rows; i++) w += hmask[i];
    if (w <= 0) {
        free(host);
        return pf_error("train: the batch has no positions to predict (mask is all zero)");
    }
    be->cross_entropy(m->loss, m->correct, grad ? m->logits : NULL, m->logits, m->targets, m->mask,
                      rows, m->cfg.vocab, (float)(1.0 / w));
    be->download(hloss, m->loss, (size_t)rows * sizeof(float));
    be->download(hcorrect, m->correct, (size_t)rows * sizeof(float));
    if (be->sync() < 0) {
        free(host);
        return -1;
    }
    double L = 0, A = 0;
    for (int i = 0; i < rows; i++) {
        L += hloss[i];
        A += hcorrect[i];
    }
    free(host);
    *loss = L / w;
    *acc = A / w;
    *weight = w;
    return 0;
}

static int upload_batch(pf_model *m, const int32_t *inputs, const int32_t *targets, const float *mask,
                        int B, int T)
{
    if (!m->built) return pf_error("model: not built");
    if (B < 1 || T < 1) return pf_error("train: empty batch (%d sequences of %d tokens)", B, T);
    size_t rows = (size_t)B * T;
    PF_TRY(check_tokens(m, inputs, rows, "inputs"));
    PF_TRY(check_tokens(m, targets, rows, "targets"));
    PF_TRY(reserve_rows(m, rows));
    const pf_backend *be = m->be;
    be->upload(m->tokens, inputs, rows * sizeof(int32_t));
    be->upload(m->targets, targets, rows * sizeof(int32_t));
    if (mask) be->upload(m->mask, mask, rows * sizeof(float));
    else be->fill(m->mask, 1.0f, rows);
    return 0;
}

int pf_model_evaluate(pf_model *m, const int32_t *inputs, const int32_t *targets, const float *mask,
                      int B, int T, double *loss, double *accuracy)
{
    double w;
    PF_TRY(upload_batch(m, inputs, targets, mask, B, T));
    PF_TRY(forward(m, B, T, 0));
    PF_TRY(score(m, B * T, 0, loss, accuracy, &w));
    if (!isfinite(*loss)) return blame_non_finite(m, m->x, B * T, "evaluation");
    return 0;
}

/* Which parameter (by block) holds a non-finite gradient. */
static int blame_gradient(pf_model *m)
{
    const pf_backend *be = m->be;
    PF_TRY(be->sync());
    for (int i = m->n_blocks - 1; i >= 0; i--) {
        pf_layer *l = m->blocks[i].layer;
        for (int p = 0; p < l->n_params; p++)
            if (!isfinite(be->sumsq(*l->params[p].grad, l->params[p].numel)))
                return pf_error("layer %d (%s): the gradient of %s is not finite (NaN or inf)", i + 1,
                                l->kind->name, l->params[p].name);
    }
    return pf_error("the gradient of the embedding, head or a norm is not finite (NaN or inf)");
}

int pf_model_train_step(pf_model *m, const int32_t *inputs, const int32_t *targets,
                        const float *mask, int B, int T, const pf_train_config *cfg,
                        pf_train_stats *stats)
{
    const pf_backend *be = m->be;
    int rows = B * T;
    double loss, acc, w;
    memset(stats, 0, sizeof *stats);
    PF_TRY(upload_batch(m, inputs, targets, mask, B, T));
    PF_TRY(forward(m, B, T, 1));
    PF_TRY(score(m, rows, 1, &loss, &acc, &w));
    if (!isfinite(loss)) return blame_non_finite(m, m->x, rows, "training");
    double aux = 0;
    for (int i = 0; i < m->n_blocks; i++) aux += m->blocks[i].layer->aux_loss;

    be->zero(m->grads, m->n_params * sizeof(float));
    PF_TRY(backward(m, B, T));
    double norm = sqrt(be->sumsq(m->grads, m->n_params));
    if (!isfinite(norm)) return blame_gradient(m);
    if (cfg->clip > 0 && norm > cfg->clip) be->scale(m->grads, (float)(cfg->clip / norm), m->n_params);

    int t = m->steps_taken + 1;
    double lr = schedule_lr(cfg, cfg->schedule_step > 0 ? cfg->schedule_step : t);
    for (int s = 0; s < m->n_segments; s++) {
        const segment *g = &m->segments[s];
        be->adamw(m->params + g->offset, m->grads + g->offset, m->adam_m + g->offset,
                  m->adam_v + g->offset, g->numel, (float)lr, cfg->beta1, cfg->beta2, cfg->eps,
                  g->decay ? cfg->weight_decay : 0.0f, t);
    }
    PF_TRY(be->sync());
    m->steps_taken = t;
    for (int i = 0; i < m->n_blocks; i++) {
        pf_layer *l = m->blocks[i].layer;
        l->train = 0;
        if (l->kind->train_step_end) l->kind->train_step_end(l, t);
    }
    stats->step = t;
    stats->loss = loss;
    stats->accuracy = acc;
    stats->aux_loss = aux;
    stats->grad_norm = norm;
    stats->lr = lr;
    stats->tokens = rows;
    return 0;
}
