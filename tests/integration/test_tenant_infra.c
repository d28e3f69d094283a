/* placeholder: the suite lands with its step kinds */
#include <criterion/criterion.h>
#include "harness.h"
