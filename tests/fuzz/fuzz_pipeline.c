/* Pipeline files: JSON parsing, validation, DAG order (tq_pipeline_parse). */
#include <stdint.h>
#include <stdlib.h>

#include "tq/pipeline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tq_pipeline *p = NULL;
    char err[512];
    if (tq_pipeline_parse((const char *)data, size, "fuzz.json", &p, err, sizeof(err)) == TQ_OK &&
        !p)
        abort();
    tq_pipeline_free(p);
    return 0;
}
