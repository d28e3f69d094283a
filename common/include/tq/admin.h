/*
 * Operator and portal actions on tenants and jobs (approve, reject, cancel,
 * retry, deprovision, dead letters, stats). Each PostgreSQL change is one
 * transaction; Redis is told afterwards, and if it cannot be reached the
 * reconciler dispatches later.
 */
#ifndef TQ_ADMIN_H
#define TQ_ADMIN_H

#include "tq/pg.h"
#include "tq/queue.h"

#endif
