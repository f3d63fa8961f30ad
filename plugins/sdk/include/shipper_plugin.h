/*
 * shipper_plugin.h — the C ABI of shipper plugins, version 1.
 *
 * A plugin is a shared library that exports one function,
 *
 *     const shipper_plugin_descriptor *shipper_plugin_entry(void);
 *
 * returning a descriptor that lives as long as the library. docs/plugins.md
 * explains every rule; in short:
 *
 *   - Each side frees only what it allocated. What the host passes (config,
 *     records, context) is borrowed for the duration of the call. What the
 *     plugin passes back (a transform's replacement) stays the plugin's and
 *     must stay valid until its next call on the same instance or destroy.
 *   - To fail a call, call error->set(error->host, message, len) (the host
 *     copies the message) and return a non-zero status.
 *   - Calls on one instance never overlap but may come from different
 *     threads. Blocking is fine: the host calls plugins on its own threads.
 *   - The library is never unloaded while shipper runs.
 *
 * This header mirrors the Rust definitions in shipper_plugin::abi; a test
 * checks that the two agree.
 */
#ifndef SHIPPER_PLUGIN_H
#define SHIPPER_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHIPPER_PLUGIN_ABI_VERSION 1u

/* Statuses every call returns. */
#define SHIPPER_OK 0        /* success; for deliver, the acknowledgement */
#define SHIPPER_RETRY 1     /* try again later (a backend down): a sink's batch is offered again */
#define SHIPPER_FATAL 2     /* will not get better: a sink or source stops, a transform's record is dropped */
#define SHIPPER_PANICKED 3  /* a broken invariant: a sink's or transform's instance is replaced, a source ends */

/* What a transform does with a record. */
#define SHIPPER_KEEP 0u
#define SHIPPER_DROP 1u
#define SHIPPER_REPLACE 2u

/* Plugin kinds. */
#define SHIPPER_KIND_SOURCE 1u
#define SHIPPER_KIND_TRANSFORM 2u
#define SHIPPER_KIND_SINK 3u

/* Borrowed bytes; ptr may be NULL when len is 0. Not NUL-terminated. */
typedef struct shipper_slice {
    const uint8_t *ptr;
    size_t len;
} shipper_slice;

typedef struct shipper_record {
    shipper_slice payload;  /* usually one JSON object, no newline */
    shipper_slice stream;   /* UTF-8 */
    uint64_t timestamp_ns;  /* unix ns; for sinks the newest of the record's chunk */
    uint64_t offset;        /* sinks: offset in the log (unique with the producer id); transforms: 0 */
} shipper_record;

typedef struct shipper_error {
    void *host;
    void (*set)(void *host, const uint8_t *message, size_t len);
} shipper_error;

typedef struct shipper_sink_context {
    shipper_slice name;         /* the sink's name in the config */
    shipper_slice producer_id;  /* the log's identity, text */
    shipper_slice data_dir;     /* keep small state under sinks/ there */
    uint64_t committed;         /* every record below was acknowledged before */
} shipper_sink_context;

/* The host's side of a running source: valid only inside source_run, on
 * the thread that runs it. */
typedef struct shipper_source_host {
    void *host;
    /* Stores one record (copied); blocks while the log is at its disk
     * budget. Non-zero: the host is stopping or the log failed; return. */
    int32_t (*emit)(void *host, shipper_slice stream, shipper_slice payload,
                    uint64_t timestamp_ns, const shipper_error *error);
    /* Blocks until everything emitted so far is durable on local disk. */
    int32_t (*wait_durable)(void *host, const shipper_error *error);
    /* Sleeps until the host asks the source to stop (returns 1) or
     * timeout_ms passes (returns 0). 0 ms only asks. */
    int32_t (*wait_stop)(void *host, uint64_t timeout_ms);
} shipper_source_host;

typedef struct shipper_plugin_descriptor {
    uint32_t abi_version;  /* SHIPPER_PLUGIN_ABI_VERSION */
    uint32_t size;         /* sizeof(shipper_plugin_descriptor) */
    uint32_t kind;         /* SHIPPER_KIND_* */
    const char *name;      /* NUL-terminated UTF-8, static */
    const char *version;   /* NUL-terminated UTF-8, static */
    /* config: the component's TOML table less type, plugin and inputs, as
     * a JSON object. NULL (and error->set) when it cannot. */
    void *(*create)(shipper_slice config, const shipper_error *error);
    void (*destroy)(void *instance);
    /* Transforms only (else NULL). */
    int32_t (*transform)(void *instance, const shipper_record *record,
                         uint32_t *action, shipper_slice *replacement,
                         const shipper_error *error);
    /* Sinks only (else NULL). */
    int32_t (*sink_open)(void *instance, const shipper_sink_context *context,
                         const shipper_error *error);
    /* SHIPPER_OK acknowledges the records: the backend holds them durably. */
    int32_t (*sink_deliver)(void *instance, const shipper_record *records,
                            size_t count, const shipper_error *error);
    int32_t (*sink_close)(void *instance, const shipper_error *error);
    /* Sources only (else NULL). */
    int32_t (*source_run)(void *instance, const shipper_source_host *host,
                          const shipper_error *error);
} shipper_plugin_descriptor;

/* The symbol every plugin exports. */
const shipper_plugin_descriptor *shipper_plugin_entry(void);

/* Fails a call with message (NUL-terminated) and status. */
static inline int32_t shipper_fail(const shipper_error *error, int32_t status,
                                   const char *message) {
    size_t len = 0;
    while (message[len] != '\0') {
        len++;
    }
    if (error != NULL && error->set != NULL) {
        error->set(error->host, (const uint8_t *)message, len);
    }
    return status;
}

#ifdef __cplusplus
}
#endif

#endif /* SHIPPER_PLUGIN_H */
