/*
 * STAND-IN for NVIDIA's libnvidia-ml.so.1 -- FOR TESTS ONLY. This is not NVML and talks to no GPU.
 *
 * It exports the subset of the NVML C API that the real nvidia-ml-py (`import pynvml`) calls for
 * mlobs' GPU sampler, with the exact prototypes and struct layouts of the real `nvml.h` (from the
 * PyPI package nvidia-nvml-dev), so that pynvml runs unmodified against it when it is loaded as
 * `libnvidia-ml.so.1` (through LD_LIBRARY_PATH, or by handing pynvml a ctypes.CDLL of it).
 *
 * Devices, values and faults come from a config file whose path is in the environment variable
 * MLOBS_FAKE_NVML_CONFIG. The file is re-read whenever its inode, size or mtime changes, so a test
 * can change values or inject faults mid-run. It is written by tests/nvml_standin/__init__.py
 * (from a dict) in a flat `key=value` line format:
 *
 *   no_driver=0|1                     nvmlInit* fails with NVML_ERROR_DRIVER_NOT_LOADED
 *   driver_version=550.54.15
 *   nvml_version=12.550.54.15
 *   not_supported=nvmlDeviceGetFanSpeed,...      functions returning NVML_ERROR_NOT_SUPPORTED
 *   devices.count=N
 *   devices.I.<field>=value           see struct fdev below for the fields
 *   devices.I.not_supported=a,b       per-device NOT_SUPPORTED functions
 *   devices.I.lost=1                  every call on the device returns NVML_ERROR_GPU_IS_LOST
 *   devices.I.processes.count=N, devices.I.processes.J.pid=..., .used_memory=...
 *   devices.I.mig.count=N, devices.I.mig.J.uuid=..., .name=..., .mem_total=..., .mem_used=...,
 *                                     .util=percent (GPM graphics/SM utilization of instance J)
 *   devices.I.mem_temp=C              NVML_FI_DEV_MEMORY_TEMP; unset: that field NOT_SUPPORTED
 *   devices.I.gpm=0|1                 GPM (nvmlGpm*) support; whole-device samples use util_gpu
 *   events.count=N, events.K.device=I, events.K.xid=79, events.K.id=unique-number
 *
 * XID events are delivered once per process (per event id) by nvmlEventSetWait_v2 to an event set
 * on which the device registered nvmlEventTypeXidCriticalError.
 *
 * MIG GPU instance ids are the MIG device's position in devices.I.mig (as in process infos).
 * GPM samples hold the configured utilization at nvmlGpm*SampleGet time; nvmlGpmMetricsGet returns
 * the later sample's value instead of computing it from counter deltas.
 */
#define NVML_NO_UNVERSIONED_FUNC_DEFS 1
#include <nvml.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MAX_DEV 64
#define MAX_MIG 8
#define MAX_PROC 64
#define MAX_EVENTS 256
#define MAX_DELIVERED 4096
#define LIST_LEN 2048

typedef struct {
    char uuid[96];
    char name[96];
    unsigned long long mem_total, mem_used;
    unsigned int util; /* GPM graphics / SM utilization, percent */
    unsigned int nproc;
    unsigned int proc_pid[MAX_PROC];
    unsigned long long proc_mem[MAX_PROC];
} fmig;

typedef struct {
    char name[96];
    char uuid[96];
    char not_supported[LIST_LEN];
    int lost;
    unsigned long long mem_total, mem_used, mem_reserved;
    unsigned int util_gpu, util_mem, enc_util, dec_util;
    unsigned int temp, power_mw, power_limit_mw;
    int mem_temp_set; /* 0: the device has no memory temperature sensor */
    unsigned int mem_temp;
    int gpm; /* GPM supported */
    unsigned long long energy_mj;
    unsigned int clock[4], max_clock[4]; /* graphics, sm, mem, video */
    unsigned int fan, pcie_tx_kbs, pcie_rx_kbs, pcie_replay;
    unsigned long long ecc_corrected, ecc_uncorrected;
    unsigned int pstate;
    unsigned long long throttle_reasons, supported_events;
    int mig_mode; /* -1: derived from mig.count */
    int max_mig;  /* -1: 7 when MIG is on, else 0 */
    unsigned int remapped_corr, remapped_unc, remapped_pending, remapped_failure;
    unsigned int nproc;
    unsigned int proc_pid[MAX_PROC];
    unsigned long long proc_mem[MAX_PROC];
    unsigned int nmig;
    fmig mig[MAX_MIG];
} fdev;

typedef struct {
    unsigned int device;
    unsigned long long xid;
    long long id;
} fevent;

typedef struct {
    int no_driver;
    char driver_version[80];
    char nvml_version[80];
    char not_supported[LIST_LEN];
    unsigned int ndev;
    fdev dev[MAX_DEV];
    unsigned int nevents;
    fevent events[MAX_EVENTS];
} fconfig;

/* Handles are pointers into these static arrays, so they stay valid across config reloads. */
struct nvmlDevice_st {
    int dev;
    int mig; /* -1 for a full GPU */
};
struct nvmlEventSet_st {
    unsigned long long mask[MAX_DEV];
};

static struct nvmlDevice_st g_handles[MAX_DEV];
static struct nvmlDevice_st g_mig_handles[MAX_DEV][MAX_MIG];
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static fconfig g_cfg;
static int g_cfg_loaded;
static struct stat g_cfg_stat;
static int g_init_count;
static long long g_delivered[MAX_DELIVERED];
static unsigned int g_ndelivered;

static unsigned long long num(const char *s) { return strtoull(s, NULL, 0); }

static void copy_str(char *dst, size_t n, const char *src) {
    strncpy(dst, src, n - 1);
    dst[n - 1] = '\0';
}

static void dev_defaults(fdev *d, unsigned int i) {
    memset(d, 0, sizeof(*d));
    snprintf(d->name, sizeof d->name, "Stand-in GPU %u", i);
    snprintf(d->uuid, sizeof d->uuid, "GPU-00000000-0000-0000-0000-%012u", i);
    d->mig_mode = -1;
    d->max_mig = -1;
    d->supported_events = nvmlEventTypeXidCriticalError | nvmlEventTypeSingleBitEccError |
                          nvmlEventTypeDoubleBitEccError;
}

static void set_procs(unsigned int *n, unsigned int *pids, unsigned long long *mems,
                      const char *rest, const char *val) {
    int j;
    char f[64];
    if (strcmp(rest, "count") == 0) {
        unsigned long long c = num(val);
        *n = c > MAX_PROC ? MAX_PROC : (unsigned int)c;
        return;
    }
    if (sscanf(rest, "%d.%63s", &j, f) != 2 || j < 0 || j >= MAX_PROC) return;
    if (strcmp(f, "pid") == 0) pids[j] = (unsigned int)num(val);
    else if (strcmp(f, "used_memory") == 0) mems[j] = num(val);
}

static void set_mig(fdev *d, const char *rest, const char *val) {
    int j;
    char f[128];
    if (strcmp(rest, "count") == 0) {
        unsigned long long c = num(val);
        d->nmig = c > MAX_MIG ? MAX_MIG : (unsigned int)c;
        return;
    }
    if (sscanf(rest, "%d.%127s", &j, f) != 2 || j < 0 || j >= MAX_MIG) return;
    fmig *m = &d->mig[j];
    if (strcmp(f, "uuid") == 0) copy_str(m->uuid, sizeof m->uuid, val);
    else if (strcmp(f, "name") == 0) copy_str(m->name, sizeof m->name, val);
    else if (strcmp(f, "mem_total") == 0) m->mem_total = num(val);
    else if (strcmp(f, "mem_used") == 0) m->mem_used = num(val);
    else if (strcmp(f, "util") == 0) m->util = (unsigned int)num(val);
    else if (strncmp(f, "processes.", 10) == 0)
        set_procs(&m->nproc, m->proc_pid, m->proc_mem, f + 10, val);
}

static void set_dev(fdev *d, const char *f, const char *val) {
    static const char *clocks[4] = {"graphics", "sm", "mem", "video"};
    if (strncmp(f, "processes.", 10) == 0) {
        set_procs(&d->nproc, d->proc_pid, d->proc_mem, f + 10, val);
        return;
    }
    if (strncmp(f, "mig.", 4) == 0) {
        set_mig(d, f + 4, val);
        return;
    }
    for (int c = 0; c < 4; c++) {
        char k[32];
        snprintf(k, sizeof k, "clock_%s", clocks[c]);
        if (strcmp(f, k) == 0) { d->clock[c] = (unsigned int)num(val); return; }
        snprintf(k, sizeof k, "max_clock_%s", clocks[c]);
        if (strcmp(f, k) == 0) { d->max_clock[c] = (unsigned int)num(val); return; }
    }
#define U(field) else if (strcmp(f, #field) == 0) d->field = (unsigned int)num(val)
#define ULL(field) else if (strcmp(f, #field) == 0) d->field = num(val)
    if (strcmp(f, "name") == 0) copy_str(d->name, sizeof d->name, val);
    else if (strcmp(f, "uuid") == 0) copy_str(d->uuid, sizeof d->uuid, val);
    else if (strcmp(f, "not_supported") == 0) copy_str(d->not_supported, LIST_LEN, val);
    else if (strcmp(f, "lost") == 0) d->lost = num(val) != 0;
    else if (strcmp(f, "mig_mode") == 0) d->mig_mode = (int)num(val);
    else if (strcmp(f, "max_mig") == 0) d->max_mig = (int)num(val);
    else if (strcmp(f, "gpm") == 0) d->gpm = num(val) != 0;
    else if (strcmp(f, "mem_temp") == 0) {
        d->mem_temp = (unsigned int)num(val);
        d->mem_temp_set = 1;
    }
    ULL(mem_total); ULL(mem_used); ULL(mem_reserved);
    U(util_gpu); U(util_mem); U(enc_util); U(dec_util);
    U(temp); U(power_mw); U(power_limit_mw); ULL(energy_mj);
    U(fan); U(pcie_tx_kbs); U(pcie_rx_kbs); U(pcie_replay);
    ULL(ecc_corrected); ULL(ecc_uncorrected); U(pstate);
    ULL(throttle_reasons); ULL(supported_events);
    U(remapped_corr); U(remapped_unc); U(remapped_pending); U(remapped_failure);
#undef U
#undef ULL
}

static void set_key(fconfig *c, const char *key, const char *val) {
    int i;
    char rest[256];
    if (strcmp(key, "no_driver") == 0) c->no_driver = num(val) != 0;
    else if (strcmp(key, "driver_version") == 0) copy_str(c->driver_version, 80, val);
    else if (strcmp(key, "nvml_version") == 0) copy_str(c->nvml_version, 80, val);
    else if (strcmp(key, "not_supported") == 0) copy_str(c->not_supported, LIST_LEN, val);
    else if (strcmp(key, "devices.count") == 0) {
        unsigned long long n = num(val);
        c->ndev = n > MAX_DEV ? MAX_DEV : (unsigned int)n;
    } else if (strcmp(key, "events.count") == 0) {
        unsigned long long n = num(val);
        c->nevents = n > MAX_EVENTS ? MAX_EVENTS : (unsigned int)n;
    } else if (sscanf(key, "devices.%d.%255s", &i, rest) == 2 && i >= 0 && i < MAX_DEV) {
        set_dev(&c->dev[i], rest, val);
    } else if (sscanf(key, "events.%d.%255s", &i, rest) == 2 && i >= 0 && i < MAX_EVENTS) {
        if (strcmp(rest, "device") == 0) c->events[i].device = (unsigned int)num(val);
        else if (strcmp(rest, "xid") == 0) c->events[i].xid = num(val);
        else if (strcmp(rest, "id") == 0) c->events[i].id = (long long)num(val);
    }
}

/* Called with g_lock held. Returns 0 when a usable config is in g_cfg. */
static int reload_if_changed(void) {
    const char *path = getenv("MLOBS_FAKE_NVML_CONFIG");
    struct stat st;
    if (path == NULL || *path == '\0') {
        if (!g_cfg_loaded) {
            memset(&g_cfg, 0, sizeof g_cfg);
            copy_str(g_cfg.driver_version, 80, "0.0.0-standin");
            copy_str(g_cfg.nvml_version, 80, "0.0.0-standin");
            g_cfg_loaded = 1;
        }
        return 0;
    }
    if (stat(path, &st) != 0) return g_cfg_loaded ? 0 : -1;
    if (g_cfg_loaded && st.st_ino == g_cfg_stat.st_ino && st.st_size == g_cfg_stat.st_size &&
        st.st_mtim.tv_sec == g_cfg_stat.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == g_cfg_stat.st_mtim.tv_nsec)
        return 0;
    FILE *fp = fopen(path, "r");
    if (fp == NULL) return g_cfg_loaded ? 0 : -1;
    static fconfig next;
    memset(&next, 0, sizeof next);
    copy_str(next.driver_version, 80, "550.54.15");
    copy_str(next.nvml_version, 80, "12.550.54.15");
    for (unsigned int i = 0; i < MAX_DEV; i++) dev_defaults(&next.dev[i], i);
    for (unsigned int i = 0; i < MAX_EVENTS; i++) next.events[i].id = (long long)i;
    char line[4096];
    while (fgets(line, sizeof line, fp) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        char *eq = strchr(line, '=');
        if (eq == NULL || line[0] == '#') continue;
        *eq = '\0';
        set_key(&next, line, eq + 1);
    }
    fclose(fp);
    memcpy(&g_cfg, &next, sizeof g_cfg);
    g_cfg_stat = st;
    g_cfg_loaded = 1;
    return 0;
}

static int in_list(const char *list, const char *fn) {
    size_t n = strlen(fn);
    const char *p = list;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == n && strncmp(p, fn, n) == 0) return 1;
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

static nvmlReturn_t leave(nvmlReturn_t rc) {
    pthread_mutex_unlock(&g_lock);
    return rc;
}

/* Locks g_lock (always: every exit goes through leave()), reloads the config and resolves the
 * handle (NULL for system-level calls). */
static nvmlReturn_t enter(nvmlDevice_t h, const char *fn, fdev **d, fmig **m) {
    pthread_mutex_lock(&g_lock);
    if (g_init_count <= 0) return NVML_ERROR_UNINITIALIZED;
    if (reload_if_changed() != 0) return NVML_ERROR_UNKNOWN;
    if (in_list(g_cfg.not_supported, fn)) return NVML_ERROR_NOT_SUPPORTED;
    if (d == NULL) return NVML_SUCCESS;
    *d = NULL;
    *m = NULL;
    if (h == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    int di = h->dev;
    if (di < 0 || (unsigned int)di >= g_cfg.ndev) return NVML_ERROR_INVALID_ARGUMENT;
    *d = &g_cfg.dev[di];
    if ((*d)->lost) return NVML_ERROR_GPU_IS_LOST;
    if (h->mig >= 0) {
        if ((unsigned int)h->mig >= (*d)->nmig) return NVML_ERROR_INVALID_ARGUMENT;
        *m = &(*d)->mig[h->mig];
    }
    if (in_list((*d)->not_supported, fn)) return NVML_ERROR_NOT_SUPPORTED;
    return NVML_SUCCESS;
}

#define ENTER_SYS()                                     \
    nvmlReturn_t rc_ = enter(NULL, __func__, NULL, NULL); \
    if (rc_ != NVML_SUCCESS) return leave(rc_)
#define ENTER_DEV(h)                                    \
    fdev *d = NULL;                                     \
    fmig *m = NULL;                                     \
    nvmlReturn_t rc_ = enter((h), __func__, &d, &m);    \
    if (rc_ != NVML_SUCCESS) return leave(rc_);         \
    (void)d;                                            \
    (void)m
/* Most per-GPU queries are not supported on MIG device handles by the real library either. */
#define GPU_ONLY() \
    if (m != NULL) return leave(NVML_ERROR_NOT_SUPPORTED)
#define NEED(p) \
    if ((p) == NULL) return leave(NVML_ERROR_INVALID_ARGUMENT)

/* ---- init / system ---------------------------------------------------------------------- */

static nvmlReturn_t do_init(void) {
    pthread_mutex_lock(&g_lock);
    if (g_init_count == 0) {
        g_cfg_loaded = 0;
        g_ndelivered = 0;
    }
    if (reload_if_changed() != 0) return leave(NVML_ERROR_UNKNOWN);
    if (g_cfg.no_driver) return leave(NVML_ERROR_DRIVER_NOT_LOADED);
    for (int i = 0; i < MAX_DEV; i++) {
        g_handles[i].dev = i;
        g_handles[i].mig = -1;
        for (int j = 0; j < MAX_MIG; j++) {
            g_mig_handles[i][j].dev = i;
            g_mig_handles[i][j].mig = j;
        }
    }
    g_init_count++;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlInit_v2(void) { return do_init(); }
nvmlReturn_t nvmlInit(void) { return do_init(); }
nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    return do_init();
}

nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&g_lock);
    if (g_init_count <= 0) return leave(NVML_ERROR_UNINITIALIZED);
    g_init_count--;
    return leave(NVML_SUCCESS);
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_MEMORY: return "Insufficient Memory";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument Version Mismatch";
    default: return "Unknown Error";
    }
}

static nvmlReturn_t put_str(char *dst, unsigned int len, const char *src) {
    if (dst == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    ENTER_SYS();
    return leave(put_str(version, length, g_cfg.driver_version));
}

nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    ENTER_SYS();
    return leave(put_str(version, length, g_cfg.nvml_version));
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount) {
    ENTER_SYS();
    NEED(deviceCount);
    *deviceCount = g_cfg.ndev;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    ENTER_SYS();
    NEED(device);
    if (index >= g_cfg.ndev) return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (g_cfg.dev[index].lost) return leave(NVML_ERROR_GPU_IS_LOST);
    *device = &g_handles[index];
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    ENTER_SYS();
    NEED(uuid);
    NEED(device);
    for (unsigned int i = 0; i < g_cfg.ndev; i++) {
        fdev *d = &g_cfg.dev[i];
        if (strcmp(d->uuid, uuid) == 0) {
            if (d->lost) return leave(NVML_ERROR_GPU_IS_LOST);
            *device = &g_handles[i];
            return leave(NVML_SUCCESS);
        }
        for (unsigned int j = 0; j < d->nmig; j++) {
            if (strcmp(d->mig[j].uuid, uuid) == 0) {
                if (d->lost) return leave(NVML_ERROR_GPU_IS_LOST);
                *device = &g_mig_handles[i][j];
                return leave(NVML_SUCCESS);
            }
        }
    }
    return leave(NVML_ERROR_NOT_FOUND);
}

/* ---- identity ---------------------------------------------------------------------------- */

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    ENTER_DEV(device);
    NEED(index);
    *index = (unsigned int)(m ? device->mig : device->dev);
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    ENTER_DEV(device);
    if (m) {
        char buf[96];
        if (m->name[0]) return leave(put_str(name, length, m->name));
        snprintf(buf, sizeof buf, "%.60s MIG %d", d->name, device->mig);
        return leave(put_str(name, length, buf));
    }
    return leave(put_str(name, length, d->name));
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    ENTER_DEV(device);
    return leave(put_str(uuid, length, m ? m->uuid : d->uuid));
}

/* ---- memory / utilization ---------------------------------------------------------------- */

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    ENTER_DEV(device);
    NEED(memory);
    unsigned long long total = m ? m->mem_total : d->mem_total;
    unsigned long long used = m ? m->mem_used : d->mem_used;
    memory->total = total;
    memory->used = used;
    memory->free = total > used ? total - used : 0;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    ENTER_DEV(device);
    NEED(memory);
    unsigned long long total = m ? m->mem_total : d->mem_total;
    unsigned long long used = m ? m->mem_used : d->mem_used;
    unsigned long long reserved = m ? 0 : d->mem_reserved;
    memory->total = total;
    memory->reserved = reserved;
    memory->used = used;
    memory->free = total > used + reserved ? total - used - reserved : 0;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(utilization);
    utilization->gpu = d->util_gpu;
    utilization->memory = d->util_mem;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetEncoderUtilization(nvmlDevice_t device, unsigned int *utilization,
                                             unsigned int *samplingPeriodUs) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(utilization);
    NEED(samplingPeriodUs);
    *utilization = d->enc_util;
    *samplingPeriodUs = 167000;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetDecoderUtilization(nvmlDevice_t device, unsigned int *utilization,
                                             unsigned int *samplingPeriodUs) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(utilization);
    NEED(samplingPeriodUs);
    *utilization = d->dec_util;
    *samplingPeriodUs = 167000;
    return leave(NVML_SUCCESS);
}

/* ---- thermal / power / clocks ------------------------------------------------------------ */

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, nvmlTemperatureSensors_t sensorType,
                                      unsigned int *temp) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(temp);
    if (sensorType != NVML_TEMPERATURE_GPU) return leave(NVML_ERROR_INVALID_ARGUMENT);
    *temp = d->temp;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t device, nvmlTemperature_t *temperature) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(temperature);
    if (temperature->sensorType != NVML_TEMPERATURE_GPU) return leave(NVML_ERROR_INVALID_ARGUMENT);
    temperature->temperature = (int)d->temp;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(power);
    *power = d->power_mw;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(limit);
    *limit = d->power_limit_mw;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *energy) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(energy);
    *energy = d->energy_mj;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, nvmlClockType_t type,
                                    unsigned int *clock) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(clock);
    if ((unsigned int)type >= 4) return leave(NVML_ERROR_INVALID_ARGUMENT);
    *clock = d->clock[type];
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t device, nvmlClockType_t type,
                                       unsigned int *clock) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(clock);
    if ((unsigned int)type >= 4) return leave(NVML_ERROR_INVALID_ARGUMENT);
    *clock = d->max_clock[type];
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t device, unsigned int *speed) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(speed);
    *speed = d->fan;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetPerformanceState(nvmlDevice_t device, nvmlPstates_t *pState) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(pState);
    *pState = (nvmlPstates_t)d->pstate;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device,
                                                    unsigned long long *clocksEventReasons) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(clocksEventReasons);
    *clocksEventReasons = d->throttle_reasons;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device,
                                                       unsigned long long *clocksThrottleReasons) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(clocksThrottleReasons);
    *clocksThrottleReasons = d->throttle_reasons;
    return leave(NVML_SUCCESS);
}

/* ---- field values ------------------------------------------------------------------------ */

static long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

/* Each entry gets its own nvmlReturn: unknown field ids, fields the device lacks (no mem_temp
 * configured) and every field on a MIG device handle are NOT_SUPPORTED there, while the call
 * itself succeeds. Function-level faults (not_supported lists, a lost GPU) fail the whole call. */
nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int valuesCount,
                                      nvmlFieldValue_t *values) {
    ENTER_DEV(device);
    if (valuesCount < 0 || (valuesCount > 0 && values == NULL))
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    long long ts = now_us();
    for (int i = 0; i < valuesCount; i++) {
        nvmlFieldValue_t *v = &values[i];
        v->timestamp = ts;
        v->latencyUsec = 0;
        memset(&v->value, 0, sizeof v->value);
        v->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
        v->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
        if (m != NULL) continue;
        switch (v->fieldId) {
        case NVML_FI_DEV_MEMORY_TEMP:
            if (!d->mem_temp_set) break;
            v->value.uiVal = d->mem_temp;
            v->nvmlReturn = NVML_SUCCESS;
            break;
        case NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION:
            v->valueType = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
            v->value.ullVal = d->energy_mj;
            v->nvmlReturn = NVML_SUCCESS;
            break;
        default:
            break;
        }
    }
    return leave(NVML_SUCCESS);
}

/* ---- PCIe / ECC -------------------------------------------------------------------------- */

nvmlReturn_t nvmlDeviceGetPcieThroughput(nvmlDevice_t device, nvmlPcieUtilCounter_t counter,
                                         unsigned int *value) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(value);
    if (counter == NVML_PCIE_UTIL_TX_BYTES) *value = d->pcie_tx_kbs;
    else if (counter == NVML_PCIE_UTIL_RX_BYTES) *value = d->pcie_rx_kbs;
    else return leave(NVML_ERROR_INVALID_ARGUMENT);
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetPcieReplayCounter(nvmlDevice_t device, unsigned int *value) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(value);
    *value = d->pcie_replay;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, nvmlMemoryErrorType_t errorType,
                                         nvmlEccCounterType_t counterType,
                                         unsigned long long *eccCounts) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(eccCounts);
    (void)counterType; /* volatile and aggregate counters report the same configured value */
    if (errorType == NVML_MEMORY_ERROR_TYPE_CORRECTED) *eccCounts = d->ecc_corrected;
    else if (errorType == NVML_MEMORY_ERROR_TYPE_UNCORRECTED) *eccCounts = d->ecc_uncorrected;
    else return leave(NVML_ERROR_INVALID_ARGUMENT);
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t device, unsigned int *corrRows,
                                       unsigned int *uncRows, unsigned int *isPending,
                                       unsigned int *failureOccurred) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(corrRows);
    NEED(uncRows);
    NEED(isPending);
    NEED(failureOccurred);
    *corrRows = d->remapped_corr;
    *uncRows = d->remapped_unc;
    *isPending = d->remapped_pending;
    *failureOccurred = d->remapped_failure;
    return leave(NVML_SUCCESS);
}

/* ---- processes --------------------------------------------------------------------------- */

static nvmlReturn_t fill_procs(unsigned int n, const unsigned int *pids,
                               const unsigned long long *mems, int gi, unsigned int *infoCount,
                               nvmlProcessInfo_t *infos) {
    if (infoCount == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (*infoCount < n || (infos == NULL && n > 0)) {
        *infoCount = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (unsigned int i = 0; i < n; i++) {
        infos[i].pid = pids[i];
        infos[i].usedGpuMemory = mems[i];
        infos[i].gpuInstanceId = gi < 0 ? 0xFFFFFFFFu : (unsigned int)gi;
        infos[i].computeInstanceId = gi < 0 ? 0xFFFFFFFFu : 0;
    }
    *infoCount = n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device,
                                                     unsigned int *infoCount,
                                                     nvmlProcessInfo_t *infos) {
    ENTER_DEV(device);
    if (m) return leave(fill_procs(m->nproc, m->proc_pid, m->proc_mem, device->mig, infoCount,
                                   infos));
    return leave(fill_procs(d->nproc, d->proc_pid, d->proc_mem, -1, infoCount, infos));
}

/* Same struct layout as _v3 (nvmlProcessInfo_v2_t == nvmlProcessInfo_t). */
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device,
                                                     unsigned int *infoCount,
                                                     nvmlProcessInfo_v2_t *infos) {
    ENTER_DEV(device);
    if (m) return leave(fill_procs(m->nproc, m->proc_pid, m->proc_mem, device->mig, infoCount,
                                   infos));
    return leave(fill_procs(d->nproc, d->proc_pid, d->proc_mem, -1, infoCount, infos));
}

/* ---- MIG --------------------------------------------------------------------------------- */

static int mig_on(const fdev *d) { return d->mig_mode >= 0 ? d->mig_mode != 0 : d->nmig > 0; }

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode,
                                  unsigned int *pendingMode) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(currentMode);
    NEED(pendingMode);
    *currentMode = *pendingMode = mig_on(d) ? NVML_DEVICE_MIG_ENABLE : NVML_DEVICE_MIG_DISABLE;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(count);
    *count = d->max_mig >= 0 ? (unsigned int)d->max_mig : (mig_on(d) ? 7u : 0u);
    if (*count < d->nmig) *count = d->nmig;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                 nvmlDevice_t *migDevice) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(migDevice);
    if (!mig_on(d)) return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (index >= d->nmig) return leave(NVML_ERROR_NOT_FOUND);
    *migDevice = &g_mig_handles[device->dev][index];
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *isMigDevice) {
    ENTER_DEV(device);
    NEED(isMigDevice);
    *isMigDevice = m != NULL;
    return leave(NVML_SUCCESS);
}

/* ---- events ------------------------------------------------------------------------------ */

nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device,
                                              unsigned long long *eventTypes) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(eventTypes);
    *eventTypes = d->supported_events;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    ENTER_SYS();
    NEED(set);
    *set = calloc(1, sizeof(struct nvmlEventSet_st));
    return leave(*set ? NVML_SUCCESS : NVML_ERROR_MEMORY);
}

nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long eventTypes,
                                      nvmlEventSet_t set) {
    ENTER_DEV(device);
    GPU_ONLY();
    NEED(set);
    if (eventTypes & ~d->supported_events) return leave(NVML_ERROR_NOT_SUPPORTED);
    set->mask[device->dev] |= eventTypes;
    return leave(NVML_SUCCESS);
}

static int delivered(long long id) {
    for (unsigned int i = 0; i < g_ndelivered; i++)
        if (g_delivered[i] == id) return 1;
    return 0;
}

nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data,
                                 unsigned int timeoutms) {
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        ENTER_SYS();
        if (set == NULL || data == NULL) return leave(NVML_ERROR_INVALID_ARGUMENT);
        for (unsigned int i = 0; i < g_cfg.nevents; i++) {
            fevent *e = &g_cfg.events[i];
            if (e->device >= g_cfg.ndev || e->device >= MAX_DEV) continue;
            if (!(set->mask[e->device] & nvmlEventTypeXidCriticalError)) continue;
            if (delivered(e->id)) continue;
            if (g_ndelivered < MAX_DELIVERED) g_delivered[g_ndelivered++] = e->id;
            memset(data, 0, sizeof *data);
            data->device = &g_handles[e->device];
            data->eventType = nvmlEventTypeXidCriticalError;
            data->eventData = e->xid;
            data->gpuInstanceId = 0xFFFFFFFFu;
            data->computeInstanceId = 0xFFFFFFFFu;
            return leave(NVML_SUCCESS);
        }
        leave(NVML_SUCCESS);
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long elapsed_ms = (now.tv_sec - start.tv_sec) * 1000LL +
                               (now.tv_nsec - start.tv_nsec) / 1000000LL;
        if (elapsed_ms >= (long long)timeoutms) return NVML_ERROR_TIMEOUT;
        struct timespec nap = {0, 10 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
}

nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    ENTER_SYS();
    free(set);
    return leave(NVML_SUCCESS);
}

/* ---- GPM --------------------------------------------------------------------------------- */

/* The opaque sample: which device / GPU instance it was taken on, when, and the configured
 * utilization at that time (a real sample holds raw counters). */
struct nvmlGpmSample_st {
    int filled;
    int dev;
    int gi; /* MIG GPU instance id; -1 for a whole-device sample */
    unsigned long long seq;
    long long timestamp_us;
    unsigned int util;
};

#define MAX_GPM_SAMPLES 4096
static nvmlGpmSample_t g_gpm_samples[MAX_GPM_SAMPLES];
static unsigned int g_gpm_nsamples;
static unsigned long long g_gpm_seq;

/* Called with g_lock held: the index of a live (allocated, not freed) sample, or -1. */
static int gpm_find(nvmlGpmSample_t s) {
    if (s == NULL) return -1;
    for (unsigned int i = 0; i < g_gpm_nsamples; i++)
        if (g_gpm_samples[i] == s) return (int)i;
    return -1;
}

/* Not an NVML function: how many GPM samples are allocated and not yet freed (tests use it to
 * find leaks). */
unsigned int fakeNvmlGpmSamplesInUse(void) {
    pthread_mutex_lock(&g_lock);
    unsigned int n = g_gpm_nsamples;
    pthread_mutex_unlock(&g_lock);
    return n;
}

nvmlReturn_t nvmlGpmQueryDeviceSupport(nvmlDevice_t device, nvmlGpmSupport_t *gpmSupport) {
    ENTER_DEV(device);
    NEED(gpmSupport);
    if (gpmSupport->version != NVML_GPM_SUPPORT_VERSION)
        return leave(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    gpmSupport->isSupportedDevice = d->gpm ? 1u : 0u;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlGpmSampleAlloc(nvmlGpmSample_t *gpmSample) {
    ENTER_SYS();
    NEED(gpmSample);
    if (g_gpm_nsamples >= MAX_GPM_SAMPLES) return leave(NVML_ERROR_MEMORY);
    nvmlGpmSample_t s = calloc(1, sizeof *s);
    if (s == NULL) return leave(NVML_ERROR_MEMORY);
    g_gpm_samples[g_gpm_nsamples++] = s;
    *gpmSample = s;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlGpmSampleFree(nvmlGpmSample_t gpmSample) {
    ENTER_SYS();
    int i = gpm_find(gpmSample);
    if (i < 0) return leave(NVML_ERROR_INVALID_ARGUMENT);
    g_gpm_samples[i] = g_gpm_samples[--g_gpm_nsamples];
    free(gpmSample);
    return leave(NVML_SUCCESS);
}

static void gpm_fill(nvmlGpmSample_t s, int dev, int gi, unsigned int util) {
    s->filled = 1;
    s->dev = dev;
    s->gi = gi;
    s->seq = ++g_gpm_seq;
    s->timestamp_us = now_us();
    s->util = util;
}

/* Accepts a full GPU handle (whole-device sample, util_gpu) or a MIG device handle (that
 * instance's util), as the real API does. */
nvmlReturn_t nvmlGpmSampleGet(nvmlDevice_t device, nvmlGpmSample_t gpmSample) {
    ENTER_DEV(device);
    if (gpm_find(gpmSample) < 0) return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (!d->gpm) return leave(NVML_ERROR_NOT_SUPPORTED);
    if (m) gpm_fill(gpmSample, device->dev, device->mig, m->util);
    else gpm_fill(gpmSample, device->dev, -1, d->util_gpu);
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlGpmMigSampleGet(nvmlDevice_t device, unsigned int gpuInstanceId,
                                 nvmlGpmSample_t gpmSample) {
    ENTER_DEV(device);
    GPU_ONLY();
    if (gpm_find(gpmSample) < 0) return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (!d->gpm) return leave(NVML_ERROR_NOT_SUPPORTED);
    if (!mig_on(d)) return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (gpuInstanceId >= d->nmig) return leave(NVML_ERROR_NOT_FOUND);
    gpm_fill(gpmSample, device->dev, (int)gpuInstanceId, d->mig[gpuInstanceId].util);
    return leave(NVML_SUCCESS);
}

/* Both samples must be filled and come from the same device and GPU instance. Utilization metrics
 * report the later sample's configured percent; other metrics are NOT_SUPPORTED per entry. */
nvmlReturn_t nvmlGpmMetricsGet(nvmlGpmMetricsGet_t *metricsGet) {
    static char graphics_short[] = "gr_util", graphics_long[] = "graphics utilization";
    static char sm_short[] = "sm_util", sm_long[] = "SM utilization";
    static char percent[] = "%";
    ENTER_SYS();
    NEED(metricsGet);
    if (metricsGet->version != NVML_GPM_METRICS_GET_VERSION)
        return leave(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    if (metricsGet->numMetrics > NVML_GPM_METRIC_MAX) return leave(NVML_ERROR_INVALID_ARGUMENT);
    nvmlGpmSample_t s1 = metricsGet->sample1, s2 = metricsGet->sample2;
    if (gpm_find(s1) < 0 || gpm_find(s2) < 0 || s1 == s2) return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (!s1->filled || !s2->filled) return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (s1->dev != s2->dev || s1->gi != s2->gi) return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (s1->dev < 0 || (unsigned int)s1->dev >= g_cfg.ndev)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    fdev *d = &g_cfg.dev[s1->dev];
    if (d->lost) return leave(NVML_ERROR_GPU_IS_LOST);
    if (in_list(d->not_supported, __func__)) return leave(NVML_ERROR_NOT_SUPPORTED);
    const struct nvmlGpmSample_st *later = s2->seq > s1->seq ? s2 : s1;
    for (unsigned int i = 0; i < metricsGet->numMetrics; i++) {
        nvmlGpmMetric_t *metric = &metricsGet->metrics[i];
        metric->value = 0.0;
        metric->metricInfo.shortName = NULL;
        metric->metricInfo.longName = NULL;
        metric->metricInfo.unit = NULL;
        metric->nvmlReturn = NVML_SUCCESS;
        if (metric->metricId == NVML_GPM_METRIC_GRAPHICS_UTIL) {
            metric->metricInfo.shortName = graphics_short;
            metric->metricInfo.longName = graphics_long;
        } else if (metric->metricId == NVML_GPM_METRIC_SM_UTIL) {
            metric->metricInfo.shortName = sm_short;
            metric->metricInfo.longName = sm_long;
        } else {
            metric->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
            continue;
        }
        metric->metricInfo.unit = percent;
        metric->value = later->util > 100 ? 100.0 : (double)later->util;
    }
    return leave(NVML_SUCCESS);
}
