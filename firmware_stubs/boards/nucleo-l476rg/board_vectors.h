/* nucleo-l476rg: no device interrupts (the USART is polled), so the shared Cortex-M4
 * vector table (common/startup_cm4.c) ends after SysTick. */
#ifndef BOARD_VECTORS_H
#define BOARD_VECTORS_H
#define BOARD_IRQ_VECTORS
#endif
