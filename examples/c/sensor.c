/*
 * A sensor in plain C that ships its readings through libshipper: four
 * threads insert JSON readings concurrently, then it waits until the
 * backend acknowledged all of them and closes.
 *
 *   cc -o sensor examples/c/sensor.c -I shipper/ffi/include \
 *      -L target/debug -lshipper -Wl,-rpath,target/debug -lpthread
 *   ./sensor config.toml 100000
 *
 * config.toml holds data_dir, one source of type = "sdk" and the sinks
 * (docs/config.md). Exits 0 when every reading was acknowledged.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shipper.h"

#define THREADS 4

struct job {
    shipper_ingestor *ingestor;
    long first, count;
    int failed;
};

static void *insert_readings(void *arg) {
    struct job *job = arg;
    char record[256];
    for (long seq = job->first; seq < job->first + job->count; seq++) {
        int len = snprintf(record, sizeof record,
                           "{\"seq\":%ld,\"station\":\"c-sensor\",\"celsius\":%.1f}",
                           seq, 15.0 + (double)(seq % 100) / 10.0);
        shipper_status status =
            shipper_insert(job->ingestor, "weather", (const uint8_t *)record, (size_t)len);
        if (status != SHIPPER_OK) {
            fprintf(stderr, "insert %ld: %d: %s\n", seq, status, shipper_last_error());
            job->failed = 1;
            return NULL;
        }
    }
    return NULL;
}

static char *read_file(const char *path) {
    FILE *file = fopen(path, "rb");
    if (!file) return NULL;
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    if (text && fread(text, 1, (size_t)size, file) != (size_t)size) {
        free(text);
        text = NULL;
    }
    if (text) text[size] = '\0';
    fclose(file);
    return text;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CONFIG.toml READINGS\n", argv[0]);
        return 2;
    }
    if (shipper_abi_version() != SHIPPER_ABI_VERSION) {
        fprintf(stderr, "libshipper speaks ABI %u, this program %d\n", shipper_abi_version(),
                SHIPPER_ABI_VERSION);
        return 2;
    }
    char *config = read_file(argv[1]);
    if (!config) {
        perror(argv[1]);
        return 2;
    }
    long readings = atol(argv[2]);
    shipper_ingestor *ingestor = NULL;
    if (shipper_open(config, &ingestor) != SHIPPER_OK) {
        fprintf(stderr, "open: %s\n", shipper_last_error());
        free(config);
        return 1;
    }
    free(config);

    /* Bad arguments get an error code and a message, and nothing else. */
    if (shipper_insert(ingestor, NULL, (const uint8_t *)"{}", 2) != SHIPPER_ERR_ARGUMENT ||
        strstr(shipper_last_error(), "stream is NULL") == NULL) {
        fprintf(stderr, "a NULL stream was not refused\n");
        return 1;
    }

    pthread_t threads[THREADS];
    struct job jobs[THREADS];
    long each = readings / THREADS;
    for (int t = 0; t < THREADS; t++) {
        jobs[t] = (struct job){ingestor, t * each, t == THREADS - 1 ? readings - t * each : each, 0};
        pthread_create(&threads[t], NULL, insert_readings, &jobs[t]);
    }
    int failed = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        failed |= jobs[t].failed;
    }
    if (failed) return 1;
    if (shipper_flush(ingestor) != SHIPPER_OK) {
        fprintf(stderr, "flush: %s\n", shipper_last_error());
        return 1;
    }
    shipper_status uploaded = shipper_wait_for_upload(ingestor, 60000);
    if (uploaded != SHIPPER_OK) {
        fprintf(stderr, "wait for upload: %s\n", shipper_last_error());
        return 1;
    }
    if (shipper_close(ingestor) != SHIPPER_OK) {
        fprintf(stderr, "close: %s\n", shipper_last_error());
        return 1;
    }
    printf("%ld readings inserted from %d threads and acknowledged\n", readings, THREADS);
    return 0;
}
