/* segment.h - a segment's geometry, and writing and validating its header
 * (segment.c). The layout itself is in layout.h. */
#ifndef MB_SEGMENT_H
#define MB_SEGMENT_H

#include "shm/layout.h"

#include <stdint.h>

void mb_geometry(const struct mb_config *cfg, struct mb_geometry *g);
uint64_t mb_layout_hash(void);
int mb_config_check(const struct mb_config *cfg); /* 0 or MSGBUS_E* */
void mb_header_init(void *base, const struct mb_config *cfg, uint64_t size);
/* Validate a mapped header against the mapping's size: 0 or MSGBUS_E*. */
int mb_header_check(const void *base, uint64_t size, struct mb_config *cfg);

#endif
