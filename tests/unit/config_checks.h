/*
 * config_checks.h: assertions about px_config shared by the unit tests that
 * load configurations (test_config, test_policy).  Header-only, like tap.h.
 */
#ifndef HP_CONFIG_CHECKS_H
#define HP_CONFIG_CHECKS_H

#include <string.h>

#include "proxy/px_config.h"
#include "tap.h"

/*
 * text is rejected, and the error starts with exactly want_prefix (the
 * "source:line: 'line': " part) followed by a reason containing want_reason.
 */
static inline void load_err(const char *text, const char *want_prefix, const char *want_reason, const char *what)
{
    px_config c;
    char err[512] = "";
    px_config_init(&c);
    int rc = px_config_load_string(&c, text, "t.conf", err, sizeof(err));
    is_int(rc, -1, "%s: rejected", what);
    size_t pl = strlen(want_prefix);
    int good = strncmp(err, want_prefix, pl) == 0 && strstr(err + (strlen(err) >= pl ? pl : 0), want_reason) != NULL;
    if (!ok(good, "%s: error '%s...%s...'", what, want_prefix, want_reason)) diag("  got '%s'", err);
    px_config_free(&c);
}

#endif
