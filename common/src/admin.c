/* Operator actions (see tq/admin.h). */
#include "tq/admin.h"
