/*
 * The region map (TQ_REGIONS_FILE): for each region a tenant may ask for,
 * where its resources are created. One JSON object, region name -> entry:
 *
 *   {"eu-west-1": {"s3_region": "eu-west-1", "s3_endpoint": "https://...",
 *                  "vector_url": "https://...", "dashboard_url": "https://...",
 *                  "pg_url": null}, ...}
 *
 * s3_region is required (a region name); s3_endpoint is required but may be
 * null (no object storage in that region); vector_url, dashboard_url and
 * pg_url are optional (absent or null: no such service there). URLs are
 * http(s) without credentials: secrets stay in the environment. Unknown
 * fields are refused, so a typo never silently drops a service.
 *
 * The map is the allow-list of regions at submit, and the only source of
 * the ${region.*} template variables the worker renders: nothing falls
 * back to a fleet-wide default. Immutable once loaded; any thread may read.
 */
#ifndef TQ_REGIONS_H
#define TQ_REGIONS_H

#include <stddef.h>

#include "tq/err.h"

#define TQ_REGIONS_MAX 16

struct tq_region {
    char *name;            /* the map's key, what a request's region names */
    char *s3_region;
    char *s3_endpoint;     /* NULL: none in this region */
    char *vector_url;      /* NULL: none */
    char *dashboard_url;   /* NULL: none */
    char *pg_url;          /* NULL: none (libpq conninfo or URI) */
};

struct tq_regions {
    struct tq_region *v;   /* sorted by name */
    size_t n;
    char *source;          /* the file it came from, for messages */
};

/*
 * Parse text (source names it in messages). On TQ_EINVALID errbuf names the
 * source, the region and the field, and the rule broken; *out is NULL.
 * On TQ_OK *out is owned by the caller (tq_regions_free).
 */
enum tq_err tq_regions_parse(const char *text, const char *source, struct tq_regions **out,
                             char *errbuf, size_t errlen);
/* Read and parse the file at path (TQ_EINVALID also when unreadable). */
enum tq_err tq_regions_load(const char *path, struct tq_regions **out, char *errbuf,
                            size_t errlen);
void tq_regions_free(struct tq_regions *m);   /* accepts NULL */

/* The entry of region name, or NULL (also when m is NULL). Borrowed from m. */
const struct tq_region *tq_regions_find(const struct tq_regions *m, const char *name);

/*
 * A field of an entry by its map name ("s3_region", "s3_endpoint",
 * "vector_url", "dashboard_url"): its value, "" when the region has none,
 * NULL when field is not one of these. Borrowed from the entry.
 */
const char *tq_region_field(const struct tq_region *r, const char *field);

#endif
