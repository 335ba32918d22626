/* What a board port provides to the bench protocol: a byte UART and a free-running
 * tick counter. Everything else (protocol, CRC, model glue) is board-independent. */
#ifndef EDGETOOL_BOARD_H
#define EDGETOOL_BOARD_H
#include <stdint.h>

void board_init(void);
/* Non-blocking: a received byte (0..255), or -1 when none is waiting. */
int board_getc(void);
void board_putc(char c);
/* Called when no byte is waiting: may sleep until the next interrupt (WFI). */
void board_idle(void);
/* Monotonic 64-bit tick count and its rate (SysTick or DWT, per board). */
uint64_t board_ticks(void);
uint32_t board_tick_hz(void);
extern const char board_name[];
extern const char board_timer[];

#endif
