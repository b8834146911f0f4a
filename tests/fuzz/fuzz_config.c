/*
 * fuzz_config: libFuzzer target for the configuration parser (px_config).
 *
 * The input up to its first NUL byte is a config text for
 * px_config_load_string; what follows, split at NUL bytes, is a command
 * line for px_config_from_args.  Whatever they hold, nothing may crash or
 * leak (LeakSanitizer runs at the end of every input), an error must come
 * with its text, and the introspection the server does on a loaded config
 * (px_config_get, reload, policy and user look-ups) must work on whatever
 * was accepted.  A command line whose first word is not a --directive would
 * be a file name to read; those are left out: this target reads no files.
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"
#include "proxy/px_config.h"

static void exercise(px_config *c, const char *key)
{
    char value[512];
    const char *name;
    for (int i = 0; px_config_get(c, i, &name, value, sizeof(value)); i++)
        if (!name || memchr(value, '\0', sizeof(value)) == NULL) fz_fail("px_config_get %d: no name or no NUL", i);
    px_policy pol;
    px_config_policy(c, key, strlen(key), &pol);
    px_config_policy(c, "", 0, &pol);
    (void)px_config_auth_required(c);
    const px_user *u = px_config_user(c, "default", 7);
    if (u) (void)px_config_user_check(u, key, strlen(key));
    for (int i = 0; i < c->nusers; i++) {
        u = px_config_user(c, c->users[i].name, strlen(c->users[i].name));
        if (!u) fz_fail("user '%s' was loaded but is not found", c->users[i].name);
        (void)px_config_user_check(u, key, strlen(key));
    }
    (void)px_config_refused(c, "shutdown");
    (void)px_config_refused(c, "config|set");
    (void)px_config_refused(c, key);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384) return 0;
    /* one NUL-terminated copy: the text, then the command-line words */
    char *all = malloc(size + 1);
    if (!all) abort();
    memcpy(all, data, size);
    all[size] = '\0';
    const char *text = all;
    size_t tlen = strlen(text);

    char err[512];
    px_config live, fresh;
    px_config_init(&live);
    err[0] = '\0';
    int rc = px_config_load_string(&live, text, "fuzz.conf", err, sizeof(err));
    if (rc != 0 && (rc != -1 || !err[0])) fz_fail("px_config_load_string: rc %d, error '%s'", rc, err);
    exercise(&live, text);

    /* the same text again as a reload, against the defaults */
    char restart[256];
    px_config_init(&fresh);
    if (px_config_load_string(&fresh, text, "fuzz.conf", err, sizeof(err)) == 0) {
        px_config def;
        px_config_init(&def);
        (void)px_config_reload(&def, &fresh, restart, sizeof(restart));
        exercise(&def, text);
        exercise(&fresh, text);
        px_config_free(&def);
    }
    px_config_free(&fresh);
    px_config_free(&live);

    long long mem;
    (void)px_config_memtoll(text, &mem);

    /* the command line: "hotproxy" then the NUL-separated words after the text */
    if (tlen < size) {
        char *argv[66];
        int argc = 0;
        argv[argc++] = (char *)"hotproxy";
        for (size_t i = tlen + 1; i <= size && argc < 65; i += strlen(all + i) + 1) argv[argc++] = all + i;
        argv[argc] = NULL;
        int is_file = argc >= 2 && strncmp(argv[1], "--", 2) != 0 && strcmp(argv[1], "-h") != 0 &&
                      strcmp(argv[1], "-v") != 0;
        if (!is_file) {
            char out[2048];
            px_config_init(&live);
            err[0] = '\0';
            rc = px_config_from_args(&live, argc, argv, out, sizeof(out), err, sizeof(err));
            if (rc == -1 && !err[0]) fz_fail("px_config_from_args: -1 with no error text");
            if (rc == 0) exercise(&live, argv[argc - 1]);
            px_config_free(&live);
        }
    }
    free(all);
    return 0;
}
