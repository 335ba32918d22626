/* Cortex-M4 reset: enable the FPU (emx-onnx-cgen's float code needs it before any float
 * instruction), copy .data, zero .bss, run main. Faults print an MLPerf-style error line
 * so the host reports "firmware crashed" instead of waiting for a timeout.
 * Shared by every Cortex-M4 board; a board's board_vectors.h names its device IRQs. */
#include <stdint.h>
#include "board.h"
#include "board_vectors.h"

extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__;
extern uint32_t __stack_top__;
int main(void);
void SysTick_Handler(void);

void Reset_Handler(void) {
    *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20; /* CPACR: CP10, CP11 full access */
    __asm volatile("dsb\n isb");
    uint32_t *src = &__data_load__, *dst = &__data_start__;
    while (dst < &__data_end__) *dst++ = *src++;
    for (dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
    main();
    for (;;) {
    }
}

static void fault(const char *what) {
    const char *p = "e-[";
    while (*p) board_putc(*p++);
    while (*what) board_putc(*what++);
    p = "]\r\n";
    while (*p) board_putc(*p++);
    for (;;) {
    }
}

void HardFault_Handler(void) { fault("HardFault"); }
void Default_Handler(void) { fault("unexpected interrupt"); }

__attribute__((section(".vectors"), used)) static void (*const vectors[])(void) = {
    (void (*)(void))(&__stack_top__),
    Reset_Handler,
    Default_Handler,   /* NMI */
    HardFault_Handler, /* HardFault */
    HardFault_Handler, /* MemManage */
    HardFault_Handler, /* BusFault */
    HardFault_Handler, /* UsageFault */
    0, 0, 0, 0,
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMon */
    0,
    Default_Handler, /* PendSV */
    SysTick_Handler,
    BOARD_IRQ_VECTORS /* the board's device interrupts, from IRQ 0 on */
};
