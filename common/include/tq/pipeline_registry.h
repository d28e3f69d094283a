/*
 * Operator-owned named pipelines (tq.pipeline_names). A submit names one of
 * them (or takes the fleet's default) and can never bring its own steps:
 * only `tq-enqueue pipeline register` writes the registry, each time with a
 * "pipeline_registered" audit event. The bytes live in tq.pipelines under
 * their SHA-256, as every job's pipeline does, so re-registering a name
 * changes what new jobs run and never what a running or finished job ran.
 *
 * Names: 1-63 of [a-z0-9._-], starting with a letter or digit.
 */
#ifndef TQ_PIPELINE_REGISTRY_H
#define TQ_PIPELINE_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "tq/err.h"
#include "tq/pg.h"
#include "tq/pipeline.h"

#define TQ_PIPELINE_NAME_MAX 63

/* true if name is a valid pipeline name; otherwise why says which rule it breaks. */
bool tq_pipeline_name_valid(const char *name, char *why, size_t whylen);

/*
 * Register pl (validated by the caller's tq_pipeline_parse/load) under name,
 * in one transaction with its audit event (actor, detail {name, hash,
 * previous_hash, default}). make_default moves the fleet's default to it;
 * the first pipeline registered becomes the default anyway. *is_default
 * (may be NULL) says whether it is the default afterwards.
 */
enum tq_err tq_pipeline_register(struct tq_pg *pg, const char *name, const struct tq_pipeline *pl,
                                 bool make_default, const char *actor, bool *is_default);

/*
 * Load the pipeline registered as name (NULL or "": the fleet's default).
 * TQ_ENOTFOUND with tq_pg_errstr saying what to do when there is none.
 * *out owned by the caller (tq_pipeline_free).
 */
enum tq_err tq_pipeline_named(struct tq_pg *pg, const char *name, struct tq_pipeline **out);

/* [{name, hash, default, steps, registered_at, registered_by}] by name; caller decrefs. */
enum tq_err tq_pipeline_list(struct tq_pg *pg, json_t **out);

#endif
