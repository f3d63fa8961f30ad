/*
 * Test fixture for the host's refusal tests: a transform plugin that works
 * (it keeps every record) but whose descriptor claims ABI version 999. The
 * host must refuse it after reading abi_version, without reading or calling
 * anything else.
 *
 * cc -std=c99 -Wall -Wextra -Werror -pedantic -fPIC -shared \
 *    -I plugins/sdk/include -o libwrong_abi.so tests/plugins/c/wrong_abi.c
 */
#include "shipper_plugin.h"

#include <stdlib.h>

static void *keep_create(shipper_slice config, const shipper_error *error) {
    void *instance = malloc(1);
    (void)config;
    if (instance == NULL) {
        shipper_fail(error, SHIPPER_FATAL, "wrong-abi: out of memory");
    }
    return instance;
}

static void keep_destroy(void *instance) {
    free(instance);
}

static int32_t keep_transform(void *instance, const shipper_record *record, uint32_t *action,
                              shipper_slice *replacement, const shipper_error *error) {
    (void)instance;
    (void)record;
    (void)replacement;
    (void)error;
    *action = SHIPPER_KEEP;
    return SHIPPER_OK;
}

static const shipper_plugin_descriptor descriptor = {
    .abi_version = 999u, /* not SHIPPER_PLUGIN_ABI_VERSION, on purpose */
    .size = (uint32_t)sizeof(shipper_plugin_descriptor),
    .kind = SHIPPER_KIND_TRANSFORM,
    .name = "wrong-abi",
    .version = "0.0.1",
    .create = keep_create,
    .destroy = keep_destroy,
    .transform = keep_transform,
    .sink_open = NULL,
    .sink_deliver = NULL,
    .sink_close = NULL,
    .source_run = NULL,
};

const shipper_plugin_descriptor *shipper_plugin_entry(void) {
    return &descriptor;
}
