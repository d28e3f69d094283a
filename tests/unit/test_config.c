#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "tq/config.h"

Test(config, redis_url_full)
{
    struct tq_redis_addr a;
    char why[200];
    cr_assert_eq(tq_redis_url_parse("redis://:s3cret@10.0.0.5:6390/3", &a, why, sizeof(why)), TQ_OK);
    cr_assert_str_eq(a.host, "10.0.0.5");
    cr_assert_eq(a.port, 6390);
    cr_assert_str_eq(a.password, "s3cret");
    cr_assert_eq(a.db, 3);
}

Test(config, redis_url_defaults)
{
    struct tq_redis_addr a;
    char why[200];
    cr_assert_eq(tq_redis_url_parse("redis://localhost", &a, why, sizeof(why)), TQ_OK);
    cr_assert_str_eq(a.host, "localhost");
    cr_assert_eq(a.port, 6379);
    cr_assert_eq(a.db, 0);
    cr_assert_str_eq(a.password, "");
}

Test(config, redis_url_rejects)
{
    struct tq_redis_addr a;
    char why[200];
    const char *bad[] = {"rediss://h:1", "http://h", "redis://", "redis://h:0", "redis://h:70000",
                         "redis://h:12x", "redis://h/16", "redis://h/x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(tq_redis_url_parse(bad[i], &a, why, sizeof(why)), TQ_EINVALID, "%s", bad[i]);
}

Test(config, env_rules_name_the_variable)
{
    struct tq_config c;
    char why[256];
    setenv("TQ_CONCURRENCY", "0", 1);
    cr_assert_eq(tq_config_from_env(&c, why, sizeof(why)), TQ_EINVALID);
    cr_assert(strstr(why, "TQ_CONCURRENCY") != NULL, "%s", why);
    tq_config_cleanup(&c);
    unsetenv("TQ_CONCURRENCY");
    setenv("TQ_QUEUE", "a b", 1);
    cr_assert_eq(tq_config_from_env(&c, why, sizeof(why)), TQ_EINVALID);
    cr_assert(strstr(why, "TQ_QUEUE") != NULL, "%s", why);
    tq_config_cleanup(&c);
    unsetenv("TQ_QUEUE");
}

Test(config, key_names_keep_the_queue_in_one_slot)
{
    struct tq_config c;
    char why[256];
    unsetenv("TQ_QUEUE");
    unsetenv("TQ_PREFIX");
    cr_assert_eq(tq_config_from_env(&c, why, sizeof(why)), TQ_OK);
    char *k = tq_key(&c, "ready");
    cr_assert_str_eq(k, "tq:{provision}:ready");
    free(k);
    cr_assert_eq(c.nregions, 3);
    tq_config_cleanup(&c);
}
