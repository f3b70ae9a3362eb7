#include "core/util/random.h"
