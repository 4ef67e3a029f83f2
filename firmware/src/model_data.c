/* model_data.c - the one translation unit that holds the packed model's data.
 * cqtf_model.h comes from the model directory given with -I (written by `cqtf pack`). */
#define CQTF_MODEL_IMPLEMENTATION
#include "cqtf_model.h"

/* A header from another packer format must not compile (C99 has no _Static_assert). */
typedef char cqtf_model_format_matches[(CQTF_MODEL_FORMAT_VERSION == CQTF_FORMAT_VERSION) ? 1 : -1];
