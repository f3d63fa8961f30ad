/*
 * Test fixture for the host's refusal tests: a valid shared library that
 * exports a function, but not shipper_plugin_entry. The host must refuse it
 * as "not a shipper plugin" rather than crash.
 *
 * cc -std=c99 -Wall -Wextra -Werror -pedantic -fPIC -shared \
 *    -o libno_entry.so tests/plugins/c/no_entry.c
 */

/* A near miss of the entry symbol's name, to make the point. */
const char *shipper_plugin_entry_point(void);

const char *shipper_plugin_entry_point(void) {
    return "this library is not a shipper plugin";
}
