/*
 * px_glob: see px_glob.h.
 */
#include "proxy/px_glob.h"

/* Redis' glob: * ? [abc] [^a-z] and \ escapes. */
int px_glob_match(const char *p, size_t pl, const char *s, size_t sl)
{
    while (pl) {
        switch (*p) {
        case '*':
            while (pl > 1 && p[1] == '*') p++, pl--;
            if (pl == 1) return 1;
            for (size_t i = 0; i <= sl; i++)
                if (px_glob_match(p + 1, pl - 1, s + i, sl - i)) return 1;
            return 0;
        case '?':
            if (!sl) return 0;
            s++, sl--;
            break;
        case '[': {
            if (!sl) return 0;
            p++, pl--;
            int neg = pl && *p == '^', match = 0;
            if (neg) p++, pl--;
            while (pl && *p != ']') {
                if (*p == '\\' && pl >= 2) {
                    p++, pl--;
                    match |= *p == *s;
                } else if (pl >= 3 && p[1] == '-') {
                    char lo = p[0], hi = p[2];
                    if (lo > hi) { char t = lo; lo = hi; hi = t; }
                    match |= *s >= lo && *s <= hi;
                    p += 2, pl -= 2;
                } else {
                    match |= *p == *s;
                }
                p++, pl--;
            }
            if (neg) match = !match;
            if (!match) return 0;
            s++, sl--;
            break;
        }
        case '\\':
            if (pl >= 2) p++, pl--;
            /* fall through */
        default:
            if (!sl || *p != *s) return 0;
            s++, sl--;
            break;
        }
        if (!pl) break;
        p++, pl--;
    }
    return sl == 0;
}

