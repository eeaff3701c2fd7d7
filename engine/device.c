/* Device lookup: cpu always; cuda when built with it and a GPU answers. */
#include "engine/device.h"

#include <string.h>

#include "engine/error.h"

static const pf_backend *const backends[] = {
#ifdef PF_HAVE_CUDA
    &pf_backend_cuda,
#endif
    &pf_backend_cpu,
};
enum { N_BACKENDS = sizeof backends / sizeof backends[0] };

const pf_backend *pf_device(const char *name)
{
    for (int i = 0; i < N_BACKENDS; i++)
        if (strcmp(backends[i]->name, name) == 0) return backends[i]->init() < 0 ? NULL : backends[i];
    if (strcmp(name, "cuda") == 0)
        pf_error("device 'cuda': this build has no CUDA backend (nvcc was not found when it was built)");
    else
        pf_error("unknown device '%s' (devices: cpu, cuda)", name);
    return NULL;
}

int pf_devices(const char **names, int max)
{
    int n = 0;
    for (int i = 0; i < N_BACKENDS && n < max; i++)
        if (backends[i]->init() == 0) names[n++] = backends[i]->name;
    pf_error_clear();
    return n;
}
