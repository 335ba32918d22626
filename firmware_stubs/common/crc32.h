#ifndef EDGETOOL_CRC32_H
#define EDGETOOL_CRC32_H
#include <stddef.h>
#include <stdint.h>
/* IEEE 802.3 CRC-32 (zlib.crc32): pass 0 to start, the previous value to continue. */
uint32_t crc32_update(uint32_t crc, const uint8_t *data, size_t len);
#endif
