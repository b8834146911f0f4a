/*
 * test_cluster: Redis Cluster's hash slot of a key (px_cluster_keyslot),
 * against what Redis 7.0.15's CLUSTER KEYSLOT answers for the same keys:
 * the CRC16 check value, hash tags, and the tag rules' corner cases (an
 * empty tag, a '{' with no '}', the first tag only).
 */
#include "proxy/px_cluster.h"

#include <string.h>

#include "tap.h"

static void slot(const char *key, unsigned want, const char *what)
{
    is_int((int)px_cluster_keyslot(key, strlen(key)), (int)want, "%s: '%s' -> %u", what, key, want);
}

int main(void)
{
    slot("123456789", 12739, "CRC16/XMODEM check value (0x31C3) mod 16384");
    slot("", 0, "the empty key");
    slot("{user1000}.following", 3443, "a hash tag");
    slot("{user1000}.followers", 3443, "... the same tag, the same slot");
    slot("bar", 5061, "a plain key");
    slot("foo{bar}{zap}", 5061, "only the first tag counts (bar)");
    slot("foo{}{bar}", 8363, "an empty first tag: the whole key");
    slot("{}", 15257, "the empty tag alone: the whole key");
    slot("foo{{bar}}zap", 4015, "the tag runs from the first '{' to the next '}' ('{bar')");
    slot("a{b", 13340, "a '{' with no '}': the whole key");
    slot("{{bar", 16086, "'{' twice and no '}': the whole key");
    is_int((int)px_cluster_keyslot("k\0x", 3), 5125, "a key holding a NUL is hashed by its length, NUL included");
    is_int((int)px_cluster_keyslot("k\0{x}", 5), 16287, "... and its tag found past the NUL (as 'x')");
    done_testing();
    return exit_status();
}
