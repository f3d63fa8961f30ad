/*
 * shipper.h — shipper's embedded, write-only ingest API for C (and anything
 * that calls C: Python ctypes, Go cgo, ...). Link with -lshipper
 * (libshipper.so from `cargo build -p shipper-ffi`).
 *
 * An ingestor stores inserted records in its own log on local disk and its
 * sinks ship them to the backend; records leave the disk once the backend
 * acknowledged them. There is no call to read, query, update or delete a
 * record: the log is a buffer on the way to a backend, not a database.
 *
 * Threads: every function may be called from any thread, concurrently,
 * on the same ingestor, except shipper_close, after which the handle is
 * gone.
 *
 * Ownership: shipper_open gives the caller a handle that shipper_close
 * takes back (and frees). Every pointer argument is borrowed for the call
 * only: shipper copies what it keeps. shipper_last_error returns a string
 * owned by shipper (per thread), valid until the next shipper call on that
 * thread; do not free it.
 *
 * Errors: every function returns SHIPPER_OK (0) or an error code;
 * shipper_last_error() then says why, in one line.
 */
#ifndef SHIPPER_H
#define SHIPPER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header's API; shipper_abi_version() returns the
 * library's. */
#define SHIPPER_ABI_VERSION 1

typedef struct shipper_ingestor shipper_ingestor;

typedef enum shipper_status {
    SHIPPER_OK = 0,
    /* An argument is NULL, not UTF-8 where text is expected, or out of range. */
    SHIPPER_ERR_ARGUMENT = 1,
    /* The config is invalid, or the data directory cannot be opened. */
    SHIPPER_ERR_CONFIG = 2,
    /* The log is at its disk budget and the ingestor refuses instead of
     * blocking (refuse_when_full). */
    SHIPPER_ERR_FULL = 3,
    /* The record is larger than a chunk may hold, or the disk failed. */
    SHIPPER_ERR_STORAGE = 4,
    /* shipper_wait_for_upload: the timeout passed first; the records stay
     * on disk and upload when the backend is back. */
    SHIPPER_ERR_TIMEOUT = 5,
    /* A bug inside shipper (a caught panic); the message says where. */
    SHIPPER_ERR_INTERNAL = 6,
} shipper_status;

/* The library's SHIPPER_ABI_VERSION. */
uint32_t shipper_abi_version(void);

/* Opens an ingestor from a config file's text (docs/config.md): data_dir,
 * [log], one source of type = "sdk", transforms and sinks. On success
 * *out holds the handle. */
shipper_status shipper_open(const char *config_toml, shipper_ingestor **out);

/* Stores one record (len bytes, usually one JSON object) in `stream` (a
 * NUL-terminated name). Returns without waiting for the disk; blocks only
 * when the log is at its disk budget (unless configured to refuse). */
shipper_status shipper_insert(shipper_ingestor *ingestor, const char *stream,
                              const uint8_t *record, size_t len);

/* Waits until every record inserted before the call is durable on disk. */
shipper_status shipper_flush(shipper_ingestor *ingestor);

/* Waits until every record inserted before the call is acknowledged by
 * every sink's backend, or timeout_ms passed (SHIPPER_ERR_TIMEOUT). */
shipper_status shipper_wait_for_upload(shipper_ingestor *ingestor, uint64_t timeout_ms);

/* Stores what is open, lets the sinks deliver for up to the config's
 * shutdown_timeout_ms, closes the log and frees the handle (also when it
 * returns an error). What was not acknowledged stays on disk for the next
 * shipper_open of the same data directory. NULL is accepted. */
shipper_status shipper_close(shipper_ingestor *ingestor);

/* Why the last call on this thread failed ("" if it did not). */
const char *shipper_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* SHIPPER_H */
