/* Devices: the backends this build has, chosen at run time by name. */
#ifndef PF_DEVICE_H
#define PF_DEVICE_H

#include "kernels/kernels.h"

/* The backend called name ("cpu", "cuda"), initialised; NULL with pf_error saying why not (not
 * built in, no device, driver error). */
const pf_backend *pf_device(const char *name);
/* Names of the devices usable here, in preference order; returns how many (at most max). */
int pf_devices(const char **names, int max);

#endif
