/*
 * Can this database serve a worker right now? One round trip, for the
 * worker's heartbeat (so /readyz and tq_dependency_up reflect the last real
 * answer) and for anyone who must tell "unreachable" from "refuses".
 */
#ifndef TQ_PROBE_H
#define TQ_PROBE_H

#include <stddef.h>

#include "tq/err.h"

struct tq_pg;

/* The schema version this build migrates to (the number of migrations). */
int tq_pg_schema_target(void);

/*
 * Read whether the session is read-only or on a standby and the schema's
 * version. TQ_OK with problem "" when the database can serve us, TQ_OK with
 * problem set when it answers but cannot (read-only, not migrated, newer
 * schema), another code when the round trip failed (tq_pg_errstr).
 */
enum tq_err tq_pg_probe(struct tq_pg *pg, char *problem, size_t len);

#endif
