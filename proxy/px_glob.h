/*
 * px_glob: Redis' glob-style pattern matching (KEYS, CONFIG GET), for
 * HOTPROXY CACHE KEYS and HOTPROXY CONFIG GET.
 */
#ifndef PX_GLOB_H
#define PX_GLOB_H

#include <stddef.h>

/* 1 if s matches pattern p: * ? [abc] [^a-z] [a-z] and backslash escapes. */
int px_glob_match(const char *p, size_t pl, const char *s, size_t sl);

#endif
