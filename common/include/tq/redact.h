/*
 * Secrets a process knows, masked out of text before it is stored or
 * printed: log lines, step outputs, step errors (and through them attempt
 * rows, audit events and failure reasons). Each occurrence of a known value
 * is overwritten in place with '*' of the same length.
 *
 * Known values: those of the environment that configure secrets (names
 * containing SECRET, TOKEN, PASSWORD or PASSWD, or ending in _KEY), the
 * password of every URL or libpq conninfo in the environment
 * (scheme://user:PASSWORD@host, password=...), read once on first use; and
 * values added at run time (a generated password, for as long as its step
 * runs). Values shorter than TQ_REDACT_MIN bytes are not tracked (they
 * would mask ordinary words). Thread-safe.
 */
#ifndef TQ_REDACT_H
#define TQ_REDACT_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#define TQ_REDACT_MIN 6

/* Track secret (copied) until the matching tq_redact_remove. */
void tq_redact_add(const char *secret);
void tq_redact_remove(const char *secret);

/* Mask every known secret in buf (NUL-terminated, changed in place); true if any was found. */
bool tq_redact(char *buf);
/* The same for buf[0..len), which may hold NUL bytes. */
bool tq_redact_n(char *buf, size_t len);

/* The same for every string inside v (object values and array items, recursively). */
void tq_redact_json(json_t *v);

/* Forget everything, the environment's values included (tests; at exit for leak checks). */
void tq_redact_reset(void);

#endif
