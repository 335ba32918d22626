/* mps2-an386 device interrupts for the shared Cortex-M4 vector table (common/startup_cm4.c):
 * the UART receives by interrupt so the core can sleep between bytes. */
#ifndef BOARD_VECTORS_H
#define BOARD_VECTORS_H
void UART0RX_Handler(void);
#define BOARD_IRQ_VECTORS UART0RX_Handler, /* IRQ 0: UART0 receive */
#endif
