/*
 * Request files for `tq-enqueue submit --file`: the CSV (libcsv) and JSON
 * lines loaders of enqueue/submit.c, included here so their static
 * functions need not change. The first byte picks the format.
 */
#include "../../enqueue/submit.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct loaded l;
    memset(&l, 0, sizeof(l));
    l.errors = json_array();
    char why[512];
    if (data[0] & 1)
        load_jsonl((const char *)data + 1, size - 1, &l, why, sizeof(why));
    else
        load_csv((const char *)data + 1, size - 1, &l, why, sizeof(why));
    for (size_t i = 0; i < l.n; i++)
        tq_request_cleanup(&l.reqs[i]);
    free(l.reqs);
    free(l.lines);
    json_decref(l.errors);
    return 0;
}
