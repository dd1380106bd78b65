#include "cfuzzshim.h"
