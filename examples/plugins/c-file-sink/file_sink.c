/*
 * c-file-sink — a shipper sink plugin in plain C99, against shipper_plugin.h
 * only (and libc/POSIX). It appends each record to a file as one line
 *
 *     OFFSET <TAB> STREAM <TAB> PAYLOAD <LF>
 *
 * and acknowledges a delivery only after write(2) and fsync(2) succeeded.
 *
 * Exactly once across restarts: sink_open finds the offset of the last
 * complete line (a torn last line, left by a crash mid-write, is cut off
 * first) and deliver skips every record at or below it. The file is the
 * only state; one sink per file.
 *
 * Config (a JSON object): {"path": "FILE"} — nothing else.
 *
 * Build: cc -std=c99 -O2 -Wall -Wextra -fPIC -shared \
 *          -I plugins/sdk/include -o libfile_sink.so \
 *          examples/plugins/c-file-sink/file_sink.c
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64
#endif

#include "shipper_plugin.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define SINK_NAME "c-file-sink"

typedef struct file_sink {
    char *path;        /* from the config, NUL-terminated */
    int fd;            /* -1 until sink_open */
    off_t good_size;   /* the file's length holding only acknowledged, synced lines */
    int dirty;         /* a failed write may have left bytes past good_size */
    int have_mark;     /* high_water is meaningful (the file holds a record) */
    uint64_t high_water; /* largest offset in the file */
    char *buf;         /* the batch being written, reused */
    size_t cap;
} file_sink;

/* ---- error reporting -------------------------------------------------- */

/* Reports a formatted message (prefixed with the plugin's name) and
 * returns status. */
static int32_t fail(const shipper_error *error, int32_t status, const char *format, ...) {
    char message[1024];
    int n = snprintf(message, sizeof message, "%s: ", SINK_NAME);
    va_list args;
    va_start(args, format);
    if (n > 0 && (size_t)n < sizeof message) {
        vsnprintf(message + n, sizeof message - (size_t)n, format, args);
    }
    va_end(args);
    return shipper_fail(error, status, message);
}

/* strerror, thread-safely (calls on different instances may run at once). */
static const char *describe(int errnum, char *buf, size_t len) {
    if (strerror_r(errnum, buf, len) != 0) {
        snprintf(buf, len, "error %d", errnum);
    }
    return buf;
}

static int32_t fail_errno(const shipper_error *error, int32_t status, const char *what,
                          const char *path, int errnum) {
    char text[256];
    return fail(error, status, "%s \"%s\": %s", what, path, describe(errnum, text, sizeof text));
}

/* ---- config: a minimal, strict JSON object scanner -------------------- */

typedef struct scanner {
    const uint8_t *p;
    const uint8_t *end;
} scanner;

static void skip_ws(scanner *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) {
        s->p++;
    }
}

/* Reads a JSON string at s->p (which is at its opening quote) into a new
 * NUL-terminated buffer (*out, *out_len). Supports the escapes \" \\ \/ \n
 * \t; anything else is refused. Returns 0, or -1 after reporting. */
static int scan_string(scanner *s, char **out, size_t *out_len, const shipper_error *error) {
    const uint8_t *start;
    char *text;
    size_t len = 0;
    s->p++; /* the opening quote */
    start = s->p;
    /* The decoded string is never longer than the raw one. */
    while (s->p < s->end && *s->p != '"') {
        if (*s->p == '\\') {
            s->p++;
            if (s->p == s->end) {
                break;
            }
        }
        s->p++;
    }
    if (s->p == s->end) {
        fail(error, SHIPPER_FATAL, "invalid config: unterminated string");
        return -1;
    }
    text = malloc((size_t)(s->p - start) + 1);
    if (text == NULL) {
        fail(error, SHIPPER_FATAL, "out of memory");
        return -1;
    }
    for (s->p = start; *s->p != '"'; s->p++) {
        uint8_t c = *s->p;
        if (c < 0x20) {
            free(text);
            fail(error, SHIPPER_FATAL, "invalid config: control character in a string");
            return -1;
        }
        if (c == '\\') {
            s->p++;
            switch (*s->p) {
            case '"': c = '"'; break;
            case '\\': c = '\\'; break;
            case '/': c = '/'; break;
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            default:
                free(text);
                fail(error, SHIPPER_FATAL,
                     "invalid config: unsupported escape \\%c in a string "
                     "(only \\\" \\\\ \\/ \\n \\t are)",
                     (*s->p >= 0x20 && *s->p < 0x7f) ? (char)*s->p : '?');
                return -1;
            }
        }
        text[len++] = (char)c;
    }
    s->p++; /* the closing quote */
    text[len] = '\0';
    *out = text;
    *out_len = len;
    return 0;
}

/* Parses {"path": "..."}; returns the path (malloc'd) or NULL after
 * reporting. */
static char *parse_config(shipper_slice config, const shipper_error *error) {
    scanner s;
    char *path = NULL;
    if (config.len == 0 || config.ptr == NULL) {
        fail(error, SHIPPER_FATAL, "invalid config: expected a JSON object with \"path\"");
        return NULL;
    }
    s.p = config.ptr;
    s.end = config.ptr + config.len;
    skip_ws(&s);
    if (s.p == s.end || *s.p != '{') {
        fail(error, SHIPPER_FATAL, "invalid config: expected a JSON object");
        return NULL;
    }
    s.p++;
    skip_ws(&s);
    if (s.p < s.end && *s.p == '}') {
        s.p++;
    } else {
        for (;;) {
            char *key;
            size_t key_len;
            skip_ws(&s);
            if (s.p == s.end || *s.p != '"') {
                fail(error, SHIPPER_FATAL, "invalid config: expected a key");
                goto fail;
            }
            if (scan_string(&s, &key, &key_len, error) != 0) {
                goto fail;
            }
            if (key_len != 4 || memcmp(key, "path", 4) != 0) {
                fail(error, SHIPPER_FATAL,
                     "unknown config key \"%.*s\" (the only key is \"path\")",
                     key_len > 100 ? 100 : (int)key_len, key);
                free(key);
                goto fail;
            }
            free(key);
            if (path != NULL) {
                fail(error, SHIPPER_FATAL, "invalid config: \"path\" given twice");
                goto fail;
            }
            skip_ws(&s);
            if (s.p == s.end || *s.p != ':') {
                fail(error, SHIPPER_FATAL, "invalid config: expected ':' after \"path\"");
                goto fail;
            }
            s.p++;
            skip_ws(&s);
            if (s.p == s.end || *s.p != '"') {
                fail(error, SHIPPER_FATAL, "config: \"path\" must be a string");
                goto fail;
            }
            {
                size_t path_len;
                if (scan_string(&s, &path, &path_len, error) != 0) {
                    goto fail;
                }
                if (path_len == 0) {
                    fail(error, SHIPPER_FATAL, "config: \"path\" is empty");
                    goto fail;
                }
            }
            skip_ws(&s);
            if (s.p < s.end && *s.p == ',') {
                s.p++;
                continue;
            }
            if (s.p < s.end && *s.p == '}') {
                s.p++;
                break;
            }
            fail(error, SHIPPER_FATAL, "invalid config: expected ',' or '}'");
            goto fail;
        }
    }
    skip_ws(&s);
    if (s.p != s.end) {
        fail(error, SHIPPER_FATAL, "invalid config: text after the object");
        goto fail;
    }
    if (path == NULL) {
        fail(error, SHIPPER_FATAL, "config: \"path\" (the file to append to) is required");
        return NULL;
    }
    return path;
fail:
    free(path);
    return NULL;
}

/* ---- file helpers ----------------------------------------------------- */

/* Reads exactly len bytes at offset; -1 with errno on error or early EOF. */
static int pread_full(int fd, uint8_t *buf, size_t len, off_t offset) {
    while (len > 0) {
        ssize_t n = pread(fd, buf, len, offset);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (n == 0) {
            errno = EIO; /* the file shrank under us */
            return -1;
        }
        buf += n;
        len -= (size_t)n;
        offset += n;
    }
    return 0;
}

/* Finds the last '\n' in [0, before): 1 and *found, 0 if none, -1 with
 * errno on error. */
static int find_prev_newline(int fd, off_t before, off_t *found) {
    uint8_t block[4096];
    while (before > 0) {
        off_t start = before > (off_t)sizeof block ? before - (off_t)sizeof block : 0;
        size_t n = (size_t)(before - start);
        size_t i;
        if (pread_full(fd, block, n, start) != 0) {
            return -1;
        }
        for (i = n; i-- > 0;) {
            if (block[i] == '\n') {
                *found = start + (off_t)i;
                return 1;
            }
        }
        before = start;
    }
    return 0;
}

/* Whether the line in [start, end) begins with decimal digits and a TAB:
 * 1 and *offset, 0 if not, -1 with errno on error. */
static int line_offset(int fd, off_t start, off_t end, uint64_t *offset) {
    uint8_t head[24]; /* 20 digits of UINT64_MAX and the TAB fit */
    size_t n = (size_t)(end - start < (off_t)sizeof head ? end - start : (off_t)sizeof head);
    size_t i;
    uint64_t value = 0;
    if (pread_full(fd, head, n, start) != 0) {
        return -1;
    }
    for (i = 0; i < n && head[i] >= '0' && head[i] <= '9'; i++) {
        unsigned digit = (unsigned)(head[i] - '0');
        if (value > (UINT64_MAX - digit) / 10) {
            return 0;
        }
        value = value * 10 + digit;
    }
    if (i == 0 || i == n || head[i] != '\t') {
        return 0;
    }
    *offset = value;
    return 1;
}

static int fsync_retry(int fd) {
    int r;
    do {
        r = fsync(fd);
    } while (r != 0 && errno == EINTR);
    return r;
}

/* Makes the file's directory entry durable (the file may just have been
 * created). Best effort where a directory cannot be opened or synced. */
static int sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir;
    int fd, r = 0;
    if (slash == NULL) {
        dir = malloc(2);
        if (dir != NULL) {
            memcpy(dir, ".", 2);
        }
    } else {
        size_t len = slash == path ? 1 : (size_t)(slash - path);
        dir = malloc(len + 1);
        if (dir != NULL) {
            memcpy(dir, path, len);
            dir[len] = '\0';
        }
    }
    if (dir == NULL) {
        errno = ENOMEM;
        return -1;
    }
    fd = open(dir, O_RDONLY | O_CLOEXEC);
    free(dir);
    if (fd < 0) {
        return 0; /* e.g. a directory without read permission */
    }
    if (fsync_retry(fd) != 0 && errno != EINVAL && errno != EROFS && errno != EBADF) {
        r = -1;
    }
    {
        int saved = errno;
        close(fd);
        errno = saved;
    }
    return r;
}

/* Cuts the file back to good_size after a failed write, so that no torn
 * or unsynced bytes stay in front of the next write. */
static int roll_back(file_sink *sink) {
    if (ftruncate(sink->fd, sink->good_size) != 0 || fsync_retry(sink->fd) != 0) {
        sink->dirty = 1;
        return -1;
    }
    sink->dirty = 0;
    return 0;
}

/* ---- the plugin functions --------------------------------------------- */

static void *sink_create(shipper_slice config, const shipper_error *error) {
    file_sink *sink;
    char *path = parse_config(config, error);
    if (path == NULL) {
        return NULL;
    }
    sink = calloc(1, sizeof *sink);
    if (sink == NULL) {
        free(path);
        fail(error, SHIPPER_FATAL, "out of memory");
        return NULL;
    }
    sink->path = path;
    sink->fd = -1;
    return sink;
}

static void sink_destroy(void *instance) {
    file_sink *sink = instance;
    if (sink == NULL) {
        return;
    }
    if (sink->fd >= 0) {
        close(sink->fd);
    }
    free(sink->path);
    free(sink->buf);
    free(sink);
}

/* Errors that will not get better by retrying: the component stops. */
static int32_t open_status(int errnum) {
    switch (errnum) {
    case EACCES:
    case EPERM:
    case EISDIR:
    case ENOTDIR:
    case ENOENT:
    case ENAMETOOLONG:
    case ELOOP:
    case EROFS:
        return SHIPPER_FATAL;
    default:
        return SHIPPER_RETRY;
    }
}

/* sink_open's work; on failure the caller closes the file. */
static int32_t open_file(file_sink *sink, const shipper_error *error) {
    struct stat st;
    off_t newline = 0, good_end = 0;
    int found;

    sink->fd = open(sink->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (sink->fd < 0) {
        int errnum = errno;
        return fail_errno(error, open_status(errnum), "cannot open", sink->path, errnum);
    }
    if (fstat(sink->fd, &st) != 0) {
        return fail_errno(error, SHIPPER_RETRY, "cannot stat", sink->path, errno);
    }
    if (!S_ISREG(st.st_mode)) {
        return fail(error, SHIPPER_FATAL, "\"%s\" is not a regular file", sink->path);
    }

    /* The end of the last complete line; anything after it is torn. */
    found = find_prev_newline(sink->fd, st.st_size, &newline);
    if (found < 0) {
        return fail_errno(error, SHIPPER_RETRY, "cannot read", sink->path, errno);
    }
    good_end = found ? newline + 1 : 0;
    if (good_end < st.st_size && ftruncate(sink->fd, good_end) != 0) {
        return fail_errno(error, SHIPPER_RETRY, "cannot cut the torn last line of", sink->path,
                          errno);
    }
    /* Also makes durable what a previous process wrote but did not sync,
     * before the high-water mark below counts it as delivered. */
    if (fsync_retry(sink->fd) != 0) {
        return fail_errno(error, SHIPPER_RETRY, "cannot fsync", sink->path, errno);
    }
    if (sync_parent_dir(sink->path) != 0) {
        return fail_errno(error, SHIPPER_RETRY, "cannot fsync the directory of", sink->path,
                          errno);
    }
    sink->good_size = good_end;
    sink->dirty = 0;

    /* The high-water mark: the offset of the last line that has one
     * (lines are appended in offset order, so it is also the largest). */
    sink->have_mark = 0;
    sink->high_water = 0;
    while (found == 1) {
        off_t line_end = newline, previous = 0;
        int more = find_prev_newline(sink->fd, line_end, &previous);
        int parsed;
        if (more < 0) {
            return fail_errno(error, SHIPPER_RETRY, "cannot read", sink->path, errno);
        }
        parsed = line_offset(sink->fd, more ? previous + 1 : 0, line_end, &sink->high_water);
        if (parsed < 0) {
            return fail_errno(error, SHIPPER_RETRY, "cannot read", sink->path, errno);
        }
        if (parsed == 1) {
            sink->have_mark = 1;
            break;
        }
        found = more;
        newline = previous;
    }
    return SHIPPER_OK;
}

static int32_t sink_open(void *instance, const shipper_sink_context *context,
                         const shipper_error *error) {
    file_sink *sink = instance;
    int32_t status;
    (void)context; /* the file itself says what it holds */
    if (sink->fd >= 0) { /* opened again: start over from the file */
        close(sink->fd);
        sink->fd = -1;
    }
    status = open_file(sink, error);
    if (status != SHIPPER_OK && sink->fd >= 0) {
        close(sink->fd);
        sink->fd = -1;
    }
    return status;
}

/* Appends len bytes to the buffer (which has room). */
static size_t put(char *buf, size_t at, const uint8_t *bytes, size_t len) {
    if (len > 0) {
        memcpy(buf + at, bytes, len);
    }
    return at + len;
}

static int32_t sink_deliver(void *instance, const shipper_record *records, size_t count,
                            const shipper_error *error) {
    file_sink *sink = instance;
    size_t need = 0, used = 0, done = 0, i;
    uint64_t mark = sink->high_water;
    int have_mark = sink->have_mark;

    if (sink->fd < 0) {
        return fail(error, SHIPPER_FATAL, "sink_deliver called before sink_open");
    }
    if (sink->dirty && roll_back(sink) != 0) {
        return fail_errno(error, SHIPPER_RETRY, "cannot cut back a failed write to", sink->path,
                          errno);
    }

    /* Size the batch: at most 20 digits, two TABs and a newline a record. */
    for (i = 0; i < count; i++) {
        size_t line;
        if (sink->have_mark && records[i].offset <= sink->high_water) {
            continue;
        }
        line = 23 + records[i].stream.len;
        if (line < records[i].stream.len || need + line < need ||
            need + line + records[i].payload.len < need + line) {
            return fail(error, SHIPPER_FATAL, "a batch too large to hold in memory");
        }
        need += line + records[i].payload.len;
    }
    if (need == 0) {
        return SHIPPER_OK; /* everything is in the file already */
    }
    if (need > sink->cap) {
        char *bigger = realloc(sink->buf, need);
        if (bigger == NULL) {
            return fail(error, SHIPPER_RETRY, "out of memory for a batch of %lu bytes",
                        (unsigned long)need);
        }
        sink->buf = bigger;
        sink->cap = need;
    }
    for (i = 0; i < count; i++) {
        const shipper_record *r = &records[i];
        int n;
        if (sink->have_mark && r->offset <= sink->high_water) {
            continue;
        }
        n = snprintf(sink->buf + used, 22, "%" PRIu64 "\t", r->offset);
        used += (size_t)n;
        used = put(sink->buf, used, r->stream.ptr, r->stream.len);
        sink->buf[used++] = '\t';
        used = put(sink->buf, used, r->payload.ptr, r->payload.len);
        sink->buf[used++] = '\n';
        if (!have_mark || r->offset > mark) {
            mark = r->offset;
        }
        have_mark = 1;
    }

    while (done < used) {
        ssize_t n = write(sink->fd, sink->buf + done, used - done);
        if (n < 0) {
            int errnum = errno;
            if (errnum == EINTR) {
                continue;
            }
            roll_back(sink);
            return fail_errno(error, SHIPPER_RETRY, "cannot write to", sink->path, errnum);
        }
        if (n == 0) {
            roll_back(sink);
            return fail(error, SHIPPER_RETRY, "cannot write to \"%s\": no progress", sink->path);
        }
        done += (size_t)n;
    }
    if (fsync_retry(sink->fd) != 0) {
        /* After a failed fsync the written pages may be lost whatever a
         * later fsync says: cut them off and write them again. */
        int errnum = errno;
        roll_back(sink);
        return fail_errno(error, SHIPPER_RETRY, "cannot fsync", sink->path, errnum);
    }
    sink->good_size += (off_t)used;
    sink->high_water = mark;
    sink->have_mark = have_mark;
    return SHIPPER_OK; /* the acknowledgement */
}

static int32_t sink_close(void *instance, const shipper_error *error) {
    file_sink *sink = instance;
    (void)error;
    if (sink->fd >= 0) {
        close(sink->fd); /* every acknowledged line was synced already */
        sink->fd = -1;
    }
    return SHIPPER_OK;
}

static const shipper_plugin_descriptor descriptor = {
    .abi_version = SHIPPER_PLUGIN_ABI_VERSION,
    .size = (uint32_t)sizeof(shipper_plugin_descriptor),
    .kind = SHIPPER_KIND_SINK,
    .name = SINK_NAME,
    .version = "1.0.0",
    .create = sink_create,
    .destroy = sink_destroy,
    .transform = NULL,
    .sink_open = sink_open,
    .sink_deliver = sink_deliver,
    .sink_close = sink_close,
    .source_run = NULL,
};

const shipper_plugin_descriptor *shipper_plugin_entry(void) {
    return &descriptor;
}
